"""The measurement of this machine's speed: it trains the config's model and leaves no trace on a run."""
import math

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
