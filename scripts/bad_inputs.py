"""Print docs/reliability.md's table of bad inputs and the one-line error each gets, by running every case of
tests/bad_input_cases.py (the list the tests check):

    python scripts/bad_inputs.py            # print the table
    python scripts/bad_inputs.py --write    # replace the table in docs/reliability.md
"""
import importlib.util
import re
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _load(name):
    """A module of tests/ read from its file, without putting tests/ on sys.path."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "tests" / f"{name}.py")
    module = sys.modules[name] = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_load("conftest")  # bad_input_cases imports its settings
CASES, Workspace, invoke = (getattr(_load("bad_input_cases"), name) for name in ("CASES", "Workspace", "invoke"))
DOC = ROOT / "docs" / "reliability.md"
START, END = "<!-- bad-inputs:start -->\n", "\n<!-- bad-inputs:end -->"


def table():
    """The Markdown table, one row per case, as the cases' errors read now."""
    rows = ["| bad input | exit | message |", "|---|---|---|"]
    with tempfile.TemporaryDirectory() as tmp:
        ws = Workspace(tmp)
        for what, args, _ in CASES:
            result = invoke(ws, what, args)
            message = result.output.strip().replace(tmp, "…").replace("|", "\\|")
            message = re.sub(r"\s+", " ", message)
            rows.append(f"| {what} | {result.exit_code} | `` {message} `` |")  # double backticks: messages quote flags
    return "\n".join(rows)


def main():
    text = table()
    if sys.argv[1:] != ["--write"]:
        print(text)
        return
    doc = DOC.read_text(encoding="utf-8")
    head, rest = doc.split(START)
    DOC.write_text(head + START + text + END + rest.split(END, 1)[1], encoding="utf-8")


if __name__ == "__main__":
    main()
