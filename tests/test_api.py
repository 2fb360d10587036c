"""The Python API as the README and docs/api.md show it."""
import contextlib
import io
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from click.testing import CliRunner

import charlm
from charlm.cli import main

ROOT = Path(__file__).resolve().parents[1]
TINY = {"data": {"seq_len": 8, "batch_size": 4}, "model": {"hidden_size": 16, "embed_size": 8, "num_layers": 1},
        "train": {"epochs": 2, "sample_every": 0}}


def test_import_charlm_imports_no_mxnet():
    code = "import sys, charlm; assert 'mxnet' not in sys.modules, 'mxnet imported'; print(charlm.__version__)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == charlm.__version__


def test_the_readme_snippet_runs_as_shown(tmp_path, monkeypatch):
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(encoding="utf-8"), flags=re.S)
    assert len(blocks) == 1
    (tmp_path / "configs").mkdir()
    shutil.copy(ROOT / "configs" / "tiny.yaml", tmp_path / "configs")
    monkeypatch.chdir(tmp_path)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(blocks[0], "README.md", "exec"), {})
    run = charlm.load("runs/api-demo")
    assert run.config.model.cell == "gru" and [r["epoch"] for r in run.run.metrics()] == [1, 2, 3, 4]
    greedy = run.generate("the time ma", length=60)
    sampled = run.generate("the time ma", length=60, temperature=0.8, seed=1)
    assert len(greedy) == len(sampled) == len("the time ma") + 60  # a character a token; may hold newlines
    printed = out.getvalue()
    assert printed.startswith(f"{greedy}\n{sampled}\n")
    assert set(eval(printed[len(greedy) + len(sampled) + 2:])) == {"loss", "ppl", "bpc", "tokens"}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny run trained through the API, and the callbacks' view of it."""
    from conftest import TEXT

    tmp = tmp_path_factory.mktemp("api")
    (tmp / "tiny.txt").write_text(TEXT, encoding="utf-8")
    seen = SimpleNamespace(start=[], batches=[], records=[])
    callback = SimpleNamespace(on_start=seen.start.append, on_epoch=lambda record, samples: seen.records.append(record))
    counter = SimpleNamespace(on_batch=lambda done, total, tokens, loss: seen.batches.append((done, total, tokens)))
    cfg = charlm.config(data={"path": str(tmp / "tiny.txt"), **TINY["data"]}, model=TINY["model"], train=TINY["train"])
    run = charlm.train(cfg, runs_dir=tmp / "runs", name="r", callbacks=[callback, counter])
    return run, seen, tmp


def test_train_returns_the_run_and_calls_back(trained):
    run, seen, tmp = trained
    assert run.path == (tmp / "runs" / "r").resolve() and run.read_state()["status"] == "finished"
    assert seen.records == run.metrics() and [r["epoch"] for r in seen.records] == [1, 2]
    [info] = seen.start
    assert (info["run"], info["cell"], info["resumed"], info["workers"]) == (run.path, "lstm", None, None)
    assert info["train_tokens"] + info["val_tokens"] == len(charlm.load(run.path).vocab.encode(
        (tmp / "tiny.txt").read_text()))  # the text as written: a user's own keeps its case
    ends = [i for i, (done, total, _) in enumerate(seen.batches) if done == total]
    assert len(ends) == 2 and ends[-1] == len(seen.batches) - 1  # each epoch's batches counted 1 to total
    assert [seen.batches[i][2] for i in ends] == [seen.batches[ends[0]][0] * 8 * 4] * 2  # tokens trained


def test_generate_and_stream_give_what_the_cli_prints(trained):
    run, _, _ = trained
    lm = charlm.load(run.path)
    cli = CliRunner().invoke(main, ["generate", "The quick", "--length", "50", "--run", str(run.path)])
    assert cli.exit_code == 0 and lm.generate("The quick", length=50) + "\n" == cli.stdout
    pieces = list(lm.stream("The quick", length=50))
    assert len(pieces) > 1 and "".join(pieces) == lm.generate("The quick", length=50)
    sampled = [lm.generate("the", length=30, temperature=0.9, top_k=5, seed=3) for _ in range(2)]
    assert sampled[0] == sampled[1] == "".join(lm.stream("the", length=30, temperature=0.9, top_k=5, seed=3))


