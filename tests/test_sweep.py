import csv
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from charlm import configs as config, sweep as sweeps, trainers
from charlm.cli import main
from charlm.errors import CharlmError
from charlm.run import Run
from conftest import wait_until

ROOT = Path(__file__).resolve().parent.parent


def sweep_file(tmp_path, doc, name="s"):
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(doc), encoding="utf-8")
    return path


def test_shipped_sweep_plans_the_six_cells_as_valid_configs(monkeypatch):
    from pathlib import Path

    monkeypatch.chdir(Path(__file__).resolve().parent.parent)  # its base path is relative to the repository
    sweep = sweeps.load("configs/sweep-cells.yaml")
    points = [point for _, point in sweeps.plan(sweep)]
    assert [p["model.cell"] for p in points] == list(config.CELLS)
    for p in points:
        cfg = config.resolve(sweep.base, {tuple(k.split(".")): v for k, v in p.items()})
        assert (cfg.model.cell, cfg.model.hidden_size, cfg.train.epochs) == (p["model.cell"], 256, 10)


def test_grid_runs_every_combination_in_order(tmp_path):
    doc = {"method": "grid", "parameters": {"model.cell": {"values": ["lstm", "gru", "rnn"]},
                                            "model.hidden_size": {"values": [8, 16]},
                                            "train.epochs": {"value": 1}}}
    planned = sweeps.plan(sweeps.load(sweep_file(tmp_path, doc)))
    assert len(planned) == 3 * 2
    assert planned[0] == ("000-cell=lstm,hidden_size=8", {"model.cell": "lstm", "model.hidden_size": 8,
                                                          "train.epochs": 1})
    assert len({name for name, _ in planned}) == 6


def test_grid_run_cap_keeps_the_first_runs(tmp_path):
    doc = {"run_cap": 4, "parameters": {"model.hidden_size": {"values": [1, 2, 3, 4, 5, 6]}}}
    assert [p["model.hidden_size"] for _, p in sweeps.plan(sweeps.load(sweep_file(tmp_path, doc)))] == [1, 2, 3, 4]


def test_random_respects_run_cap_seed_and_bounds(tmp_path):
    def points(seed):
        doc = {"method": "random", "run_cap": 7, "seed": seed,
               "parameters": {"train.lr": {"distribution": "log_uniform_values", "min": 1.0e-4, "max": 3.0e-3},
                              "model.hidden_size": {"distribution": "int_uniform", "min": 8, "max": 12},
                              "model.cell": {"values": ["lstm", "gru"]}}}
        return [p for _, p in sweeps.plan(sweeps.load(sweep_file(tmp_path, doc)))]
    first = points(0)
    assert len(first) == 7 and first == points(0) and first != points(1)
    assert all(1e-4 <= p["train.lr"] <= 3e-3 and 8 <= p["model.hidden_size"] <= 12 for p in first)
    assert {p["model.cell"] for p in first} <= {"lstm", "gru"}


@pytest.mark.parametrize("doc, message", [
    ({"method": "grid", "parameters": {"train.lr": {"distribution": "uniform", "min": 0.1, "max": 1}}},
     "grid sweep takes only values"),
    ({"method": "random", "parameters": {"train.lr": {"values": [0.1]}}}, "needs run_cap"),
    ({"parameters": {"model.hiden_size": {"values": [1]}}}, "unknown parameter 'model.hiden_size'"),
    ({"parameters": {"model.hidden_size": {"values": [1]}}, "methd": "grid"}, "unknown key 'methd'"),
    ({"parameters": {"model.hidden_size": {"values": []}}}, "non-empty list"),
    ({"metric": {"name": "accuracy"}, "parameters": {"model.hidden_size": {"values": [1]}}}, "metric needs"),
    ({"base": "no/such.yaml", "parameters": {"model.hidden_size": {"values": [1]}}}, "base config"),
])
def test_bad_sweep_files_are_clear_errors(tmp_path, doc, message):
    with pytest.raises(CharlmError, match=message):
        sweeps.load(sweep_file(tmp_path, doc))


ONE_PARAM = {"model.hidden_size": {"values": [1]}}
RANDOM = {"method": "random", "run_cap": 2}


