"""Sweeps on an Optuna study: bayes, early termination, the study in SQLite or PostgreSQL, several workers, kills."""
import contextlib
import csv
import hashlib
import importlib.util
import json
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from charlm import study as studies, sweep as sweeps
from charlm.cli import main
from charlm.run import Run, epoch_records
from conftest import wait_until

optuna = pytest.importorskip("optuna")
ROOT = Path(__file__).resolve().parent.parent
TINY = {"data": {"seq_len": 16, "batch_size": 8, "max_chars": 6000},  # the bundled book's first pages
        "model": {"embed_size": 8, "num_layers": 1}, "train": {"epochs": 3, "sample_every": 0}}


def bayes_file(tmp_path, name="b", run_cap=4, **extra):
    base = tmp_path / "base.yaml"
    base.write_text(yaml.safe_dump(TINY))
    doc = {"base": [str(ROOT / "configs" / "fixed.yaml"), str(base)], "method": "bayes", "run_cap": run_cap,
           "metric": {"name": "val_ppl", "goal": "minimize"},
           "early_terminate": {"type": "hyperband", "min_iter": 1, "eta": 2},
           "parameters": {"model.hidden_size": {"distribution": "int_uniform", "min": 2, "max": 24},
                          "train.lr": {"distribution": "log_uniform_values", "min": 1e-4, "max": 3e-2}}, **extra}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def sweep_cmd(path, runs, *args):
    return [sys.executable, "-m", "charlm", "sweep", str(path), "--runs-dir", str(runs), *args]


def trials_of(path, runs, url=None):
    sweep = sweeps.load(path)
    return studies.load(sweep.name, url or studies.default_storage(runs / sweep.name)).get_trials()


def assert_whole(trials, run_cap):
    """run_cap points, each ended once (complete or pruned), no point drawn twice."""
    points = {}
    for t in trials:
        if t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED):
            assert t.user_attrs["run"] not in points
            points[t.user_attrs["run"]] = tuple(sorted(t.params.items()))
    assert len(points) == run_cap and len(set(points.values())) == run_cap
    assert not [t for t in trials if t.state in (optuna.trial.TrialState.RUNNING, optuna.trial.TrialState.WAITING)]


def test_bayes_sweep_with_hyperband_prunes_resumably_sorts_and_plots(tmp_path):
    path, runs = bayes_file(tmp_path, run_cap=5), tmp_path / "runs"
    result = CliRunner().invoke(main, ["sweep", str(path), "--runs-dir", str(runs)])
    assert result.exit_code == 0, result.output
    trials = trials_of(path, runs)
    assert_whole(trials, 5)
    pruned = [t for t in trials if t.state == optuna.trial.TrialState.PRUNED]
    assert pruned, "hyperband with eta 2 stops a run worse than the first at epoch 1"
    with open(runs / "b" / "summary.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["state"] for r in rows] == sorted((r["state"] for r in rows), key=["complete", "pruned"].index)
    complete = [float(r["best_val_ppl"]) for r in rows if r["state"] == "complete"]
    assert complete == sorted(complete) and float(rows[0]["best_val_ppl"]) == min(
        t.value for t in trials if t.state == optuna.trial.TrialState.COMPLETE)
    assert len(result.stdout.splitlines()) == 5 + 2  # a line per trial, the summary, the best command
    for t in pruned:  # each stopped at the end of its last reported epoch, with that epoch's checkpoint
        state = json.loads((runs / "b" / t.user_attrs["run"] / "state.json").read_text())
        assert state["epoch"] == max(t.intermediate_values) < 3 and state["last"] and not state.get("step")
    run = runs / "b" / pruned[0].user_attrs["run"]
    resumed = CliRunner().invoke(main, ["train", "--resume", str(run)])
    assert resumed.exit_code == 0, resumed.output
    assert [r["epoch"] for r in epoch_records(Run(run).metrics())] == [1, 2, 3]
    if importlib.util.find_spec("matplotlib"):
        drawn = CliRunner().invoke(main, ["plot", str(runs / "b")])
        assert drawn.exit_code == 0, drawn.output
        for name in ("ppl", "history", "importance"):
            assert (runs / "b" / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_recipes_choice_is_the_first_trial(tmp_path):
    from charlm import configs, recipe

    path = bayes_file(tmp_path, early_terminate=None)
    doc = yaml.safe_load(path.read_text())
    doc["base"] = doc["base"][1:]  # without fixed.yaml the recipe chooses the hidden size and the rate
    doc["parameters"]["model.hidden_size"] = {"distribution": "int_uniform", "min": 2, "max": 4096}
    path.write_text(yaml.safe_dump(doc))
    sweep = sweeps.load(path)
    study = studies.open_study(sweep, tmp_path, studies.default_storage(tmp_path))
    cfg = configs.resolve(sweep.base)
    recipe.fill(cfg)
    [first] = study.get_trials()
    assert first.system_attrs["fixed_params"]["model.hidden_size"] == cfg.model.hidden_size
    assert first.user_attrs == {"recipe": True}


def run_two(cmds, timeout=300):
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              start_new_session=True) for cmd in cmds]
    try:
        outs = [proc.communicate(timeout=timeout)[0] for proc in procs]
    finally:
        for proc in procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    assert [proc.returncode for proc in procs] == [0, 0], outs
    return outs


