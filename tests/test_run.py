import json
import multiprocessing
import os
import subprocess
import sys

import pytest

from charlm import checkpoint, run as runs, training as train
from charlm.engine import mx, nd
from charlm.errors import CharlmError


def test_run_directory_holds_config_vocab_metrics_and_state(saved_run):
    s, r = saved_run
    assert not [p.name for p in r.path.iterdir() if p.name.endswith(".tmp")]
    assert r.config() == s.cfg and r.vocab().tokens == s.vocab.tokens
    assert r.metrics() == [{"epoch": 1, "train_loss": 2.0}]
    assert r.read_state()["best_epoch"] == 1


def test_latest_points_at_the_newest_run_and_find_uses_it(saved_run, tiny_cfg, tmp_path):
    _, r = saved_run
    assert runs.find(runs_dir=tmp_path / "runs").path == r.path.resolve()
    r2 = runs.Run.create(tmp_path / "runs")
    r2.start(tiny_cfg, r.vocab())
    assert os.readlink(tmp_path / "runs" / "latest") == r.path.name  # r2 has no model yet
    s = train.setup(tiny_cfg, mx.cpu())
    checkpoint.save_epoch(r2, s.model, train.make_trainer(s), {"epoch": 1}, True)
    assert os.readlink(tmp_path / "runs" / "latest") == r2.path.name


def test_an_existing_run_is_never_reused(saved_run, tmp_path):
    with pytest.raises(CharlmError, match="already exists"):
        runs.Run.create(tmp_path / "runs", "r1")
    assert runs.Run.create(tmp_path / "runs").path != runs.Run.create(tmp_path / "runs").path


@pytest.mark.parametrize("name", ["a/b", "latest", ".."])
def test_run_names_must_be_plain(tmp_path, name):
    with pytest.raises(CharlmError, match="--name"):
        runs.Run.create(tmp_path, name)


def test_find_rejects_what_is_not_a_run(tmp_path):
    with pytest.raises(CharlmError, match="no runs yet"):
        runs.find(runs_dir=tmp_path)
    with pytest.raises(CharlmError, match="not a run directory"):
        runs.find(tmp_path)


def test_a_failed_write_keeps_the_old_file(tmp_path):
    path = tmp_path / "f.json"
    runs.write_text(path, "old")

    def fail(tmp):
        open(tmp, "w").write("half")
        raise OSError(28, "No space left on device")

    with pytest.raises(CharlmError, match="No space left"):
        runs.atomic_write(path, fail)
    assert path.read_text() == "old" and os.listdir(tmp_path) == ["f.json"]


def test_state_records_versions(saved_run):
    state = json.loads((saved_run[1].path / "state.json").read_text())
    assert state["versions"]["mxnet"] == mx.__version__


def test_the_run_directory_reads_and_writes_without_mxnet():
    subprocess.run([sys.executable, "-c", "import sys, charlm.run; assert 'mxnet' not in sys.modules"], check=True)


def _hold_lock(path, start, tried, held):
    start.wait()
    try:
        with runs.Run(path).lock():
            held.put(1)
            tried.wait(timeout=60)  # held until every process has tried, so a second holder would overlap it
    except CharlmError:
        tried.wait(timeout=60)


def test_processes_racing_for_a_run_lock_get_it_one_at_a_time(tmp_path):
    """Processes that try to lock a run at the same moment: exactly one holds it (a lock that read a
    just-created, still empty lock file as stale would give it to two)."""
    ctx = multiprocessing.get_context("fork")
    for trial in range(20):
        start, tried, held = ctx.Barrier(3), ctx.Barrier(3), ctx.Queue()
        procs = [ctx.Process(target=_hold_lock, args=(tmp_path, start, tried, held)) for _ in range(3)]
        for p in procs:
            p.start()
        for p in procs:
            p.join()
        holders = 0
        while not held.empty():
            holders += held.get()
        assert holders == 1, f"trial {trial}: {holders} processes held the lock"
        assert not (tmp_path / runs.LOCK).exists()


def test_taking_the_lock_removes_temporary_files_of_killed_writes(tmp_path):
    (tmp_path / ".last-e1-s0.params.999999.tmp").write_bytes(b"half a checkpoint")
    (tmp_path / "last-e1-s0.params").write_bytes(b"a checkpoint")
    with runs.Run(tmp_path).lock():
        assert sorted(p.name for p in tmp_path.iterdir()) == [runs.LOCK, "last-e1-s0.params"]