@pytest.mark.parametrize("doc, message", [
    ({"metric": "val_ppl", "parameters": ONE_PARAM}, "s.yaml: metric must be a mapping like {name: val_ppl"),
    ({"metric": ["val_ppl"], "parameters": ONE_PARAM}, "s.yaml: metric must be a mapping"),
    ({"base": 3, "parameters": ONE_PARAM}, "s.yaml: base must be a config file path or a list of them, got 3"),
    ({"base": ["s.yaml", 3], "parameters": ONE_PARAM}, "s.yaml: base must be a config file path or a list of them"),
    ({**RANDOM, "seed": -1, "parameters": ONE_PARAM}, "s.yaml: seed must be a non-negative integer, got -1"),
    ({**RANDOM, "seed": "abc", "parameters": ONE_PARAM}, "s.yaml: seed must be a non-negative integer, got 'abc'"),
    ({**RANDOM, "seed": 1.5, "parameters": ONE_PARAM}, "s.yaml: seed must be a non-negative integer"),
    ({"run_cap": True, "parameters": ONE_PARAM}, "s.yaml: run_cap must be an integer from 1 to 10000, got True"),
    ({"run_cap": 10**11, "parameters": ONE_PARAM}, "s.yaml: run_cap must be an integer from 1 to 10000"),
    ({**RANDOM, "parameters": {"train.lr": {"distribution": "uniform", "min": 0, "max": float("inf")}}},
     "parameters.train.lr needs numbers min <= max within"),
    ({**RANDOM, "parameters": {"model.hidden_size": {"distribution": "int_uniform", "min": 1, "max": 10**24}}},
     "parameters.model.hidden_size needs numbers min <= max within"),
    ({**RANDOM, "parameters": {"model.hidden_size": {"distribution": "int_uniform", "min": 0.5, "max": 2.5}}},
     "int_uniform needs integer min and max"),
    ({1: "x", "methd": "grid", "parameters": ONE_PARAM}, "unknown key 1"),
])
def test_sweep_file_values_of_the_wrong_type_or_range_are_clear_errors(tmp_path, doc, message):
    with pytest.raises(CharlmError) as e:
        sweeps.load(sweep_file(tmp_path, doc))
    assert message in str(e.value)


def test_sweep_dry_run_with_a_bad_seed_is_one_line(tmp_path):
    path = sweep_file(tmp_path, {**RANDOM, "seed": -1, "parameters": ONE_PARAM})
    result = CliRunner().invoke(main, ["sweep", "--dry-run", str(path), "--runs-dir", str(tmp_path / "runs")])
    assert result.exit_code == 1 and result.output.strip().splitlines() == [
        f"Error: {path}: seed must be a non-negative integer, got -1"]


@pytest.fixture
def tiny_sweep(tmp_path, corpus):
    base = tmp_path / "base.yaml"
    base.write_text(yaml.safe_dump({
        "data": {"path": str(corpus), "seq_len": 8, "batch_size": 4},
        "model": {"embed_size": 8, "num_layers": 1},
        "train": {"epochs": 2, "sample_every": 0}}))
    doc = {"base": [str(ROOT / "configs" / "fixed.yaml"), str(base)], "method": "grid", "metric": {"name": "val_ppl", "goal": "minimize"},
           "parameters": {"model.hidden_size": {"values": [4, 16, "big"]}}}
    return sweep_file(tmp_path, doc, "tiny"), tmp_path / "runs"


