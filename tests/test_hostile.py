"""Property tests: random Unicode and random bytes as corpora and prefixes either work or give a clear,
one-line error; never a traceback."""
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings, strategies as st

from charlm.cli import main

TINY = ["--hidden-size", "8", "--embed-size", "4", "--num-layers", "1", "--seq-len", "4", "--batch-size", "2",
        "--epochs", "1", "--sample-every", "0"]
SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def clean(result):
    """Worked, or failed with click's one-line error: no exception escaped the command."""
    if result.exit_code == 0:
        return True
    lines = result.output.strip().splitlines()
    return (result.exit_code == 1 and isinstance(result.exception, SystemExit) and len(lines) == 1
            and lines[0].startswith("Error: "))


@SETTINGS
@given(corpus=st.one_of(st.text(max_size=200), st.binary(max_size=200)))
def test_any_corpus_trains_or_is_a_clear_error(tmp_path, corpus):
    path = tmp_path / "corpus.txt"
    path.write_bytes(corpus.encode("utf-8") if isinstance(corpus, str) else corpus)
    result = CliRunner().invoke(main, ["train", "--data", str(path), "--runs-dir", str(tmp_path / "runs"), *TINY])
    assert clean(result), result.output


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
    args = ["generate", prefix, "--run", str(run_dir), "--length", str(length)]
    result = CliRunner().invoke(main, args + (["--top-k", str(top_k)] if top_k is not None else []))
    assert clean(result), result.output
