"""This machine's training speed: tokens per second of a config's model and batches, timed on random text by
the training loop itself, for the recipe to scale its speed table by."""
import copy
import gc
import time

import numpy as np

from . import parallel, training
from .engine import nd
from .errors import Interrupted
from .vocab import Vocab

WARMUP = 3  # batches before the clock starts: the graph is built and memory allocated in the first
STRETCH = 4  # batches between readings of the clock (each a host sync)


class _Stopwatch:
    """A training callback: the tokens/s of each STRETCH batches after WARMUP, until `seconds` are timed."""

    def __init__(self, seconds):
        self.seconds, self.timed, self.rates, self.mark = seconds, 0.0, [], None

    def on_batch(self, done, total, tokens, mean_loss):
        if done < WARMUP or (done - WARMUP) % STRETCH:
            return
        nd.waitall()
        now = time.perf_counter()
        if self.mark is not None:
            self.rates.append((tokens - self.mark[1]) / (now - self.mark[0]))
            self.timed += now - self.mark[0]
        self.mark = (now, tokens)

    def on_epoch(self, record, samples):
        self.mark = None  # the epoch's end is not training time

    def done(self):
        return self.timed >= self.seconds


def tokens_per_second(cfg, vocab_size, ctx, seconds=1.0):
    """Training tokens/s of cfg's model on ctx with cfg's batches (stream mode), timed over about `seconds`."""
    result = _timed(cfg, vocab_size, ctx, seconds)
    gc.collect()  # Gluon's blocks hold reference cycles: free the measured model before the run builds its own
    return result


def _timed(cfg, vocab_size, ctx, seconds):
    """tokens_per_second's measurement; its model is garbage when it returns."""
    cfg = copy.deepcopy(cfg)
    d, t = cfg.data, cfg.train
    t.time_limit, t.epochs, t.patience, t.sample_every = None, 10**6, 0, 0  # the clock of the run to come, not this
    d.val_frac, d.valid_path, d.test_path = 0.0, None, None
    ids = np.random.default_rng(0).integers(vocab_size, size=(WARMUP + 16 * STRETCH) * d.batch_size * d.seq_len + 1)
    corpus = Vocab([chr(i) for i in range(vocab_size)]), ids
    s = training.setup(cfg, ctx, parallel.Workers([ctx]), corpus=corpus)
    watch = _Stopwatch(seconds)
    try:
        training.fit(s, None, callbacks=[watch], stop=watch.done)
    except Interrupted:
        pass
    return float(np.median(watch.rates))  # a stretch slowed by another process's burst does not move the median
