import json
import multiprocessing
import os
import time

import numpy as np
import pytest

from charlm import run as runs, train
from charlm.engine import mx, nd
from charlm.errors import CharlmError


@pytest.fixture
def saved(tiny_cfg, tmp_path):
    s = train.setup(tiny_cfg, mx.cpu())
    r = runs.Run.create(tmp_path / "runs", "r1")
    r.start(tiny_cfg, s.vocab)
    r.save_checkpoint(s.model, train.make_trainer(s.model, tiny_cfg.train), {"epoch": 1, "train_loss": 2.0}, True)
    return s, r


def test_run_directory_holds_everything_to_rebuild_the_model(saved):
    s, r = saved
    names = {p.name for p in r.path.iterdir()}
    assert {"config.yaml", "vocab.json", "state.json", "metrics.jsonl", "params-best.params",
            "last-e1-s0.params", "last-e1-s0.states"} <= names
    assert not [n for n in names if n.endswith(".tmp")]
    assert r.config() == s.cfg and r.vocab().tokens == s.vocab.tokens
    assert r.metrics() == [{"epoch": 1, "train_loss": 2.0}]
    assert r.read_state()["best_epoch"] == 1
    X = nd.array(np.arange(6).reshape(3, 2))
    expected, _ = s.model(X, s.model.begin_state(2, mx.cpu()))
    loaded = r.load_model(mx.cpu())
    got, _ = loaded(X, loaded.begin_state(2, mx.cpu()))
    np.testing.assert_array_equal(got.asnumpy(), expected.asnumpy())


def test_latest_points_at_the_newest_run_and_find_uses_it(saved, tiny_cfg, tmp_path):
    _, r = saved
    assert runs.find(runs_dir=tmp_path / "runs").path == r.path.resolve()
    r2 = runs.Run.create(tmp_path / "runs")
    r2.start(tiny_cfg, r.vocab())
    assert os.readlink(tmp_path / "runs" / "latest") == r.path.name  # r2 has no model yet
    s = train.setup(tiny_cfg, mx.cpu())
    r2.save_checkpoint(s.model, train.make_trainer(s.model, tiny_cfg.train), {"epoch": 1}, True)
    assert os.readlink(tmp_path / "runs" / "latest") == r2.path.name


def test_an_existing_run_is_never_reused(saved, tmp_path):
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


def test_corrupt_parameters_are_a_clear_error(saved):
    _, r = saved
    path = r.path / "params-best.params"
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(CharlmError, match="cannot be loaded"):
        r.load_model(mx.cpu())


def test_parameters_that_do_not_match_the_config_are_a_clear_error(saved):
    _, r = saved
    cfg_path = r.path / "config.yaml"
    cfg_path.write_text(cfg_path.read_text().replace("hidden_size: 16", "hidden_size: 32"))
    with pytest.raises(CharlmError, match="cannot be loaded"):
        r.load_model(mx.cpu())


def test_a_failed_write_keeps_the_old_file(tmp_path):
    path = tmp_path / "f.json"
    runs.write_text(path, "old")

    def fail(tmp):
        open(tmp, "w").write("half")
        raise OSError(28, "No space left on device")

    with pytest.raises(CharlmError, match="No space left"):
        runs.atomic_write(path, fail)
    assert path.read_text() == "old" and os.listdir(tmp_path) == ["f.json"]


def test_state_records_versions(saved):
    state = json.loads((saved[1].path / "state.json").read_text())
    assert state["versions"]["mxnet"] == mx.__version__


def test_parameters_saved_after_generating_load_into_a_fresh_model(saved):
    """The generation blocks share the model's weights; they must not add names to the saved parameters."""
    from charlm import generate
    s, r = saved
    greedy_and_sampled = ({}, {"temperature": 1.0, "seed": 0})  # each path builds its own blocks
    texts = [generate.complete(s.model, s.vocab, s.vocab.encode("the"), 3, mx.cpu(), **kw) for kw in greedy_and_sampled]
    names = set(s.model._collect_params_with_prefix())
    s.model.save_parameters(str(r.path / "params-best.params"))
    assert set(nd.load(str(r.path / "params-best.params"))) == names
    fresh = r.load_model(mx.cpu())
    assert [generate.complete(fresh, s.vocab, s.vocab.encode("the"), 3, mx.cpu(), **kw)
            for kw in greedy_and_sampled] == texts


def _hold_lock(path, barrier, held):
    barrier.wait()
    try:
        with runs.Run(path).lock():
            held.put(1)
            time.sleep(0.2)  # long enough that a second holder would overlap this one
    except CharlmError:
        pass


def test_processes_racing_for_a_run_lock_get_it_one_at_a_time(tmp_path):
    """Processes that try to lock a run at the same moment: exactly one holds it (an earlier lock read a
    just-created, still empty lock file as stale and gave it to two processes in 6 of 20 trials here)."""
    ctx = multiprocessing.get_context("fork")
    for trial in range(20):
        barrier, held = ctx.Barrier(3), ctx.Queue()
        procs = [ctx.Process(target=_hold_lock, args=(tmp_path, barrier, held)) for _ in range(3)]
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
