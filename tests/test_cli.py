import json
import signal
import subprocess
import sys

import pytest
import yaml
from click.testing import CliRunner

from charlm import api, configs
from charlm.api import choose
from charlm.cli import main
from charlm.configs import MIN_LR
from conftest import FIXED_FLAGS, TINY_FLAGS, wait_until, without

TINY = [*FIXED_FLAGS, *TINY_FLAGS, "--epochs", "2", "--sample-every", "1"]


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture
def trained(corpus, tmp_path):
    runs = tmp_path / "runs"
    result = invoke("train", "--data", corpus, "--runs-dir", runs, "--name", "r1", *TINY)
    assert result.exit_code == 0, result.output
    return runs, result


def test_train_prints_one_summary_line_per_epoch(trained):
    _, result = trained
    lines = [line for line in result.stdout.splitlines() if line.startswith("epoch ")]
    assert len(lines) == 2 and "train ppl" in lines[0] and "val ppl" in lines[0] and "tok/s" in lines[0]
    assert "best val ppl" in result.stdout.splitlines()[-1]


def test_train_writes_metrics_for_every_epoch(trained):
    runs, _ = trained
    records = [json.loads(line) for line in (runs / "r1" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2]
    assert all(r["tokens_per_s"] > 0 for r in records)


def test_generate_prints_only_the_text(trained):
    runs, _ = trained
    result = invoke("generate", "The quick", "--length", 20, "--runs-dir", runs)
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("The quick")  # a user's own text keeps its case
    assert len(result.stdout) == len("The quick") + 20 + 1  # text and a newline, nothing else


def test_eval_json_on_the_validation_split_and_on_a_file(trained, corpus):
    runs, _ = trained
    result = invoke("eval", "--json", "--runs-dir", runs)
    assert result.exit_code == 0, result.output
    scores = json.loads(result.stdout)
    assert set(scores) == {"loss", "ppl", "bpc", "tokens"}
    last = json.loads((runs / "r1" / "metrics.jsonl").read_text().splitlines()[-1])
    best = min(json.loads(line)["val_loss"] for line in (runs / "r1" / "metrics.jsonl").read_text().splitlines())
    assert scores["loss"] == pytest.approx(best, rel=1e-5) and scores["tokens"] > 0
    assert last["epoch"] == 2
    other = invoke("eval", "--json", "--run", runs / "r1", "--data", corpus)
    assert json.loads(other.stdout)["tokens"] > scores["tokens"]


def test_train_from_a_runs_config_reproduces_it(trained, tmp_path):
    runs, _ = trained
    again = invoke("train", "-c", runs / "r1" / "config.yaml", "--runs-dir", runs, "--name", "r2")
    assert again.exit_code == 0, again.output

    def losses(name):
        lines = (runs / name / "metrics.jsonl").read_text().splitlines()
        return [(r["train_loss"], r["val_loss"]) for r in map(json.loads, lines)]
    assert losses("r1") == losses("r2")


def test_typed_flags_override_config_files(corpus, tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("model: {hidden_size: 12, cell: gru}\ntrain: {epochs: 1}\n")
    result = invoke("train", "-c", cfg, "--data", corpus, "--runs-dir", tmp_path / "runs", "--name", "x",
                    *TINY_FLAGS, "--hidden-size", "10", "--epochs", "1")  # the file's cell
    assert result.exit_code == 0, result.output
    written = (tmp_path / "runs" / "x" / "config.yaml").read_text()
    assert "hidden_size: 10" in written and "cell: gru" in written
    again = invoke("train", "-c", cfg, "--data", corpus, "--runs-dir", tmp_path / "runs", "--name", "y",
                   *TINY_FLAGS, "--hidden-size", "10", "--epochs", "1", "--set", "model.hidden_size=8")
    assert again.exit_code == 0, again.output
    assert "hidden_size: 8" in (tmp_path / "runs" / "y" / "config.yaml").read_text()


def test_help_does_not_import_mxnet():
    code = ("import sys; from click.testing import CliRunner; from charlm.cli import main; "
            "r = CliRunner().invoke(main, ['train', '--help']); assert r.exit_code == 0, r.output; "
            "assert '--hidden-size' in r.output and 'mxnet' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_train_help_lists_every_option_under_its_section():
    out = invoke("train", "--help").stdout
    titles = ["Data options:", "Model options:", "Training options:", "Devices options:", "Run options:"]
    starts = [out.index(t) for t in titles]
    assert starts == sorted(starts)
    sections = dict(zip(titles, (out[a:b] for a, b in zip(starts, starts[1:] + [len(out)]))))
    for section, f in configs.keys():
        flag = configs.flag_name(f)
        title = {"data": "Data", "model": "Model", "train": "Training"}[section] + " options:"
        assert not flag or f"--{flag}" in sections[title], (flag, title)
    for flag, title in [("--gpus", "Devices options:"), ("--kvstore", "Devices options:"), ("--resume", "Run options:"),
                        ("--set", "Run options:"), ("--runs-dir", "Run options:")]:
        assert flag in sections[title]


def test_python_m_charlm_runs():
    out = subprocess.run([sys.executable, "-m", "charlm", "--version"], capture_output=True, text=True, check=True)
    assert out.stdout.startswith("charlm, version")


def test_any_unicode_text_trains_and_generates(tmp_path):
    corpus = tmp_path / "mengzi.txt"
    corpus.write_text("孟子見梁惠王。王曰：「叟不遠千里而來，亦將有以利吾國乎？」\n" * 40, encoding="utf-8")
    runs = tmp_path / "runs"
    assert invoke("train", "--data", corpus, "--runs-dir", runs, *TINY).exit_code == 0
    result = invoke("generate", "孟子", "--length", 5, "--runs-dir", runs)
    assert result.exit_code == 0 and result.stdout.startswith("孟子") and len(result.stdout) == 2 + 5 + 1


def test_config_show_prints_the_resolved_config(tmp_path, monkeypatch):
    monkeypatch.setattr(api, "_tokens_per_second", lambda cfg, vocab_size, ctx=None: 5000.0)  # a fixed machine
    cfg = tmp_path / "c.yaml"
    cfg.write_text("model: {cell: gru, hidden_size: 64}\n")
    result = invoke("config", "show", "-c", cfg, "--set", "model.hidden_size=128")
    assert result.exit_code == 0, result.output
    shown = yaml.safe_load(result.stdout)
    assert shown["model"]["cell"] == "gru" and shown["model"]["hidden_size"] == 128
    expected = configs.resolve([cfg], sets=["model.hidden_size=128"])
    choose(expected)
    assert shown == yaml.safe_load(configs.to_yaml(expected))  # the rest as the recipe chose it


def test_resume_extends_a_run_exactly_as_if_never_stopped(corpus, tmp_path):
    runs = tmp_path / "runs"
    tiny = without(TINY, "--epochs") + ["--dropout", "0.3"]
    assert invoke("train", "--data", corpus, "--runs-dir", runs, "--name", "whole", *tiny, "--epochs", 4).exit_code == 0
    assert invoke("train", "--data", corpus, "--runs-dir", runs, "--name", "cut", *tiny, "--epochs", 2).exit_code == 0
    result = invoke("train", "--resume", runs / "cut", "--epochs", 4)
    assert result.exit_code == 0, result.output
    assert "resuming after epoch 2" in result.stdout

    def records(name):
        return [json.loads(line) for line in (runs / name / "metrics.jsonl").read_text().splitlines()]
    whole, cut = records("whole"), records("cut")
    assert [r["epoch"] for r in cut] == [1, 2, 3, 4]
    for a, b in zip(whole, cut):
        assert a["train_loss"] == pytest.approx(b["train_loss"], abs=1e-6)
        assert a["val_loss"] == pytest.approx(b["val_loss"], abs=1e-6)
    assert "epochs: 4" in (runs / "cut" / "config.yaml").read_text()


@pytest.fixture
def fewer(tmp_path):
    """A text with only some of the tiny corpus's characters."""
    path = tmp_path / "fewer.txt"
    path.write_text("the lazy dog jumps over the quick brown fox.\n" * 30, encoding="utf-8")
    return path


def test_init_from_starts_from_the_runs_best_parameters_and_vocabulary(trained, fewer):
    """With a learning rate too small to move them, the new run's weights are the source run's best ones; its
    text may use fewer characters, and the source's vocabulary is kept so the weights line up."""
    from charlm.engine import nd

    runs, _ = trained
    result = invoke("train", "--data", fewer, "--runs-dir", runs, "--name", "tuned", *TINY, "--epochs", 1,
                    "--lr", 1e-9, "--init-from", runs / "r1")
    assert result.exit_code == 0, result.output
    source, tuned = runs / "r1", runs / "tuned"
    assert (tuned / "vocab.json").read_text() == (source / "vocab.json").read_text()
    assert yaml.safe_load((tuned / "config.yaml").read_text())["train"]["init_from"] == str(source.resolve())
    before, after = (nd.load(str(run / "params-best.params")) for run in (source, tuned))
    assert before.keys() == after.keys()
    for name in before:
        assert after[name].asnumpy() == pytest.approx(before[name].asnumpy(), abs=1e-6)


def test_a_run_started_from_another_resumes_without_it(trained, fewer, tmp_path):
    import shutil

    runs, _ = trained
    shutil.copytree(runs / "r1", tmp_path / "source")
    args = ["train", "--data", fewer, "--runs-dir", runs, "--name", "tuned", *TINY]
    assert invoke(*args, "--epochs", 1, "--init-from", tmp_path / "source").exit_code == 0
    shutil.rmtree(tmp_path / "source")
    result = invoke("train", "--resume", runs / "tuned", "--epochs", 2)
    assert result.exit_code == 0, result.output
    assert [json.loads(line)["epoch"] for line in (runs / "tuned" / "metrics.jsonl").read_text().splitlines()] == [1, 2]


def test_init_from_a_scratch_run_ignores_the_settings_scratch_cells_have_not(corpus, tmp_path):
    runs = tmp_path / "runs"
    args = ["train", "--data", corpus, "--runs-dir", runs, *TINY, "--cell", "scratch-rnn", "--epochs", 1]
    assert invoke(*args, "--name", "s").exit_code == 0
    result = invoke(*args, "--num-layers", 3, "--embed-size", 0, "--init-from", runs / "s")
    assert result.exit_code == 0, result.output
    result = invoke(*args, "--hidden-size", 8, "--init-from", runs / "s")
    assert result.exit_code == 1 and "its model has hidden_size 16, this config 8" in result.output


def test_resume_of_a_finished_run_says_how_to_extend_it(trained):
    runs, _ = trained
    result = invoke("train", "--resume", "--runs-dir", runs)
    assert result.exit_code == 0 and "give --epochs to extend it" in result.stdout


def test_resume_refuses_other_settings(trained):
    runs, _ = trained
    result = invoke("train", "--resume", "--runs-dir", runs, "--hidden-size", "32")
    assert result.exit_code == 1 and "only --epochs and --time-limit may be given" in result.output


@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_stops_at_a_batch_boundary_keeps_the_checkpoint_and_says_how_to_resume(corpus, tmp_path, sig, code):
    runs = tmp_path / "runs"
    args = without(TINY, "--epochs")
    proc = subprocess.Popen([sys.executable, "-m", "charlm", "train", "--data", str(corpus), "--runs-dir", str(runs),
                             "--name", "r", *args, "--epochs", "100000"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    metrics = runs / "r" / "metrics.jsonl"
    try:
        wait_until(lambda: metrics.exists() and metrics.read_text().count("\n") >= 2, 60, f"two epochs in {metrics}")
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == code
    assert f"Resume with: charlm train --resume {runs / 'r'}" in err and "Traceback" not in err
    state = json.loads((runs / "r" / "state.json").read_text())
    done, step = state["epoch"], state["step"]  # saved where it stopped, mid-epoch as a rule
    assert done >= 2 and len(metrics.read_text().splitlines()) == done
    assert (f"the checkpoint of epoch {done + 1} after batch {step} is saved" if step
            else f"the checkpoint of the end of epoch {done} is saved") in err
    resumed = invoke("train", "--resume", runs / "r", "--epochs", done + 1)
    assert resumed.exit_code == 0, resumed.output
    assert (f"and {step} batches of epoch {done + 1}" in resumed.stdout) == bool(step)


def test_a_run_in_training_refuses_a_second_training_and_a_stale_lock_is_taken_over(trained):
    runs, _ = trained
    hold = "from charlm.run import Run; import sys\nwith Run(sys.argv[1]).lock(): print(flush=1); sys.stdin.read()"
    owner = subprocess.Popen([sys.executable, "-c", hold, str(runs / "r1")], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE)  # it holds the lock until killed
    try:
        owner.stdout.readline()  # it holds the lock
        result = invoke("train", "--resume", runs / "r1", "--epochs", 3)
        assert result.exit_code == 1 and f"being trained by process {owner.pid}" in result.output
    finally:
        owner.kill()
        owner.wait()
    assert (runs / "r1" / ".lock").read_text() == f"{owner.pid}\n"  # killed: its lock file stays behind
    result = invoke("train", "--resume", runs / "r1", "--epochs", 3)  # its owner is gone: the lock is stale
    assert result.exit_code == 0, result.output
    assert not (runs / "r1" / ".lock").exists()


def test_a_kill_between_the_first_metrics_line_and_its_checkpoint_resumes_without_a_second_line(trained):
    """Killed after epoch 1's metrics line was appended but before state.json named its checkpoint, the
    run resumes from the start; epoch 1's line must not appear twice."""
    runs, _ = trained
    run = runs / "r1"
    lines = (run / "metrics.jsonl").read_text().splitlines()[:1]
    (run / "metrics.jsonl").write_text(lines[0] + "\n")
    for old in run.glob("last-*"):
        old.unlink()
    (run / "state.json").write_text(json.dumps({"epoch": 0, "status": "running"}))
    result = invoke("train", "--resume", run, "--epochs", 2)
    assert result.exit_code == 0, result.output
    assert [json.loads(line)["epoch"] for line in (run / "metrics.jsonl").read_text().splitlines()] == [1, 2]


def test_a_learning_rate_decayed_below_float32s_range_stops_at_the_smallest_one_charlm_takes(corpus, tmp_path):
    """MXNet's updates refuse a learning rate below the smallest normal float32 (an error, and the run could
    never be resumed): decay stops at config.MIN_LR."""
    runs = tmp_path / "runs"
    result = invoke("train", "--data", corpus, "--runs-dir", runs, "--name", "d", *TINY, "--epochs", 3,
                    "--lr", "1e-29", "--lr-decay", "0.001")
    assert result.exit_code == 0, result.output
    lrs = [json.loads(line)["lr"] for line in (runs / "d" / "metrics.jsonl").read_text().splitlines()]
    assert lrs == pytest.approx([1e-29, MIN_LR, MIN_LR], rel=1e-6)


def test_an_mxnet_error_no_check_foresaw_is_one_line(corpus, tmp_path, monkeypatch):
    from charlm import training
    from charlm.engine import mx

    def fail(*args, **kwargs):
        raise mx.base.MXNetError("Traceback (most recent call last):\n  [bt] (0) libmxnet.so\n"
                                 "MXNetError: could not execute a primitive")
    monkeypatch.setattr(training, "fit", fail)
    result = invoke("train", "--data", corpus, "--runs-dir", tmp_path / "runs", *TINY)
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert result.output.strip().splitlines()[-1] == ("Error: MXNet failed: could not execute a primitive "
                                                      "(`charlm --debug ...` shows the traceback)")


def test_a_refused_resume_leaves_the_run_as_it_was(trained):
    import shutil
    runs, _ = trained
    run = runs / "copy"
    shutil.copytree(runs / "r1", run)
    with open(run / "metrics.jsonl", "a") as f:
        f.write("5\n")  # damaged: the resume is refused
    before = {p.name: p.read_bytes() for p in run.iterdir()}
    result = invoke("train", "--resume", run, "--epochs", 3)
    assert result.exit_code == 1 and "metrics.jsonl is damaged" in result.output
    assert {p.name: p.read_bytes() for p in run.iterdir()} == before  # still "finished", nothing rewritten


def test_perplexities_too_large_to_read_print_in_exponent_form():
    from charlm.terminal import ppl as _ppl
    assert (_ppl(4.1071), _ppl(4.1071, 2), _ppl(123456.7)) == ("4.107", "4.11", "123456.700")
    assert _ppl(8.2e307) == "8.200e+307"


def _lines(path):
    return len(path.read_text().splitlines()) if path.exists() else 0


def _last_checkpoint(run):
    return json.loads((run / "state.json").read_text())["last"] if (run / "state.json").exists() else None


def test_sigkill_at_any_moment_leaves_a_loadable_checkpoint(corpus, tmp_path):
    """Kill -9 a training again and again, wherever it is (saving included): the run always loads."""
    runs, run = tmp_path / "runs", tmp_path / "runs" / "k"
    args = without(TINY, "--epochs")
    start = [sys.executable, "-m", "charlm", "train", "--data", str(corpus), "--runs-dir", str(runs), "--name", "k",
             *args, "--epochs", "100000", "--checkpoint-every", "5"]  # mid-epoch checkpoints get killed too
    resume = [sys.executable, "-m", "charlm", "train", "--resume", str(run), "--epochs", "100000"]
    # Each kill after a new epoch line: once the next checkpoint is committed, while a file is being written
    # (or, if no write is caught, once the next checkpoint is), or at once, as the epoch's checkpoint is saved.
    moments = [lambda last: _last_checkpoint(run) != last,
               lambda last: any(run.glob(".*.tmp")) or _last_checkpoint(run) != last,
               lambda last: True]
    for attempt in range(5):
        proc = subprocess.Popen(resume if attempt else start, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            seen = _lines(run / "metrics.jsonl")
            wait_until(lambda: _lines(run / "metrics.jsonl") > seen, 60, "a new epoch line")
            last = _last_checkpoint(run)
            wait_until(lambda: moments[attempt % 3](last), 60, "the moment to kill")
        finally:
            proc.kill()
            proc.wait()
        result = invoke("generate", "the", "--length", 5, "--run", run)
        assert result.exit_code == 0, result.output
    done = json.loads((run / "state.json").read_text())["epoch"]
    finished = invoke("train", "--resume", run, "--epochs", done + 1)  # the dead owner's lock is stale
    assert finished.exit_code == 0, finished.output
    epochs = [json.loads(line)["epoch"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert epochs == list(range(1, done + 2))  # no line from a checkpoint that never completed