def test_sweep_runs_records_failures_and_sorts_by_metric(tiny_sweep):
    path, runs = tiny_sweep
    result = CliRunner().invoke(main, ["sweep", str(path), "--runs-dir", str(runs)])
    assert result.exit_code == 0, result.output
    with open(runs / "tiny" / "summary.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["status"] for r in rows] == ["finished", "finished", "failed"]
    ppls = [float(r["best_val_ppl"]) for r in rows[:2]]
    assert ppls == sorted(ppls)
    assert "model.hidden_size: expected int" in rows[2]["error"]
    lines = result.stdout.splitlines()
    assert len(lines) == 5  # a line per finished run, not a table each time; the summary; the best command
    assert sorted(line.split()[1].rstrip(":") for line in lines[:3]) == sorted(r["run"] for r in rows)
    assert [r["state"] for r in rows] == ["complete", "complete", "failed"]
    assert lines[4] == f"best: charlm train -c {ROOT / 'configs' / 'fixed.yaml'} -c {path.parent / 'base.yaml'} " \
                       f"--set model.hidden_size={rows[0]['model.hidden_size']}"
    assert json.loads((runs / "tiny" / "failures.json").read_text()) == {"002-hidden_size=big": rows[2]["error"]}


def test_rerun_skips_finished_runs_and_resumes_interrupted_ones(tiny_sweep, monkeypatch):
    path, runs = tiny_sweep
    sweep = sweeps.load(path)
    sweeps.execute(sweep, runs / "tiny")
    # What a kill after epoch 1 leaves: the checkpoint of epoch 1 committed, epoch 2 never written.
    interrupted = runs / "tiny" / "001-hidden_size=16"
    state = json.loads((interrupted / "state.json").read_text())
    (interrupted / "state.json").write_text(json.dumps({**state, "epoch": 1, "status": "running"}))
    started = []
    real = trainers.subprocess.Popen
    monkeypatch.setattr(trainers.subprocess, "Popen", lambda cmd, **kw: started.append(cmd) or real(cmd, **kw))
    rows = sweeps.execute(sweep, runs / "tiny")
    assert len(started) == 2  # the interrupted run and the failed one; the finished run is skipped
    assert started[0][-2:] == ["--resume", str(interrupted)]
    assert [r["epoch"] for r in map(json.loads, (interrupted / "metrics.jsonl").read_text().splitlines())] == [1, 2]
    assert {r["run"]: r["status"] for r in rows}["001-hidden_size=16"] == "finished"


def test_jobs_run_side_by_side_to_the_same_result(tiny_sweep, tmp_path):
    path, runs = tiny_sweep
    one = sweeps.execute(sweeps.load(path), runs / "one", jobs=1)
    two = sweeps.execute(sweeps.load(path), runs / "two", jobs=2)
    assert [(r["run"], r["status"]) for r in one] == [(r["run"], r["status"]) for r in two]
    for a, b in zip(one[:2], two[:2]):  # one thread per job instead of two: sums may round differently
        assert a["best_val_ppl"] == pytest.approx(b["best_val_ppl"], rel=1e-4)


def test_dry_run_lists_the_plan_and_runs_nothing(tiny_sweep):
    path, runs = tiny_sweep
    result = CliRunner().invoke(main, ["sweep", str(path), "--runs-dir", str(runs), "--dry-run"])
    assert result.exit_code == 0 and [line.split()[0] for line in result.stdout.splitlines()] == ["new"] * 3
    assert not runs.exists()


def test_dry_run_shows_what_a_rerun_would_do(tiny_sweep):
    path, runs = tiny_sweep
    sweeps.execute(sweeps.load(path), runs / "tiny")
    result = CliRunner().invoke(main, ["sweep", str(path), "--runs-dir", str(runs), "--dry-run"])
    assert [line.split()[0] for line in result.stdout.splitlines()] == ["finished", "finished", "failed"]


def test_plot_writes_a_png_of_a_sweep(tiny_sweep):
    pytest.importorskip("matplotlib")
    path, runs = tiny_sweep
    sweeps.execute(sweeps.load(path), runs / "tiny")
    result = CliRunner().invoke(main, ["plot", str(runs / "tiny")])
    assert result.exit_code == 0, result.output
    png = runs / "tiny" / "ppl.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000


def test_plot_of_runs_without_a_finished_epoch_is_a_clear_error(tmp_path):
    pytest.importorskip("matplotlib")
    run = tmp_path / "r"
    run.mkdir()
    (run / "config.yaml").write_text("{}\n")
    (run / "vocab.json").write_text('{"chars": ["a", "b"]}')
    result = CliRunner().invoke(main, ["plot", str(run), "-o", str(tmp_path / "p.png")])
    assert result.exit_code == 1 and "no epoch has finished" in result.output
    assert not (tmp_path / "p.png").exists()


def test_plot_without_matplotlib_says_how_to_install_it(tmp_path, monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "matplotlib", None)
    result = CliRunner().invoke(main, ["plot", str(tmp_path)])
    assert result.exit_code == 1 and "pip install 'charlm[plot]'" in result.output


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_interrupted_sweep_stops_its_runs_and_resumes_on_rerun(tiny_sweep, sig):
    path, runs = tiny_sweep
    doc = yaml.safe_load(path.read_text())
    doc["parameters"] = {"model.hidden_size": {"values": [4, 16]}, "train.epochs": {"value": 100000}}
    path.write_text(yaml.safe_dump(doc))
    # a session of its own, so a test that times out still kills the sweep's training runs with it
    proc = subprocess.Popen([sys.executable, "-m", "charlm", "sweep", str(path), "--runs-dir", str(runs)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        metrics = runs / "tiny" / "000-hidden_size=4" / "metrics.jsonl"
        wait_until(metrics.exists, 60, f"the sweep's first epoch in {metrics}")
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=60)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()
    assert proc.returncode == (130 if sig == signal.SIGINT else 128 + sig)
    assert f"Resume with: charlm sweep {path}" in err
    with Run(runs / "tiny" / "000-hidden_size=4").lock():  # the trainer stopped with the sweep: its lock is free
        pass
    state = json.loads((runs / "tiny" / "000-hidden_size=4" / "state.json").read_text())
    assert state["status"] == "running" and state["epoch"] >= 1  # stopped, resumable, not failed
    assert not (runs / "tiny" / "failures.json").exists()  # no run finished, and none counts as failed
    assert sweeps.status(runs / "tiny" / "000-hidden_size=4", {}) == "interrupted"


def test_a_run_finished_elsewhere_is_finished_whatever_an_earlier_attempt_recorded(tmp_path):
    """A sweep's attempt failed (another process held the run's lock) but that process finished the run: the
    sweep reports it finished, with no error, not failed forever."""
    from charlm.run import CONFIG, STATE
    run = tmp_path / "000-x"
    run.mkdir()
    (run / CONFIG).write_text("{}\n")
    (run / STATE).write_text(json.dumps({"epoch": 2, "status": "finished"}))
    failures = {"000-x": "…/000-x is being trained by process 1"}
    assert sweeps.status(run, failures) == "finished"
    (run / STATE).write_text(json.dumps({"epoch": 1, "status": "running"}))
    assert sweeps.status(run, failures) == "failed"


@pytest.mark.parametrize("text, message", [("{", "is damaged (not JSON)"), ("[1]", "is damaged (not a JSON object)")])
def test_a_damaged_failures_file_is_a_clear_error(tmp_path, text, message):
    (tmp_path / sweeps.FAILURES).write_text(text)
    with pytest.raises(CharlmError, match=message.replace("(", r"\(").replace(")", r"\)")):
        sweeps.recorded_failures(tmp_path)


def test_a_grid_is_counted_before_it_is_built(tmp_path):
    doc = {"parameters": {f"model.{k}": {"values": list(range(1, 31))}
                          for k in ("hidden_size", "embed_size", "num_layers", "dropout")}}
    with pytest.raises(CharlmError, match="the grid has 810,000 points, more than 10,000 runs"):
        sweeps.load(sweep_file(tmp_path, doc))
    assert len(sweeps.plan(sweeps.load(sweep_file(tmp_path, {**doc, "run_cap": 3})))) == 3


@pytest.mark.parametrize("doc, message", [
    ({"parameters": {"model.cell": {"values": ["a\x00b"]}}}, "holds a control character"),
    ({"parameters": {"model.cell": {"values": ["ok", "line\nbreak"]}}}, "holds a control character"),
    ({"parameters": {"model.cell": {"values": ["x" * 300, "y"]}}}, "more than a file name's 255"),
])
def test_values_that_cannot_make_a_run_name_are_one_line_errors(tmp_path, doc, message):
    path = sweep_file(tmp_path, doc)
    for args in ([], ["--dry-run"]):
        result = CliRunner().invoke(main, ["sweep", str(path), "--runs-dir", str(tmp_path / "runs"), *args])
        assert result.exit_code == 1 and result.output.count("\n") == 1 and message in result.output
    assert not (tmp_path / "runs").exists()


def test_a_runs_dir_that_cannot_be_written_is_a_one_line_error(tmp_path):
    path, blocker = sweep_file(tmp_path, {"parameters": ONE_PARAM}), tmp_path / "file"
    blocker.write_text("x")
    for args in ([], ["--dry-run"]):
        result = CliRunner().invoke(main, ["sweep", str(path), "--runs-dir", str(blocker / "runs"), *args])
        assert result.exit_code == 1 and result.output.count("\n") == 1
        assert f"the sweep directory {blocker / 'runs' / 's'}: {blocker} is not a directory" in result.output


@pytest.mark.parametrize("args", [["sweep", "s.yaml", "--jobs", "65"], ["launch-local", "-n", "65", "--", "train"]])
def test_process_counts_have_an_upper_bound(args):
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1 and "is not in the range 1<=x<=64" in result.output


def _mutations(rng):
    """Values a careless or hostile sweep file holds: wrong types, nulls, huge numbers, unicode, deep nesting."""
    deep = {}
    for _ in range(60):
        deep = {"a": deep}
    return ["bayes", "grid", None, True, -1, 0, 10**30, 1e308, float("nan"), "", "ü\u202e", "x" * 400, "\x00", [],
            [[[]]], {}, deep, [None], {"values": None}, {"values": [1, [2]]},
            {"distribution": "uniform", "min": "a", "max": 1},
            {"distribution": "int_uniform", "min": 1, "max": 10**6}, {"type": "hyperband", "min_iter": 0},
            {"type": "hyperband", "max_iter": 10**9, "s": 40}, rng.random()]


# "Billion laughs": aliases of aliases, 10**8 values once expanded, in a few hundred bytes.
LAUGHS = "method: grid\nparameters:\n  model.cell:\n    values:\n      - &a0 [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"      - &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]\n" for i in range(1, 9))


def test_values_nested_deeper_than_one_level_are_refused(tmp_path):
    path = sweep_file(tmp_path, {"parameters": {"model.cell": {"values": ["lstm", ["gru", ["rnn"]]]}}})
    with pytest.raises(CharlmError, match="a value is a scalar or a flat list or mapping of scalars"):
        sweeps.load(path)


def test_sweep_file_fuzz_gives_a_plan_or_one_line(tmp_path):
    """Random YAML mutations of a valid sweep file (and YAML aliases) never raise past the one-line error."""
    import random

    rng = random.Random(35)
    values = _mutations(rng)
    valid = {"method": "random", "run_cap": 2, "metric": {"name": "val_ppl", "goal": "minimize"},
             "parameters": {"model.hidden_size": {"values": [4, 8]},
                            "train.lr": {"distribution": "log_uniform_values", "min": 1e-3, "max": 1e-2}}}
    paths = ["method", "run_cap", "seed", "metric", "metric.name", "parameters", "parameters.model.hidden_size",
             "parameters.train.lr", "parameters.train.lr.min", "parameters.model.hidden_size.values", "base",
             "early_terminate", "extra"]
    outcomes = []
    for case in range(150):
        doc = json.loads(json.dumps(valid))
        for _ in range(rng.randint(1, 3)):
            *parents, last = rng.choice(paths).replace("model.hidden_size", "model:hidden_size") \
                .replace("train.lr", "train:lr").split(".")
            node = doc
            for key in parents:
                key = key.replace(":", ".")
                node = node.setdefault(key, {}) if isinstance(node, dict) else {}
            if isinstance(node, dict):
                node[last.replace(":", ".")] = rng.choice(values)
        aliased = "a: &x [1, 2]\nparameters: {model.hidden_size: {values: *x}}\n"  # YAML anchors and aliases
        laughs = LAUGHS if case % 20 else LAUGHS.replace("parameters:\n  model.cell:\n    values:", "base:")
        text = yaml.safe_dump(doc, allow_unicode=True) if case % 10 else aliased if case % 30 else laughs
        path = tmp_path / f"f{case}.yaml"
        path.write_text(text, encoding="utf-8")
        result = CliRunner().invoke(main, ["sweep", str(path), "--dry-run", "--runs-dir", str(tmp_path / "runs")])
        assert result.exit_code in (0, 1), (text, result.output)
        assert not isinstance(result.exception, Exception) or isinstance(result.exception, SystemExit), text
        outcomes.append(result.exit_code)
        if result.exit_code == 1:
            assert result.output.startswith("Error: ") and result.output.count("\n") == 1, (text, result.output)
    assert 0 in outcomes and 1 in outcomes  # the mutations reach both valid plans and errors


@pytest.mark.parametrize("change, what", [
    ({"method": "bayes"}, "method: bayes"),
    ({"early_terminate": {"type": "hyperband", "min_iter": 1}}, "early_terminate")])
def test_without_optuna_bayes_and_early_terminate_name_the_extra(tmp_path, monkeypatch, change, what):
    monkeypatch.setitem(sys.modules, "optuna", None)
    path = sweep_file(tmp_path, {**RANDOM, "parameters": ONE_PARAM, **change})
    result = CliRunner().invoke(main, ["sweep", "--dry-run", str(path), "--runs-dir", str(tmp_path / "runs")])
    assert result.exit_code == 1
    assert result.output == f"Error: {path}: {what} needs Optuna: pip install 'charlm[sweep]'\n"
    plain = sweep_file(tmp_path, {**RANDOM, "parameters": ONE_PARAM}, "plain")
    result = CliRunner().invoke(main, ["sweep", "--dry-run", str(plain), "--runs-dir", str(tmp_path / "runs")])
    assert result.exit_code == 0 and [line.split()[0] for line in result.output.splitlines()] == ["new", "new"]


def test_a_received_sweep_directory_cannot_aim_its_logs_elsewhere(tmp_path):
    path, elsewhere, victim = sweep_file(tmp_path, {"parameters": ONE_PARAM}), tmp_path / "elsewhere", tmp_path / "v"
    elsewhere.mkdir()
    victim.write_text("keep\n")
    (tmp_path / "runs" / "s").mkdir(parents=True)
    (tmp_path / "runs" / "s" / "logs").symlink_to(elsewhere)
    result = CliRunner().invoke(main, ["sweep", str(path), "--runs-dir", str(tmp_path / "runs")])
    assert result.exit_code == 1 and result.output.count("\n") == 1 and "logs is not a directory" in result.output
    assert not any(elsewhere.iterdir())
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "linked.log").symlink_to(victim)
    with pytest.raises(CharlmError, match="is a symbolic link"):
        trainers.launch(["true"], logs / "linked.log", 1)
    assert victim.read_text() == "keep\n"
    os.mkfifo(logs / "fifo.log")
    assert "not a regular file" in trainers.last_error(logs / "fifo.log")  # read without blocking on the FIFO