def generate_cli(run, *args, input=None):
    result = CliRunner().invoke(main, ["generate", *args, "--run", str(run.path)], input=input)
    assert result.exit_code == 0, result.output
    return result.stdout


@pytest.mark.parametrize("args", [["--length", "70"], ["--length", "70", "--temperature", "1.5", "--seed", "2",
                                                       "--num-samples", "3", "--stop", "e"]], ids=["one", "three"])
def test_streamed_output_equals_the_output_written_at_the_end(trained, args):
    run, _, _ = trained
    assert generate_cli(run, "the", "--stream", *args) == generate_cli(run, "the", "--no-stream", *args)


def test_num_samples_prints_each_sample_as_generate_prints_one(trained):
    run, _, _ = trained
    lm = charlm.load(run.path)
    texts = lm.generate("the", length=30, temperature=1.5, seed=4, num_samples=3)
    assert generate_cli(run, "the", "--length", "30", "--temperature", "1.5", "--seed", "4", "--num-samples", "3") == (
        f"{texts[0]}\n--- sample 2 ---\n{texts[1]}\n--- sample 3 ---\n{texts[2]}\n")
    streamed = list(lm.stream("the", length=30, temperature=1.5, seed=4, num_samples=3))
    assert all(len(pieces) == 3 for pieces in streamed) and ["".join(t) for t in zip(*streamed)] == texts


def test_stop_in_the_api_and_on_the_command_line(trained):
    run, _, _ = trained
    lm = charlm.load(run.path)
    whole = lm.generate("the", length=60)
    stop = whole[10:12]
    cut = whole[:whole.index(stop, len("the"))]
    assert lm.generate("the", length=60, stop=[stop]) == lm.generate("the", length=60, stop=stop) == cut
    assert generate_cli(run, "the", "--length", "60", "--stop", stop, "--stop", "\x01") == cut + "\n"


def test_prefix_file_and_stdin_continue_their_text_as_it_is(trained, tmp_path):
    run, _, _ = trained
    prime = "Pack my box with five dozen liquor jugs!\nThe quick"
    (tmp_path / "prime.txt").write_bytes(prime.replace("\n", "\r\n").encode())
    expected = generate_cli(run, prime, "--length", "20")
    assert generate_cli(run, "--prefix-file", str(tmp_path / "prime.txt"), "--length", "20") == expected
    assert generate_cli(run, "--prefix-file", "-", "--length", "20", input=prime.encode()) == expected


def test_interactive_continues_each_line_until_an_empty_one(trained):
    run, _, _ = trained
    out = generate_cli(run, "-i", "--length", "15", input="the\npack my\n\nthe box\n")
    assert out == generate_cli(run, "the", "--length", "15") + generate_cli(run, "pack my", "--length", "15")


def test_interactive_reports_a_bad_line_and_goes_on(trained):
    run, _, _ = trained
    result = CliRunner().invoke(main, ["generate", "-i", "--length", "5", "--run", str(run.path)], input="€\nthe")
    assert result.exit_code == 0 and result.stdout == generate_cli(run, "the", "--length", "5")
    assert "Error: prefix characters not in the model's vocabulary: '€'" in result.stderr


@pytest.fixture(scope="module")
def lines_lm(trained, tmp_path_factory):
    """A tiny lines-mode run of one epoch, loaded."""
    _, _, tmp = trained
    cfg = charlm.config(data={"path": str(tmp / "tiny.txt"), "mode": "lines", **TINY["data"]}, model=TINY["model"],
                        train={**TINY["train"], "epochs": 1})
    return charlm.load(charlm.train(cfg, runs_dir=tmp_path_factory.mktemp("lines"), name="lines").path)


