import pickle

import numpy as np
import pytest
from click.testing import CliRunner

from charlm import checkpoint, parallel, run as runs, training as train
from charlm.cli import main
from charlm.engine import mx, nd
from charlm.errors import CharlmError

X = nd.array(np.arange(6).reshape(3, 2))  # (T, N): a fixed input


def logits(model):
    out, _ = model(X, model.begin_state(2, mx.cpu()))
    return out.asnumpy()


def test_the_best_parameters_rebuild_the_model(saved_run):
    s, r = saved_run
    assert {"params-best.params", "last-e1-s0.params", "last-e1-s0.optim"} <= {p.name for p in r.path.iterdir()}
    np.testing.assert_array_equal(logits(checkpoint.load_model(r, mx.cpu())), logits(s.model))


def test_corrupt_parameters_are_a_clear_error(saved_run):
    _, r = saved_run
    path = r.path / "params-best.params"
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(CharlmError, match="cannot be loaded"):
        checkpoint.load_model(r, mx.cpu())


def test_parameters_that_do_not_match_the_config_are_a_clear_error(saved_run):
    _, r = saved_run
    cfg_path = r.path / "config.yaml"
    cfg_path.write_text(cfg_path.read_text().replace("hidden_size: 16", "hidden_size: 32"))
    with pytest.raises(CharlmError, match="cannot be loaded"):
        checkpoint.load_model(r, mx.cpu())


def test_parameters_saved_after_generating_load_into_a_fresh_model(saved_run):
    """The generation blocks share the model's weights; they must not add names to the saved parameters."""
    from charlm import generate
    s, r = saved_run
    greedy_and_sampled = ({}, {"temperature": 1.0, "seed": 0})  # each path builds its own blocks
    texts = [generate.complete(s.model, s.vocab, s.vocab.encode("the"), 3, mx.cpu(), **kw) for kw in greedy_and_sampled]
    names = set(s.model._collect_params_with_prefix())
    s.model.save_parameters(str(r.path / "params-best.params"))
    assert set(nd.load(str(r.path / "params-best.params"))) == names
    fresh = checkpoint.load_model(r, mx.cpu())
    assert [generate.complete(fresh, s.vocab, s.vocab.encode("the"), 3, mx.cpu(), **kw)
            for kw in greedy_and_sampled] == texts


def trained(cfg, path, ctx):
    """(setup, run, trainer) after training cfg into run directory path on ctx."""
    s = train.setup(cfg, ctx, parallel.connect(cfg, ctx))
    run = runs.Run.create(path.parent, path.name)
    run.start(cfg, s.vocab)
    train.fit(s, run)
    return s, run, s.trainer


def states(trainer):
    """Each updater's optimizer state, as NumPy arrays by parameter index (none for a stateless index)."""
    def numpy(state):
        return tuple(a.asnumpy() for a in state) if isinstance(state, tuple) else state.asnumpy()
    return [{i: numpy(st) for i, st in u.states.items() if st is not None} for u in trainer._updaters]


@pytest.mark.parametrize("optimizer, ctx", [("adam", [mx.cpu()]), ("sgd", [mx.cpu()]),
                                            ("adam", [mx.cpu(0), mx.cpu(1)])])
def test_a_resumed_trainer_holds_the_saved_optimizer_state_exactly(tiny_cfg, tmp_path, optimizer, ctx):
    tiny_cfg.train.optimizer, tiny_cfg.train.epochs = optimizer, 1
    s, run, saved = trained(tiny_cfg, tmp_path / "r", ctx if len(ctx) > 1 else ctx[0])
    device = ctx if len(ctx) > 1 else ctx[0]
    fresh = train.setup(tiny_cfg, device, parallel.connect(tiny_cfg, device))
    loaded = train.make_trainer(fresh)
    checkpoint.load_last(run, fresh.model, loaded, ctx)
    expected, got = states(saved)[0], states(loaded)
    assert len(got) == len(ctx) and len(expected) == (0 if optimizer == "sgd" else len(saved._params))
    for device in got:  # every device's updater: the first one's state was saved
        assert device.keys() == expected.keys()
        for i in expected:
            np.testing.assert_array_equal(device[i], expected[i])
    a, b = saved.optimizer, loaded.optimizer
    assert a.num_update == b.num_update > 0 and a.begin_num_update == b.begin_num_update
    assert all(counts == a._index_update_count for counts in b._all_index_update_counts.values())
    assert sorted(b._all_index_update_counts) == [c.device_id for c in ctx]


class Plant:
    """A pickle that, when loaded, creates the file at path: what a hostile optimizer file could do."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return open, (self.path, "w")


@pytest.mark.parametrize("planted, message", [  # a run an earlier charlm saved; a pickle named as the new file
    ("last-e1-s0.states", ("(last-e1-s0.states) is a pickle, which can run code when loaded: --resume does not "
                           "read it; go on from its parameters in a new run with charlm train --init-from")),
    ("last-e1-s0.optim", "last-e1-s0.optim (optimizer state) cannot be loaded"),
])
def test_resume_never_unpickles_a_planted_optimizer_file(saved_run, tmp_path, planted, message):
    _, r = saved_run
    pickle.loads(pickle.dumps(Plant(tmp_path / "armed"))).close()
    assert (tmp_path / "armed").exists()  # the payload works when unpickled
    (r.path / "last-e1-s0.optim").unlink()
    (r.path / planted).write_bytes(pickle.dumps(Plant(tmp_path / "marker")))
    result = CliRunner().invoke(main, ["train", "--resume", str(r.path), "--epochs", "2"])
    lines = result.output.strip().splitlines()
    assert result.exit_code == 1 and len(lines) == 1 and message in lines[0], result.output
    assert not (tmp_path / "marker").exists()