@pytest.mark.parametrize("record", [{"epoch": 1, "val_ppl": 3.0}, {"epoch": 1, "train_loss": 1.0, "train_ppl": 2.7,
                                                                    "val_ppl": "3.0"},
                                    {"epoch": 1, "train_loss": 1.0, "train_ppl": True}, {"epoch": 1, "train_loss": None}])
def test_metrics_records_without_or_with_mistyped_numbers_are_named(tmp_path, record):
    from charlm import summary
    from charlm.run import CONFIG, METRICS
    run = tmp_path / "000-x"
    run.mkdir()
    (run / CONFIG).write_text("{}\n")
    good = {"epoch": 1, "train_loss": 1.0, "val_ppl": 3.0}
    (run / METRICS).write_text(json.dumps(good) + "\n" + json.dumps(record) + "\n")
    sweep = sweeps.load(sweep_file(tmp_path, {"parameters": ONE_PARAM}))
    with pytest.raises(CharlmError, match=r"metrics.jsonl is damaged \(line 2 is not an epoch's record\)"):
        summary.row(sweep, run, {}, "finished")
    (run / METRICS).write_text(json.dumps(good) + "\n")
    assert summary.row(sweep, run, {}, "finished")["best_val_ppl"] == 3.0  # no train_ppl, tokens_per_s: left out


