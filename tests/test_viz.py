"""charlm viz and charlm export --format web on the command line: one offline file, and bad input as one-line
errors that leave nothing behind."""
import re
import shutil

import pytest
from click.testing import CliRunner

from charlm import api, configs, recipe
from charlm.cli import main
from conftest import TEXT, TINY


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A tiny character run of one epoch: conftest's TINY sizes on its TEXT."""
    tmp = tmp_path_factory.mktemp("viz")
    (tmp / "tiny.txt").write_text(TEXT, encoding="utf-8")
    settings = {**TINY, "data.path": str(tmp / "tiny.txt"), "data.lowercase": True, "train.epochs": 1,
                "train.sample_every": 0}
    # the fixed settings, not the recipe's: it would time this machine to choose them
    cfg = recipe.fixed(configs.resolve(flags={tuple(key.split(".")): value for key, value in settings.items()}))
    return api.train(cfg, runs_dir=tmp / "runs", name="r").path


def _viz(run_dir, *args):
    return CliRunner().invoke(main, ["viz", "--run", str(run_dir), *args])


def test_viz_writes_one_page_that_asks_no_network(run_dir, tmp_path):
    out = tmp_path / "report.html"
    result = _viz(run_dir, "--text", "the quick brown fox", "-o", str(out))
    assert result.exit_code == 0, result.output
    page = out.read_text(encoding="utf-8")
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page)  # every script and style inline
    assert '"count":18' in page and "<svg" in page
    assert [p.name for p in tmp_path.iterdir()] == ["report.html"]


def test_viz_reads_a_file_up_to_max_tokens_and_says_so(run_dir, tmp_path):
    text = tmp_path / "t.txt"
    text.write_text("the lazy dog. " * 40, encoding="utf-8")
    result = _viz(run_dir, "--data", str(text), "--max-tokens", "50", "-o", str(tmp_path / "r.html"))
    assert result.exit_code == 0, result.output
    page = (tmp_path / "r.html").read_text(encoding="utf-8")
    assert '"count":49' in page and "cut after its first 50 tokens" in page


@pytest.mark.parametrize(("args", "message"), [
    (["--text", "  \n"], "the text is empty"),
    (["--text", "the fox #1"], "characters not in the model's vocabulary: '#1' (--skip-unknown drops them)"),
    (["--text", "a"], "the text has 1 token: give at least two to score"),
    ([], "give the text to read: --data FILE or --text TEXT"),
    (["--data", "no-such-file.txt"], "data file not found: no-such-file.txt"),
])
def test_viz_bad_input_is_one_line_and_writes_nothing(run_dir, tmp_path, args, message):
    result = _viz(run_dir, *args, "-o", str(tmp_path / "r.html"))
    assert result.exit_code == 1
    (line,) = result.output.strip().splitlines()
    assert line.startswith(f"Error: {message}")
    assert list(tmp_path.iterdir()) == []


def test_viz_skip_unknown_drops_the_characters_and_says_which(run_dir, tmp_path):
    result = _viz(run_dir, "--text", "the fox #1", "--skip-unknown", "-o", str(tmp_path / "r.html"))
    assert result.exit_code == 0, result.output
    assert "were dropped: '#1'" in (tmp_path / "r.html").read_text(encoding="utf-8")


def test_viz_unwritable_output_is_one_line(run_dir, tmp_path):
    result = _viz(run_dir, "--text", "the fox", "-o", str(tmp_path / "missing" / "r.html"))
    assert result.exit_code == 1
    assert result.output.startswith(f"Error: cannot write {tmp_path / 'missing' / 'r.html'}: No such file")


def test_viz_of_a_run_that_cannot_load_is_one_line(tmp_path):
    result = CliRunner().invoke(main, ["viz", "--run", str(tmp_path), "--text", "ab", "-o", str(tmp_path / "r.html")])
    assert result.exit_code == 1
    assert result.output == f"Error: {tmp_path} is not a run directory (no config.yaml and vocab.json)\n"


def test_web_export_writes_the_page_and_its_weights(run_dir, tmp_path):
    out = tmp_path / "web"
    result = CliRunner().invoke(main, ["export", "--format", "web", "--run", str(run_dir), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == ["charlm-export.json", "index.html", "vocab.json", "weights.js"]
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", (out / "index.html").read_text(encoding="utf-8"))


def test_web_export_keeps_an_existing_directory_without_force(run_dir, tmp_path):
    out = tmp_path / "web"
    out.mkdir()
    (out / "mine.txt").write_text("keep", encoding="utf-8")
    result = CliRunner().invoke(main, ["export", "--format", "web", "--run", str(run_dir), "-o", str(out)])
    assert result.exit_code == 1 and "already exists: pass --force" in result.output
    assert [p.name for p in out.iterdir()] == ["mine.txt"]
    result = CliRunner().invoke(main, ["export", "--format", "web", "--run", str(run_dir), "-o", str(out), "--force"])
    assert result.exit_code == 1 and "--force replaces only an earlier export" in result.output
    assert [p.name for p in out.iterdir()] == ["mine.txt"]


def test_web_export_force_replaces_an_earlier_export(run_dir, tmp_path):
    out = tmp_path / "web"
    args = ["export", "--format", "web", "--run", str(run_dir), "-o", str(out)]
    assert CliRunner().invoke(main, args).exit_code == 0
    (out / "index.html").write_text("old", encoding="utf-8")
    result = CliRunner().invoke(main, args + ["--force"])
    assert result.exit_code == 0 and (out / "index.html").read_text(encoding="utf-8") != "old"


def test_web_export_of_a_run_without_parameters_writes_nothing(run_dir, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(run_dir, run, ignore=shutil.ignore_patterns("*.params", "*.optim", "*.ema"))
    result = CliRunner().invoke(main, ["export", "--format", "web", "--run", str(run), "-o", str(tmp_path / "web")])
    assert result.exit_code == 1 and "has no params-best.params" in result.output
    assert not (tmp_path / "web").exists()