def test_two_sweep_processes_share_one_study(tmp_path):
    path, runs = bayes_file(tmp_path, run_cap=4), tmp_path / "runs"
    outs = run_two([sweep_cmd(path, runs), sweep_cmd(path, runs)])
    assert_whole(trials_of(path, runs), 4)
    finished = [line for out in outs for line in out.splitlines() if line.startswith("[")]
    assert len(finished) == 4  # each trial ran in one of the two


def test_a_sweep_killed_mid_way_completes_on_rerun(tmp_path):
    path, runs = bayes_file(tmp_path, run_cap=3, early_terminate=None), tmp_path / "runs"
    doc = yaml.safe_load(path.read_text())
    doc["parameters"]["train.epochs"] = {"value": 4}
    path.write_text(yaml.safe_dump(doc))
    proc = subprocess.Popen(sweep_cmd(path, runs), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        wait_until(lambda: list((runs / "b").glob("001-*/metrics.jsonl")), 120, "the second trial's first epoch")
        proc.kill()  # the sweep alone: its trainers stop with it and tell their trials
        proc.wait()
        rerun = subprocess.run(sweep_cmd(path, runs), capture_output=True, text=True, timeout=300)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    trials = trials_of(path, runs)
    assert_whole(trials, 3)
    killed = [t for t in trials if t.state == optuna.trial.TrialState.FAIL]
    assert killed and all(any(t.user_attrs.get("continues") == k.number for t in trials) for k in killed)
    for t in trials:  # a resumed point trained each epoch once
        if t.state == optuna.trial.TrialState.COMPLETE:
            lines = (runs / "b" / t.user_attrs["run"] / "metrics.jsonl").read_text().splitlines()
            assert [json.loads(line)["epoch"] for line in lines] == [1, 2, 3, 4]


def postgres_url():
    url = os.environ.get("CHARLM_TEST_POSTGRES")
    if not url:
        if os.environ.get("CI"):
            pytest.fail("CI must set CHARLM_TEST_POSTGRES to a PostgreSQL URL (.ci/run starts the server)")
        pytest.skip("no PostgreSQL server: set CHARLM_TEST_POSTGRES=postgresql://... to run this")
    pytest.importorskip("psycopg2")
    return url


def test_two_workers_share_a_study_in_postgresql(tmp_path):
    url = postgres_url()
    name = f"pg{uuid.uuid4().hex[:8]}"  # the database outlives the test: a study of its own
    path = bayes_file(tmp_path, name=name, run_cap=4)
    run_two([sweep_cmd(path, tmp_path / "a", "--storage", url), sweep_cmd(path, tmp_path / "b", "--storage", url)])
    assert_whole(trials_of(path, tmp_path / "a", url), 4)


def digest(folder):
    return {p.relative_to(folder): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("change, message", [
    ({"method": "bayesian"}, "method must be one of grid, random, bayes, got 'bayesian'"),
    ({"early_terminate": {"type": "median"}}, "early_terminate.type must be hyperband, got 'median'"),
    ({"early_terminate": {"type": "hyperband"}}, "early_terminate needs min_iter, or max_iter and s"),
    ({"early_terminate": {"type": "hyperband", "max_iter": 3, "s": 2, "eta": 3}}, "must be at least 1 epoch"),
    ({"run_cap": None}, "a bayes sweep needs run_cap"),
    ({"early_terminate": {"type": "hyperband", "min_iter": 1, "strict": True}},
     "early_terminate: unknown key 'strict'; valid keys: eta, max_iter, min_iter, s, type"),
])
def test_bad_study_sweep_files_are_one_line_errors(tmp_path, change, message):
    path = bayes_file(tmp_path)
    path.write_text(yaml.safe_dump({**yaml.safe_load(path.read_text()), **change}))
    result = CliRunner().invoke(main, ["sweep", str(path), "--runs-dir", str(tmp_path / "runs")])
    assert result.exit_code == 1 and result.output.count("\n") == 1 and message in result.output
    assert not (tmp_path / "runs").exists()


def test_max_iter_and_s_set_the_first_rung(tmp_path):
    path = bayes_file(tmp_path, early_terminate={"type": "hyperband", "max_iter": 27, "s": 2, "eta": 3})
    assert sweeps.load(path).early_terminate == {"min_iter": 3, "eta": 3}


@pytest.mark.parametrize("url, message", [
    ("postgresql+psycopg2://charlm@127.0.0.1:1/none",
     "cannot open the study storage postgresql+psycopg2://charlm@127.0.0.1:1/none: connection to server at"),
    ("nosuchdb://x", "cannot open the study storage nosuchdb://x"),
    ("sqlite:///{tmp}/text.db", "text.db: file is not a database"),
])
def test_a_storage_that_is_no_database_is_a_one_line_error(tmp_path, url, message):
    if url.startswith("postgresql"):
        pytest.importorskip("psycopg2")
    (tmp_path / "text.db").write_text("not a database\n" * 100)
    before = digest(tmp_path)
    path = bayes_file(tmp_path)
    for args in ([], ["--dry-run"]):  # --dry-run opens the storage without creating tables
        result = CliRunner().invoke(main, ["sweep", str(path), "--runs-dir", str(tmp_path / "runs"),
                                           "--storage", url.format(tmp=tmp_path), *args])
        assert result.exit_code == 1 and result.output.count("\n") == 1 and message in result.output, result.output
    assert (tmp_path / "text.db").read_text() == "not a database\n" * 100 and before.items() <= digest(tmp_path).items()


def test_a_study_of_another_sweep_file_is_refused_unchanged(tmp_path):
    path, runs = bayes_file(tmp_path, run_cap=2), tmp_path / "runs"
    doc = yaml.safe_load(path.read_text())
    doc["parameters"]["train.epochs"] = {"value": 1}
    path.write_text(yaml.safe_dump(doc))
    assert CliRunner().invoke(main, ["sweep", str(path), "--runs-dir", str(runs)]).exit_code == 0
    before = digest(runs)
    other = tmp_path / "other"
    other.mkdir()
    doc["parameters"]["model.hidden_size"]["max"] = 48
    (other / "b.yaml").write_text(yaml.safe_dump(doc))
    for args in ([], ["--dry-run"]):
        result = CliRunner().invoke(main, ["sweep", str(other / "b.yaml"), "--runs-dir", str(runs), *args])
        assert result.exit_code == 1 and result.output.count("\n") == 1
        assert "belongs to another sweep file under the same name" in result.output
    assert digest(runs) == before


def test_a_grid_with_early_terminate_runs_its_plan_and_retries_a_failure_once(tmp_path):
    path = bayes_file(tmp_path, method="grid", run_cap=None,
                      parameters={"model.hidden_size": {"values": [2, "big", 3]}, "train.epochs": {"value": 1}})
    runs = tmp_path / "runs"
    planned = [name for name, _ in sweeps.plan(sweeps.load(path))]
    dry = CliRunner().invoke(main, ["sweep", str(path), "--runs-dir", str(runs), "--dry-run"])
    assert [line.split()[0] for line in dry.stdout.splitlines()] == ["new"] * 3 and not runs.exists()
    result = CliRunner().invoke(main, ["sweep", str(path), "--runs-dir", str(runs)])
    assert result.exit_code == 0, result.output
    trials = trials_of(path, runs)
    assert [t.user_attrs["run"] for t in trials[:3]] == planned
    failed = [t for t in trials if t.state == optuna.trial.TrialState.FAIL]
    assert [t.user_attrs["run"] for t in failed] == [planned[1]] * 2  # the point and its one retry
    assert "model.hidden_size: expected int" in failed[1].user_attrs["error"]
    assert {t.user_attrs["run"] for t in trials if t.state == optuna.trial.TrialState.COMPLETE} == {planned[0],
                                                                                                planned[2]}
    with open(runs / "b" / "summary.csv", newline="") as f:
        assert [r["state"] for r in csv.DictReader(f)] == ["complete", "complete", "failed"]


def test_a_study_db_that_is_a_link_is_refused_before_it_is_opened(tmp_path):
    path, victim = bayes_file(tmp_path), tmp_path / "victim"
    victim.write_text("keep\n")
    (tmp_path / "runs" / "b").mkdir(parents=True)
    (tmp_path / "runs" / "b" / "study.db").symlink_to(victim)
    for args in ([], ["--dry-run"]):
        result = CliRunner().invoke(main, ["sweep", str(path), "--runs-dir", str(tmp_path / "runs"), *args])
        assert result.exit_code == 1 and result.output.count("\n") == 1, result.output
        assert "study.db is not a regular file" in result.output
    assert victim.read_text() == "keep\n"


@pytest.mark.parametrize("bad", ["../x", "a/b", "..", ".", "", "a\nb", "x" * 256])
def test_run_names_read_from_a_study_are_checked_before_they_reach_a_path(tmp_path, bad):
    path = bayes_file(tmp_path, method="grid", run_cap=None, parameters={"model.hidden_size": {"values": [2, 3]}})
    sweep = sweeps.load(path)
    store = studies.storage(studies.default_storage(tmp_path))
    study = studies.open_study(sweep, tmp_path, studies.default_storage(tmp_path), store)
    study.enqueue_trial({"model.hidden_size": 3}, user_attrs={"run": bad})
    asked = []
    while (got := studies.ask(study, sweep, store)):
        asked.append(got[1])
        study.tell(got[0], state=optuna.trial.TrialState.FAIL)
    assert asked == [name for name, _ in sweeps.plan(sweep)]
    failed = study.get_trials()[-1]
    assert failed.state == optuna.trial.TrialState.FAIL and "run name" in failed.user_attrs["error"]
    assert [r["run"] for r in studies.summary(sweep, tmp_path, study)] == asked


def test_study_json_names_no_url_to_connect_to_and_moves_with_its_directory(tmp_path):
    import shutil
    sweep = sweeps.load(bayes_file(tmp_path))
    (tmp_path / "made").mkdir()
    studies.open_study(sweep, tmp_path / "made", studies.default_storage(tmp_path / "made"))
    assert json.loads((tmp_path / "made" / "study.json").read_text()) == {"storage": "study.db", "study": "b"}
    shutil.move(tmp_path / "made", tmp_path / "moved")
    assert studies.recorded(tmp_path / "moved").study_name == "b"  # found in the moved study.db
    evil = tmp_path / "evil.db"
    (tmp_path / "moved" / "study.json").write_text(json.dumps({"storage": f"sqlite:///{evil}", "study": "b"}))
    with pytest.raises(studies.CharlmError, match="give that database with --storage URL"):
        studies.recorded(tmp_path / "moved")
    assert not evil.exists()
    url = studies.default_storage(tmp_path / "moved")
    assert studies.recorded(tmp_path / "moved", url).study_name == "b"  # the user's own --storage


def test_study_json_keeps_no_password(tmp_path):
    from sqlalchemy.engine import make_url
    url = make_url(postgres_url()).set(password="s3cret").render_as_string(hide_password=False)  # trust: ignored
    path = bayes_file(tmp_path, name=f"pw{uuid.uuid4().hex[:8]}")
    studies.open_study(sweeps.load(path), tmp_path, url)
    stored = json.loads((tmp_path / "study.json").read_text())["storage"]
    assert "s3cret" not in stored and stored == studies.shown(url)


def test_a_row_of_a_run_trained_elsewhere_takes_the_studys_value(tmp_path):
    path = bayes_file(tmp_path, method="grid", run_cap=None, parameters={"model.hidden_size": {"values": [2, 3]}})
    sweep = sweeps.load(path)
    store = studies.storage(studies.default_storage(tmp_path))
    study = studies.open_study(sweep, tmp_path, studies.default_storage(tmp_path), store)
    trial, name, _ = studies.ask(study, sweep, store)
    for epoch, value in ((1, 9.0), (2, 7.5), (3, 8.0)):
        trial.report(value, epoch)
    study.tell(trial, 7.5)  # by a worker on another machine: no run directory here
    row = next(r for r in studies.summary(sweep, tmp_path, study) if r["run"] == name)
    assert (row["state"], row["best_val_ppl"], row["best_epoch"]) == ("complete", 7.5, 2)