def test_summary_csv_is_written_at_most_every_few_seconds_and_at_the_end(tmp_path, monkeypatch):
    from charlm import summary
    path = sweep_file(tmp_path, {"parameters": {"model.hidden_size": {"values": ["a", "b", "c"]}}})
    written, real = [], summary.write
    monkeypatch.setattr(summary, "write", lambda rows, where: written.append(len(rows)) or real(rows, where))
    monkeypatch.setattr(sweeps, "SUMMARY_EVERY", 1e9)
    rows = sweeps.execute(sweeps.load(path), tmp_path / "runs" / "s")
    assert written == [3] and [r["status"] for r in rows] == ["failed"] * 3
    assert (tmp_path / "runs" / "s" / "summary.csv").read_text().count("\n") == 4


@pytest.mark.parametrize("name", ["..yaml", "...yaml", "a\tb.yaml"])
def test_a_sweep_file_whose_stem_is_no_directory_name_is_refused(tmp_path, name):
    path = tmp_path / name
    path.write_text(yaml.safe_dump({"parameters": ONE_PARAM}))
    result = CliRunner().invoke(main, ["sweep", str(path), "--runs-dir", str(tmp_path / "runs"), "--dry-run"])
    assert result.exit_code == 1 and result.output.count("\n") == 1 and "give it a plain name" in result.output