@pytest.mark.parametrize("prefix", ["", "the"], ids=["empty", "the"])
def test_lines_mode_continues_a_line_to_its_end_and_an_empty_prefix_starts_one(lines_lm, prefix):
    from charlm import generate

    ids = generate.encode_prefix(prefix, lines_lm.vocab, lines_lm.config.data)
    lines = generate.complete(lines_lm.model, lines_lm.vocab, ids, 300, lines_lm.ctx, temperature=3.0, seed=1)
    assert len(lines.split("\n")) > 1
    assert lines_lm.generate(prefix, length=300, temperature=3.0, seed=1) == lines.split("\n")[0]


def test_score_equals_eval_of_the_same_text(trained, tmp_path):
    run, _, _ = trained
    text = "Pack my box with five dozen liquor jugs!\nThe quick brown fox jumps over the lazy dog.\n"
    (tmp_path / "held.txt").write_text(text, encoding="utf-8")
    cli = CliRunner().invoke(main, ["eval", "--json", "--data", str(tmp_path / "held.txt"), "--run", str(run.path)])
    assert cli.exit_code == 0, cli.output
    scores = charlm.load(run.path).score(text)
    assert scores == pytest.approx(json.loads(cli.stdout)) and scores["tokens"] > 0


def test_resume_trains_on_to_more_epochs(trained):
    run, _, _ = trained
    more = charlm.train(resume=run.path, epochs=3)
    assert more.path == run.path and [r["epoch"] for r in more.metrics()] == [1, 2, 3]
    assert charlm.train(resume=run.path, epochs=3).metrics() == more.metrics()  # nothing left to do


def test_stop_raises_interrupted_with_a_checkpoint_to_resume(trained, tmp_path):
    _, _, tmp = trained
    cfg = charlm.config(data={"path": str(tmp / "tiny.txt"), **TINY["data"]}, model=TINY["model"], train=TINY["train"])
    done = []
    with pytest.raises(charlm.Interrupted):
        charlm.train(cfg, runs_dir=tmp_path, name="cut", callbacks=[SimpleNamespace(on_batch=lambda *a: done.append(1))],
                     stop=lambda: len(done) == 30)
    assert charlm.train(resume=tmp_path / "cut").read_state()["status"] == "finished"


@pytest.mark.parametrize("kwargs, message", [
    ({"model": {"cell": "transformer"}}, "model.cell: 'transformer' is not one of"),
    ({"train": {"epoch": 3}}, "unknown key train.epoch; valid keys in train:"),
    ({"data": ["path"]}, "data= must be a dict of data settings, got list"),
])
def test_config_errors_are_one_line(kwargs, message):
    with pytest.raises(charlm.CharlmError, match=re.escape(message)) as e:
        charlm.config(**kwargs)
    assert "\n" not in str(e.value)


def test_config_layers_files_then_sections(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("model:\n  cell: gru\n  hidden_size: 32\n")
    cfg = charlm.config(path, model={"hidden_size": 48}, sets=["train.lr=0.01"])
    assert (cfg.model.cell, cfg.model.hidden_size, cfg.train.lr) == ("gru", 48, 0.01)
    assert "data.seq_len" in charlm.configs.unset(cfg)  # left to the recipe, which charlm.train consults


def test_train_and_load_refuse_what_they_cannot_use(trained, tmp_path):
    run, _, _ = trained
    with pytest.raises(charlm.CharlmError, match="resume= continues a run with its own config.yaml"):
        charlm.train(charlm.config(), resume=run.path)
    with pytest.raises(charlm.CharlmError, match="cfg must be a Config"):
        charlm.train({"model": {"cell": "gru"}})
    with pytest.raises(charlm.CharlmError, match="no runs yet"):
        charlm.load(runs_dir=tmp_path)
    with pytest.raises(charlm.CharlmError, match="--top-k must be between 1 and the vocabulary size"):
        charlm.load(run.path).generate("the", top_k=0)
