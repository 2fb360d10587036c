"""Shared fixtures: a tiny corpus, tiny settings and tiny models, so every test runs in seconds on a CPU."""
import dataclasses
import time

import numpy as np
import pytest

from charlm import configs as config, recipe

T, N, V, H = 3, 2, 6, 5  # torch-rnn's habit: tiny, all different, so a transposed shape cannot pass


def pytest_configure(config):
    # MXNet 1.9.1 itself trips numpy's and distutils' deprecation warnings at import.
    config.addinivalue_line("filterwarnings", "ignore::DeprecationWarning:mxnet.*")


def _flags(settings):
    """Command-line flags for {"section.name": value}."""
    out = []
    for key, value in settings.items():
        flag = "--" + key.split(".")[1].replace("_", "-")
        out += [flag if value else "--no-" + flag[2:]] if isinstance(value, bool) else [flag, str(value)]
    return out


# The fixed settings as flags, for the tests of mechanics that the recipe's choices would only obscure (cosine
# schedules over a budget, averaged weights); the recipe has tests of its own.
FIXED_FLAGS = _flags(recipe.FIXED)
# The sizes of a model small enough to train in a second: tiny_cfg's, and as flags for the CLI's tests.
TINY = {"data.seq_len": 8, "data.batch_size": 4, "model.hidden_size": 16, "model.embed_size": 8, "model.num_layers": 1}
TINY_FLAGS = _flags(TINY)


def without(args, flag):
    """args without the last `flag value` pair."""
    at = len(args) - 1 - args[::-1].index(flag)
    return args[:at] + args[at + 2:]


def wait_until(condition, timeout=60.0, what="the condition"):
    """Poll condition() until it is true; fail the test if `timeout` seconds pass first."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"waited {timeout:g} s for {what}")
        time.sleep(0.01)  # a pause between polls, so the process under test keeps the cores


def ids(seed=0):
    """Token ids of shape (T, N), below V."""
    from charlm.engine import nd
    return nd.array(np.random.default_rng(seed).integers(0, V, size=(T, N)))


def randomize(model, seed=1, scale=0.5):
    """Draw every parameter from N(0, scale): weights far from the initializer's, so differences show."""
    from charlm.engine import nd
    rng = np.random.default_rng(seed)
    for p in model.collect_params().values():
        p.set_data(nd.array(rng.normal(0, scale, size=p.shape), dtype=p.dtype))


class TinyModels:
    """tiny_model(cell, **settings): a model over V tokens, 2 layers of H units over a 4-wide embedding unless the
    settings say otherwise, its weights randomized from `seed` (None: the initializer's)."""

    def config(self, cell, **settings):
        """The ModelConfig of the fixed settings, the tiny sizes, then these."""
        fixed = recipe.fixed(config.Config()).model
        return dataclasses.replace(fixed, **{"cell": cell, "hidden_size": H, "embed_size": 4, "num_layers": 2,
                                             **settings})

    def __call__(self, cell, vocab_size=V, seed=1, **settings):
        from charlm import model as models
        from charlm.engine import mx
        model = models.build(self.config(cell, **settings), vocab_size, mx.cpu())
        if seed is not None:
            randomize(model, seed)
        return model


@pytest.fixture
def tiny_model():
    """Builds tiny models: tiny_model("lstm", dropout=0.0)."""
    return TinyModels()


TEXT = "The quick brown fox jumps over the lazy dog.\nPack my box with five dozen liquor jugs!\n" * 30


@pytest.fixture
def corpus(tmp_path):
    path = tmp_path / "tiny.txt"
    path.write_text(TEXT, encoding="utf-8")
    return path


@pytest.fixture
def tiny_cfg(corpus):
    """A Config for a model small enough to train in a second."""
    cfg = recipe.fixed(config.Config())
    for key, value in TINY.items():
        section, name = key.split(".")
        setattr(getattr(cfg, section), name, value)
    cfg.data.path = str(corpus)
    cfg.data.lowercase = True  # the tests of training and generation were written for the lowercased text
    cfg.train.epochs, cfg.train.sample_every = 2, 0
    return cfg


@pytest.fixture
def saved_run(tiny_cfg, tmp_path):
    """(setup, run) of a run directory holding the checkpoint of one (untrained) epoch."""
    from charlm import checkpoint, run as runs, training as train
    from charlm.engine import mx
    s = train.setup(tiny_cfg, mx.cpu())
    r = runs.Run.create(tmp_path / "runs", "r1")
    r.start(tiny_cfg, s.vocab)
    checkpoint.save_epoch(r, s.model, train.make_trainer(s), {"epoch": 1, "train_loss": 2.0}, True)
    return s, r
