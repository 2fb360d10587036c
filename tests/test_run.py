import json
import os

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
    """The generation stepper shares the model's weights; it must not add names to the saved parameters."""
    from charlm import generate
    s, r = saved
    generate.complete(s.model, s.vocab, s.vocab.encode("the"), 3, mx.cpu())
    s.model.save_parameters(str(r.path / "params-best.params"))
    assert r.load_model(mx.cpu()) is not None
