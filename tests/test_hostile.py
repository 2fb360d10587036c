"""Property tests: random Unicode and random bytes as corpora and prefixes either work or give a clear,
one-line error; never a traceback."""
import os
import tempfile
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings, strategies as st

from charlm.cli import main
from conftest import FIXED_FLAGS

TINY = [*FIXED_FLAGS,
        "--hidden-size", "8", "--embed-size", "4", "--num-layers", "1", "--seq-len", "4", "--batch-size", "2",
        "--epochs", "1", "--sample-every", "0"]
SETTINGS = settings(max_examples=int(os.environ.get("CHARLM_HYPOTHESIS_EXAMPLES", 25)), deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])


def clean(result):
    """Worked, or failed with click's one-line error: no exception escaped the command."""
    if result.exit_code == 0:
        return True
    lines = result.output.strip().splitlines()
    return (result.exit_code == 1 and isinstance(result.exception, SystemExit) and len(lines) == 1
            and lines[0].startswith("Error: "))


@SETTINGS
@given(corpus=st.one_of(st.text(max_size=200), st.binary(max_size=200), st.text(min_size=40, max_size=300)))
def test_any_corpus_trains_or_is_a_clear_error(tmp_path, corpus):
    work = Path(tempfile.mkdtemp(dir=tmp_path))  # tmp_path is shared by every example
    path = work / "corpus.txt"
    path.write_bytes(corpus.encode("utf-8") if isinstance(corpus, str) else corpus)
    result = CliRunner().invoke(main, ["train", "--data", str(path), "--runs-dir", str(work / "runs"), *TINY])
    assert clean(result), result.output


def test_random_code_points_train_and_generate(tmp_path):
    rng = np.random.default_rng(0)
    points = rng.integers(1, 0x2FFFF, size=3000)
    text = "".join(chr(p) for p in points if not 0xD800 <= p < 0xE000)  # no lone surrogates: not encodable
    path = tmp_path / "noise.txt"
    path.write_text(text, encoding="utf-8")
    runs = tmp_path / "runs"
    assert CliRunner().invoke(main, ["train", "--data", str(path), "--runs-dir", str(runs), *TINY]).exit_code == 0
    result = CliRunner().invoke(main, ["generate", "--runs-dir", str(runs), "--length", "20", "--", text[:5]])
    assert result.exit_code == 0 and result.stdout.startswith(text[:5].lower())


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("hostile")
    path = tmp / "corpus.txt"
    path.write_text("Ünïcödé text, with ✓ marks and 中文 too.\n" * 20, encoding="utf-8")
    result = CliRunner().invoke(main, ["train", "--data", str(path), "--runs-dir", str(tmp / "runs"), "--name", "r",
                                       *TINY])
    assert result.exit_code == 0, result.output
    return tmp / "runs" / "r"


@SETTINGS
@given(prefix=st.text(max_size=30), length=st.integers(-2, 40), top_k=st.none() | st.integers(-1, 60))
def test_any_prefix_generates_or_is_a_clear_error(run_dir, prefix, length, top_k):
    options = ["--run", str(run_dir), "--length", str(length)] + (["--top-k", str(top_k)] if top_k is not None else [])
    result = CliRunner().invoke(main, ["generate", *options, "--", prefix])  # "--": a prefix may start with "-"
    assert clean(result), result.output
