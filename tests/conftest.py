"""Shared fixtures: a tiny corpus and tiny settings, so every test runs in seconds on a CPU."""
import pytest

from charlm import configs as config, recipe



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


def without(args, flag):
    """args without the last `flag value` pair."""
    at = len(args) - 1 - args[::-1].index(flag)
    return args[:at] + args[at + 2:]
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
    cfg.data.path, cfg.data.seq_len, cfg.data.batch_size = str(corpus), 8, 4
    cfg.data.lowercase = True  # the tests of training and generation were written for the lowercased text
    cfg.model.hidden_size, cfg.model.embed_size, cfg.model.num_layers = 16, 8, 1
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
