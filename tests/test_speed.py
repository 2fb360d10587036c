"""The measurement of this machine's speed: it trains the config's model and leaves no trace on a run."""
import math
from types import SimpleNamespace

import pytest

from charlm import speed, training as train
from charlm.engine import mx


def test_the_measurement_times_training_and_leaves_the_run_that_follows_as_it_would_be(tiny_cfg):
    def first_epoch():
        s = train.setup(tiny_cfg, mx.cpu())
        tiny_cfg.train.epochs = 1
        train.fit(s, None)
        return [p.data().asnumpy() for p in s.model.collect_params().values()]

    alone = first_epoch()
    tokens_per_s = speed.tokens_per_second(tiny_cfg, 30, mx.cpu(), seconds=0.2)
    assert math.isfinite(tokens_per_s) and tokens_per_s > 0
    after = first_epoch()
    assert all((a == b).all() for a, b in zip(alone, after))


def test_a_stretch_slowed_by_something_else_does_not_move_the_measurement(tiny_cfg, monkeypatch):
    stretches = iter([0.05] * 3 + [2.0] + [0.05] * 100)  # one stretch 40 times slower than the others
    now = [0.0]

    def perf_counter():
        now[0] += next(stretches)
        return now[0]

    monkeypatch.setattr(speed, "time", SimpleNamespace(perf_counter=perf_counter,
                                                       thread_time=lambda: 0.0))
    tokens = speed.STRETCH * tiny_cfg.data.batch_size * tiny_cfg.data.seq_len
    assert speed.tokens_per_second(tiny_cfg, 30, mx.cpu(), seconds=1.0) == pytest.approx(tokens / 0.05)


def test_a_config_that_diverges_is_still_timed(tiny_cfg):
    tiny_cfg.train.optimizer, tiny_cfg.train.lr, tiny_cfg.train.grad_clip = "sgd", 3e38, 0.0  # inf weights: NaN
    assert math.isfinite(speed.tokens_per_second(tiny_cfg, 30, mx.cpu(), seconds=0.2))
