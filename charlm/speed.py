"""This machine's training speed: tokens per second of a config's model and batches, timed on random text, for
the recipe to scale its speed table by."""
import copy
import gc

import numpy as np

from . import model as models, parallel, training

WARMUP = 3  # batches before the clock starts: the graph is built and memory allocated in the first
STRETCH = 4  # batches between readings of the clock (each a host sync)


def tokens_per_second(cfg, vocab_size, ctx, seconds=1.0):
    """Training tokens/s of cfg's model on ctx with cfg's batches (stream mode), timed over about `seconds`."""
    result = _timed(cfg, vocab_size, ctx, seconds)
    gc.collect()  # Gluon's blocks hold reference cycles: free the measured model before the run builds its own
    return result


def _timed(cfg, vocab_size, ctx, seconds):
    """tokens_per_second's measurement; its model is garbage when it returns."""
    cfg = copy.deepcopy(cfg)
    cfg.train.time_limit = None  # the clock of the run to come, not of this
    d = cfg.data
    ids = np.random.default_rng(0).integers(vocab_size, size=(WARMUP + 16 * STRETCH) * d.batch_size * d.seq_len + 1)
    s = training.Setup(cfg, None, ids, ids[:0], models.build(cfg.model, vocab_size, ctx), parallel.Workers([ctx]))
    if cfg.train.ema:
        s.ema = training.Average(s.model, ctx, cfg.train.ema)
    loop = training.Loop.of(s)
    batches = training.batches_of(cfg, None, ids, np.random.default_rng(0))
    epoch = training.Epoch(1, batches, training.Sums())
    done, _ = training.train_stretch(loop, epoch, 0, WARMUP)
    epoch.sums, rates = training.Sums(), []
    while epoch.sums.seconds < seconds:
        if done + STRETCH > len(batches):
            done = 0
        tokens, elapsed = epoch.sums.tokens, epoch.sums.seconds
        done, _ = training.train_stretch(loop, epoch, done, done + STRETCH)
        rates.append((epoch.sums.tokens - tokens) / (epoch.sums.seconds - elapsed))
    return float(np.median(rates))  # a stretch slowed by another process's burst does not move the median
