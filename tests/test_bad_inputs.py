"""Each bad input gets its one-line error, exit status 1, no traceback, and leaves saved runs as they were."""
from pathlib import Path

import pytest

from bad_input_cases import CASES, Workspace, digest, invoke


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    return Workspace(tmp_path_factory.mktemp("bad"))


@pytest.mark.parametrize("what, args, message", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_clear_line(ws, what, args, message):
    before = digest(ws.run)
    result = invoke(ws, what, args)
    lines = result.output.strip().splitlines()
    assert result.exit_code == 1, result.output
    assert len(lines) == 1 and lines[0].startswith("Error: ") and message in lines[0], result.output
    assert digest(ws.run) == before  # nothing already saved is touched
    assert {copy: digest(copy) for copy in ws.damaged} == ws.damaged  # nor a damaged run the case refused
    new_runs = ws.tmp / "new-runs"
    assert not (new_runs.exists() and any(new_runs.iterdir()))  # a run that could not start leaves nothing


def test_reliability_doc_has_a_row_per_case():
    doc = (Path(__file__).resolve().parent.parent / "docs" / "reliability.md").read_text(encoding="utf-8")
    rows = {line.split(" | ")[0].removeprefix("| ") for line in doc.splitlines() if line.startswith("| ")}
    assert [c[0] for c in CASES if c[0] not in rows] == [], "python scripts/bad_inputs.py --write"
