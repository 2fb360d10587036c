"""This machine's training speed, timed on the training loop itself: tokens per second of a config's model and
batches on random text, for the recipe to scale its speed table by, and the Stopwatch that times any setup."""
import copy
import gc
import time

import numpy as np

from . import parallel, training
from .engine import nd
from .errors import Interrupted, TrainingDiverged
from .vocab import UNK, WORD_EOS, Vocab, WordVocab

WARMUP = 3  # batches before the clock starts: the graph is built and memory allocated in the first
STRETCH = 4  # batches between readings of the clock (each a host sync)


class Stopwatch:
    """A training callback that times the loop: after `warmup` batches, a host sync every `every` batches and at
    each epoch's last, and the tokens/s of each stretch between them, until `seconds` of timed training (or
    `batches` timed batches). An epoch's end (validation, checkpoint) is not timed."""

    def __init__(self, warmup=WARMUP, every=STRETCH, seconds=None, batches=None):
        self.warmup, self.every, self.limit, self.most = warmup, every, seconds, batches
        self.seen, self.mark = 0, None
        self.rates, self.tokens, self.seconds, self.host, self.batches = [], 0, 0.0, 0.0, 0
        self.losses = []  # the epoch's running mean loss at each reading

    def on_batch(self, done, total, tokens, mean_loss):
        self.seen += 1
        due = self.mark is None or self.seen - self.mark[3] >= self.every or done == total
        if self.seen < self.warmup or not due:
            return
        nd.waitall()
        now, cpu = time.perf_counter(), time.thread_time()
        if self.mark is not None:
            start, start_cpu, start_tokens, start_batch = self.mark
            self.rates.append((tokens - start_tokens) / (now - start))
            self.tokens, self.seconds = self.tokens + tokens - start_tokens, self.seconds + now - start
            self.host, self.batches = self.host + cpu - start_cpu, self.batches + self.seen - start_batch
            self.losses.append(mean_loss())
        self.mark = None if done == total else (now, cpu, tokens, self.seen)

    def done(self):
        """Whether the timing is complete: the loop's stop()."""
        return (self.limit is not None and self.seconds >= self.limit
                or self.most is not None and self.batches >= self.most)


def time_loop(s, watch):
    """Train setup s (no run directory) until the Stopwatch is done, or the loss diverges (as fast as any other:
    the timing stands); the Stopwatch."""
    try:
        training.fit(s, None, callbacks=[watch], stop=watch.done)
    except (Interrupted, TrainingDiverged):
        pass
    return watch


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
    t.on_divergence = "stop"
    d.val_frac, d.valid_path, d.test_path = 0.0, None, None
    ids = np.random.default_rng(0).integers(vocab_size, size=(WARMUP + 16 * STRETCH) * d.batch_size * d.seq_len + 1)
    vocab = WordVocab([UNK, WORD_EOS, *map(str, range(vocab_size - 2))]) if d.level == "word" else Vocab(
        [chr(i) for i in range(vocab_size)])  # a word vocabulary may be larger than there are characters
    s = training.setup(cfg, ctx, parallel.Workers([ctx]), corpus=(vocab, ids))
    # a stretch slowed by another process's burst does not move the median
    return float(np.median(time_loop(s, Stopwatch(seconds=seconds)).rates))
