"""Training: setup -> fit (epochs) -> train_epoch (stretches of batches between checkpoints) -> train_step
(one update on every device); evaluate; losses in nats per token."""
import logging
import math
import time
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

from . import checkpoint, configs, data, engine, generate, lines, model as models, optim, parallel
from .engine import autograd, mx, nd
from .errors import CharlmError, Interrupted
from .run import METRICS, STATE

log = logging.getLogger(__name__)
MAX_ROLLBACKS = 3
SAMPLE_PREFIX = {"char": 16, "word": 4}  # tokens of the validation text that epoch samples continue
SYNC_EVERY = 50  # batches between dist_sync workers' readings of rank 0's clock, under a time limit


def perplexity(loss):
    """Perplexity of a mean NLL in nats: exp(total NLL / total tokens)."""
    return math.exp(min(loss, 700.0))  # beyond e^700 a float overflows; such a model is lost anyway


def bits_per_char(loss):
    """Bits per character of a mean NLL in nats."""
    return loss / math.log(2)


def scores(prefix, loss, level="char"):
    """Metrics of a mean NLL in nats per token: {prefix}loss, {prefix}ppl, and at char level {prefix}bpc."""
    out = {f"{prefix}loss": loss, f"{prefix}ppl": perplexity(loss)}
    if level == "char":
        out[f"{prefix}bpc"] = bits_per_char(loss)
    return out


@dataclass
class Setup:
    """Everything a training run starts from."""
    cfg: object
    vocab: object
    train_ids: np.ndarray
    val_ids: np.ndarray
    model: object
    workers: parallel.Workers
    split_lines: int = 0
    test_ids: np.ndarray = None
    ema: object = None  # with train.ema, the Average of the model's weights

    @property
    def device(self):
        """The one device that evaluates and samples: the first of several."""
        return self.workers.ctxs[0]


def setup(cfg, ctx, workers=None, vocab=None):
    """Seed, read and split the corpus (or read the validation file; this worker's part of them), check it
    fills a batch, and build the model on ctx (a Context or several); the corpus is encoded with vocab when
    given, else with its own."""
    d = cfg.data
    workers = workers or parallel.Workers(ctx if isinstance(ctx, list) else [ctx])
    vocab, ids = data.corpus_of(d, vocab=vocab)
    if d.valid_path:
        train_ids, val_ids = ids, data.corpus_of(d, d.valid_path, vocab)[1]
    else:
        train_ids, val_ids = split_text(cfg, vocab, ids)
    train_ids, val_ids = workers.shards(train_ids, val_ids)
    split_lines = 0
    if d.mode == "lines":
        split_lines = batches_of(cfg, vocab, train_ids).num_split
    else:
        data.check_trainable(len(train_ids), d.batch_size, d.seq_len)
    if (d.val_frac or d.valid_path) and len(val_ids) < 2:
        raise CharlmError(f"validation text has {len(val_ids)} tokens; need at least 2: "
                          f"{'use a longer --valid-data' if d.valid_path else 'raise --val-frac'}")
    test_ids = data.corpus_of(d, d.test_path, vocab)[1] if d.test_path else None  # read now: fail early
    mx.random.seed(cfg.train.seed)
    model = models.build(cfg.model, len(vocab), ctx)
    ema = Average(model, workers.ctxs[0], cfg.train.ema) if cfg.train.ema else None
    return Setup(cfg, vocab, train_ids, val_ids, model, workers, split_lines, test_ids, ema)


def split_text(cfg, vocab, ids):
    """(training, validation) ids: the last val_frac of the text, at a line end in lines mode."""
    if cfg.data.mode == "lines":
        return lines.split(ids, cfg.data.val_frac, vocab.eos)
    return data.split(ids, cfg.data.val_frac)


def batches_of(cfg, vocab, ids, rng=None):
    """The batches of ids as cfg.data says: an epoch's order drawn from rng, or evaluation's fixed order."""
    d = cfg.data
    if d.mode == "lines":
        return lines.LineBatches(ids, vocab.bos, vocab.eos, d.batch_size, d.buckets, rng)
    if rng is None:
        return data.eval_batches(ids, d.batch_size, d.seq_len)
    return data.ITERATORS[d.iterator](ids, d.batch_size, d.seq_len, rng)


class Sums:
    """An epoch's running sums on the host: NLL, gradient norms, tokens, seconds (each stretch's on the device)."""

    def __init__(self, saved=None):
        saved = saved or {}
        self.nll, self.norm = saved.get("nll", 0.0), saved.get("grad_norm", 0.0)
        self.tokens, self.seconds = saved.get("tokens", 0), saved.get("train_s", 0.0)
        self.totals, self.norms = [], []  # the stretch's batches, on the device

    def add(self, total, norm, tokens):
        """One batch: its NLL sum and gradient norm (on the device) and its count of real targets."""
        self.totals.append(total)
        self.norms.append(norm)
        self.tokens += tokens
        engine.keep_up(self.totals)

    def mean_loss(self):
        """The mean NLL so far (a host sync)."""
        pending = float(nd.concat(*self.totals, dim=0).sum().asscalar()) if self.totals else 0.0
        return (self.nll + pending) / self.tokens

    def end_stretch(self, start, first):
        """Wait for the stretch (its one host sync), add it up; the index of its first non-finite batch, or None."""
        nd.waitall()
        self.seconds += time.perf_counter() - start
        if not self.totals:
            return None
        values = nd.concat(*self.totals, *self.norms, dim=0).asnumpy().astype(np.float64)
        totals, norms = np.split(values, 2)
        self.nll, self.norm = self.nll + float(totals.sum()), self.norm + float(norms.sum())
        self.totals, self.norms = [], []
        bad = np.flatnonzero(~np.isfinite(totals + norms))
        return first + int(bad[0]) if len(bad) else None

    def read(self):
        """The sums as plain numbers, as saved in a mid-epoch checkpoint (after end_stretch)."""
        return {"nll": self.nll, "grad_norm": self.norm, "tokens": self.tokens, "train_s": self.seconds}


def real_targets(y, batches):
    """How many targets of a batch's y are real (lines mode pads with targets below 0)."""
    return int((y >= 0).sum()) if batches.padded else y.size


def evaluate(model, ids, cfg, vocab, ctx):
    """Summed NLL and token count of ids with dropout off: carried-state streams, or padded lines."""
    batches = batches_of(cfg, vocab, ids)
    loss_fn = models.TokenNLL(masked=batches.padded)
    nll_sum, tokens, state = nd.zeros(1, ctx=ctx), 0, None
    for x, y, X, Y in engine.on_device(batches, 0, len(batches), ctx):
        if state is None or not batches.carries_state:
            state = model.begin_state(X.shape[1], ctx)
        logits, state = model(X, state)
        nll_sum += loss_fn(logits, Y).sum()
        tokens += real_targets(y, batches)
    return float(nll_sum.asscalar()), tokens


def test(s, run):
    """Score the test file with the run's best parameters; the scores are kept in state.json."""
    nll, tokens = evaluate(checkpoint.load_model(run, s.device), s.test_ids, s.cfg, s.vocab, s.device)
    result = {**scores("test_", nll / tokens, s.cfg.data.level), "test_tokens": tokens}
    run.write_state({**run.read_state(), "test": result})
    return result


def sample_prefixes(s):
    """The configured prefixes, or else the validation text's first few tokens (a new line in lines mode)."""
    if s.cfg.train.sample_prefixes:
        return s.cfg.train.sample_prefixes
    if s.cfg.data.mode == "lines":
        return [""]
    ids = s.val_ids if len(s.val_ids) else s.train_ids
    return [s.vocab.decode(ids[:SAMPLE_PREFIX[s.cfg.data.level]])]


def _samples(s):
    """Greedy continuations of the sample prefixes that the vocabulary can encode."""
    texts = []
    for prefix in sample_prefixes(s):
        try:
            ids = generate.encode_prefix(prefix, s.vocab, s.cfg.data)
        except CharlmError:
            continue  # the default prefixes are English; another corpus may lack their characters
        texts.append(generate.complete(s.model, s.vocab, ids, s.cfg.train.sample_length, s.device))
    return texts


@dataclass
class Progress:
    """Where a run stands: epochs and batches done, the next epoch's sums and state, the best, time, lr factor."""
    epoch: int = 0
    step: int = 0
    partial: dict = None
    hidden: list = None
    best: float = math.inf
    elapsed: float = 0.0
    lr_scale: float = 1.0
    rollbacks: int = 0
    best_epoch: int = 0


def checkpoint_metric(record):
    """The loss that picks the best checkpoint: validation loss, or training loss without validation."""
    return record.get("val_loss", record["train_loss"])


def restore(s, run, trainer):
    """Load the run's last checkpoint into s.model and trainer; return where it stands."""
    state = run.read_state()
    done, step, partial = state.get("epoch", 0), state.get("step", 0), state.get("partial")
    # the records up to the checkpoint: of the epochs it finished, and a time limit's within the next, to its step
    records = [r for r in run.metrics() if r["epoch"] <= done or r["epoch"] == done + 1 and r.get("step", 1e18) <= step]
    ends = [r for r in records if "step" not in r]
    if done and (not ends or ends[-1]["epoch"] != done):
        raise CharlmError(f"{run.path / METRICS} is damaged: it has no line for epoch {done}, the last "
                          f"checkpoint's; its best loss is unknown")
    progress = Progress(lr_scale=state.get("lr_scale", 1.0))
    if done or step:
        hidden = checkpoint.load_last(run, s.model, trainer, s.workers.ctxs, s.ema)
        try:
            elapsed = partial["elapsed_s"] if partial else ends[-1]["elapsed_s"]
            best = min(map(checkpoint_metric, records), default=math.inf)
            best_epoch = next((r["epoch"] for r in records if checkpoint_metric(r) == best), 0)
        except (KeyError, TypeError):
            raise CharlmError(f"{run.path / METRICS} or {run.path / STATE} is damaged: a loss or elapsed time "
                              f"is missing") from None
        progress = Progress(done, step, partial, hidden, best, elapsed, progress.lr_scale, best_epoch=best_epoch)
    run.write_metrics(records)  # without lines past the checkpoint: a kill after an epoch's line, before its own
    return progress


def _stretch_seed(seed, epoch, step):
    """The dropout seed from `step` of `epoch` on: a run resumed at a checkpoint draws the same masks."""
    # reseeded at every checkpoint boundary, as MXNet cannot save its generator's state
    return int(np.random.default_rng([seed, epoch, step]).integers(2**31))


def objective_of(s):
    """The setup's objective: masked in lines mode; the NLL's mean over the update's batches, or its sum."""
    d, t = s.cfg.data, s.cfg.train
    return models.objective(s.model, masked=d.mode == "lines", mean=t.loss_reduction == "mean",
                            share=s.workers.share)


def make_trainer(s):
    """A Gluon Trainer for the setup's model, optimizer and learning rate, over its devices and workers."""
    return s.workers.trainer(s.model.collect_params(), s.cfg.train)


class Callbacks:
    """Hooks by name (on_start, on_batch, on_epoch) of some objects, each optional, and stop()."""

    def __init__(self, callbacks=(), stop=None):
        self.stop, self.callbacks = stop or (lambda: False), callbacks

    def __call__(self, name, *args):
        for callback in self.callbacks:
            getattr(callback, name, _ignore)(*args)


def _ignore(*args):
    """A hook a callback does not have."""


class Average:
    """The moving average of the model's weights (train.ema), kept on the first device and swapped into the model
    to be scored or saved: no second model, whose evaluation would hold its own buffers."""

    def __init__(self, model, ctx, decay):
        self.model, self.ctx, self.decay = model, ctx, decay
        self.values = [w.data(ctx).copy() for w in model.collect_params().values()]
        self.pairs = []

    def bind(self):
        """Pair each average with its weight on the first device (a rollback may have made new arrays)."""
        self.pairs = list(zip(self.values, (w.data(self.ctx) for w in self.model.collect_params().values())))

    def reset(self):
        """Start the average at the model's weights."""
        self.bind()
        for a, w in self.pairs:
            w.copyto(a)

    def update(self):
        """average = decay * average + (1 - decay) * weight, in place."""
        for a, w in self.pairs:
            a *= self.decay
            a += w * (1 - self.decay)

    @contextmanager
    def swapped(self):
        """The model with the averaged weights on every device, its own put back after."""
        params = list(self.model.collect_params().values())
        kept = [w.data(self.ctx).copy() for w in params]  # every device holds the same weights
        try:
            _copy_into(params, self.values)
            yield self.model
        finally:
            _copy_into(params, kept)

    def save_parameters(self, path):
        """Save the averaged weights as the model's parameter file."""
        with self.swapped() as model:
            model.save_parameters(path)

    def load_parameters(self, path, ctx):
        """Load a parameter file (save_parameters') as the averaged weights."""
        with self.swapped() as model:
            model.load_parameters(path, ctx=ctx)
            for a, w in zip(self.values, model.collect_params().values()):
                w.data(self.ctx).copyto(a)


def _copy_into(params, values):
    """Copy values into each parameter on every device (not set_data, which resets a kvstore that updates)."""
    for w, value in zip(params, values):
        for array in w.list_data():
            value.copyto(array)


@dataclass
class Loop:
    """What fit trains with: setup, run (None: save nothing), trainer, objective, callbacks, clock, limit."""
    s: Setup
    run: object
    trainer: object
    objective: object
    calls: Callbacks
    start: float
    limit: float = None
    seconds: float = None
    timed_out: bool = False

    @classmethod
    def of(cls, s, run=None, trainer=None, callbacks=(), stop=None, elapsed=0.0):
        """The loop for a setup: a new trainer unless given, the clock started `elapsed` seconds ago."""
        t = s.cfg.train
        return cls(s, run, trainer or make_trainer(s), objective_of(s), Callbacks(callbacks, stop),
                   time.perf_counter() - elapsed, configs.duration(t.time_limit) if t.time_limit else None)

    def elapsed(self):
        """Training seconds of the run so far, earlier sessions included."""
        return time.perf_counter() - self.start

    def out_of_time(self, i):
        """Whether the time limit is spent before batch i; under dist_sync, rank 0's clock every SYNC_EVERY batches."""
        if self.limit is None:
            return False
        w = self.s.workers
        if w.kv is None or w.is_async:
            self.seconds = self.elapsed()
        elif i % SYNC_EVERY == 0 or self.seconds is None:
            self.seconds = w.from_rank0(self.elapsed())
        self.timed_out = self.seconds >= self.limit
        return self.timed_out


@dataclass
class Epoch:
    """An epoch in training: its number, batches, running sums and carried state (whole, on the first device)."""
    number: int
    batches: object
    sums: Sums
    state: list = None
    lr: float = 0.0  # before a per-update schedule's factors
    first: int = 0  # the batch it starts from: 0, or a checkpoint's step
    stopped_at: int = None  # batches done when the time limit ended it early


def train_step(loop, grads, batch, states, drop=None):
    """One update on every device: (weight drop,) record, backward, sum, clip, step; (NLL sum, norm before clipping,
    states)."""
    if drop:
        drop.drop()
    try:
        with autograd.record():
            outs = [loop.objective(X, Y, state) for (X, Y), state in zip(batch, states)]
        # No isfinite check: it would force a host sync every step; divergence is caught per stretch.
        autograd.backward([loss for _, loss, _ in outs])
    finally:  # a Ctrl-C here must not leave the dropped weights to be saved
        if drop:
            drop.restore()
    w = loop.s.workers
    norm = w.update(loop.trainer, grads, loop.s.cfg.train.grad_clip)
    if loop.s.ema:
        loop.s.ema.update()
    return w.gather([total for total, _, _ in outs]), norm, [state for _, _, state in outs]


def update_lr(loop, epoch, i):
    """The learning rate of batch i of the epoch: epoch.lr times the cosine's and the warmup's factors."""
    t = loop.s.cfg.train
    update = (epoch.number - 1) * len(epoch.batches) + i + 1  # of the run, from 1
    lr = epoch.lr
    if t.lr_schedule == "cosine":
        # over the time limit or the epochs, whichever the run reaches first
        done = (update - 1) / (t.epochs * len(epoch.batches))
        done = max(done, loop.seconds / loop.limit) if loop.limit else done
        lr *= optim.cosine(done)
    return max(lr * optim.ramp(update, t.warmup), configs.MIN_LR)


def train_stretch(loop, epoch, first, end):
    """Train epoch.batches[first:end] until a stop or the time limit; (batches done, first non-finite or None)."""
    w, model, batches, sums = loop.s.workers, loop.s.model, epoch.batches, epoch.sums
    params = [p for p in model.collect_params().values() if p.grad_req != "null"]
    grads = [[p.grad(ctx).reshape((-1,)) for p in params] for ctx in w.ctxs]  # flat views, made once
    drop = models.WeightDrop.of(model, w.ctxs)
    states = w.split_state(model, epoch.state) if batches.carries_state and epoch.state else None
    per_update = loop.s.cfg.train.lr_schedule == "cosine" or loop.s.cfg.train.warmup
    if loop.s.ema:
        loop.s.ema.bind()
    i, start = first, time.perf_counter()
    for x, y, X, Y in engine.on_device(batches, first, end, w.ctxs[0]):
        if loop.out_of_time(i) or loop.calls.stop():
            break
        if per_update:
            loop.trainer.set_learning_rate(update_lr(loop, epoch, i))  # a float on the host: no sync
        batch = w.split(X, Y)
        if states is None or not batches.carries_state:
            states = [model.begin_state(part.shape[1], part.context) for part, _ in batch]
        else:
            states = [[h.detach() for h in state] for state in states]  # truncated BPTT: keep values, cut graph
        total, norm, states = train_step(loop, grads, batch, states, drop)
        sums.add(total, norm, real_targets(y, batches))
        i += 1
        loop.calls("on_batch", i, len(batches), sums.tokens, sums.mean_loss)
    if states is not None:
        epoch.state = w.join_state(model, states)
    return i, sums.end_stretch(start, first)


class _Diverged(Exception):
    """A batch's loss or gradient norm was not finite: args[0] is its step, counted over the run."""


def train_epoch(loop, p):
    """Train the rest of the next epoch, a checkpointed stretch at a time; the epoch (stopped_at: the time limit)."""
    s, t, number = loop.s, loop.s.cfg.train, p.epoch + 1
    rng = np.random.default_rng([t.seed, number])  # batch order and dropout from (seed, epoch) alone: replayable
    epoch_seed = int(rng.integers(2**31))
    epoch = Epoch(number, batches_of(s.cfg, s.vocab, s.train_ids, rng), Sums(p.partial), p.hidden, base_lr(t, p),
                  p.step)
    every, step = t.checkpoint_every or len(epoch.batches), p.step
    while step < len(epoch.batches):
        s.workers.seed(_stretch_seed(t.seed, number, step) if step else epoch_seed)
        end = min(len(epoch.batches), (step // every + 1) * every)
        done, bad = train_stretch(loop, epoch, step, end)
        if bad is not None:
            raise _Diverged((number - 1) * len(epoch.batches) + bad + 1)
        if done == len(epoch.batches):
            break
        if done > step:  # a checkpoint boundary, or a stop with batches trained since the last checkpoint
            p.step, p.partial, p.hidden = done, {**epoch.sums.read(), "elapsed_s": loop.elapsed()}, epoch.state
            if loop.run:
                checkpoint.save_position(loop.run, s.model, loop.trainer, p.epoch, done, p.partial,
                                         epoch.state if epoch.batches.carries_state else None, p.lr_scale, s.ema)
        if done < end:
            if loop.timed_out:
                epoch.stopped_at = done
                return epoch
            raise Interrupted()
        step = done
    return epoch


def _val_loss(s, model):
    """The validation loss of model, over every worker's part of the text."""
    nll, tokens = s.workers.allsum(*evaluate(model, s.val_ids, s.cfg, s.vocab, s.device))
    return nll / tokens


def validation(s):
    """(validation scores, their model): the average's or the weights', whichever loss is lower (train.ema)."""
    loss, level = _val_loss(s, s.model), s.cfg.data.level
    if s.ema is None:
        return scores("val_", loss, level), s.model
    with s.ema.swapped() as model:
        averaged = _val_loss(s, model)
    chosen = s.ema if averaged < loss else s.model
    return {**scores("val_", min(loss, averaged), level), "val_loss_raw": loss, "val_loss_ema": averaged}, chosen


def _record(loop, epoch, batches):
    """(record, model to save as best): the training sums over `batches` of the epoch and validation scores."""
    s, level = loop.s, loop.s.cfg.data.level
    stats = epoch.sums.read()
    nll, tokens = s.workers.allsum(stats["nll"], stats["tokens"])
    record = {"epoch": epoch.number, **scores("train_", nll / tokens, level), "lr": loop.trainer.learning_rate,
              "grad_norm": stats["grad_norm"] / batches, "tokens_per_s": tokens / stats["train_s"]}
    chosen = s.model
    if len(s.val_ids):
        val, chosen = validation(s)
        record.update(val)
    record["elapsed_s"] = loop.elapsed()
    if not all(math.isfinite(record[k]) for k in ("train_loss", "val_loss") if k in record):
        raise CharlmError(f"training diverged in epoch {epoch.number} (validation loss {record.get('val_loss')}); "
                          f"the best and last good checkpoints are kept: lower --lr or set --grad-clip")
    return record, chosen


def end_at_limit(loop, p, epoch):
    """Score the weights a time limit stopped at mid-epoch (the cosine's end): a record with "step"; best if best."""
    record, chosen = _record(loop, epoch, epoch.stopped_at)
    record["step"] = epoch.stopped_at
    metric = checkpoint_metric(record)
    if loop.run:
        checkpoint.save_at_limit(loop.run, record, metric < p.best, chosen)
    if metric < p.best:
        p.best, p.best_epoch = metric, epoch.number
    return record


def end_epoch(loop, p, epoch):
    """The epoch's record (training sums over the workers, validation scores); checkpoint it, move p on."""
    s = loop.s
    record, chosen = _record(loop, epoch, len(epoch.batches))
    metric = checkpoint_metric(record)
    if metric >= p.best:
        p.lr_scale *= s.cfg.train.plateau_factor  # no better than the best so far: anneal (off at 1)
    if loop.run:
        checkpoint.save_epoch(loop.run, s.model, loop.trainer, record, is_best=metric < p.best, lr_scale=p.lr_scale,
                              best=chosen, ema=s.ema)
    if metric < p.best:
        p.best, p.best_epoch = metric, epoch.number
    p.epoch, p.step, p.partial, p.hidden, p.elapsed = epoch.number, 0, None, None, record["elapsed_s"]
    return record


def _recover(loop, p, epoch, step):
    """After a non-finite loss: stop with an error, or roll back to the last checkpoint at half the rate."""
    s, run = loop.s, loop.run
    if s.cfg.train.on_divergence == "stop" or p.rollbacks == MAX_ROLLBACKS:
        raise CharlmError(f"training diverged at step {step} (epoch {epoch}): the loss or gradient norm is not "
                          f"finite; the best and last good checkpoints are kept: lower --lr, set --grad-clip, "
                          f"or use --on-divergence rollback")
    rollbacks, lr_scale = p.rollbacks + 1, p.lr_scale / 2
    log.warning("diverged at step %d (epoch %d): back to the last checkpoint, learning rate x%g (rollback %d of %d)",
                step, epoch, lr_scale, rollbacks, MAX_ROLLBACKS)
    if run and run.read_state().get("last"):
        p = restore(s, run, loop.trainer)
    else:
        mx.random.seed(s.cfg.train.seed)  # no checkpoint yet: start over from the same initial weights
        s.model.initialize(mx.init.Xavier(), ctx=s.workers.ctxs, force_reinit=True)
        loop.trainer, p = make_trainer(s), Progress()
        if loop.s.ema:
            loop.s.ema.reset()
    p.rollbacks, p.lr_scale = rollbacks, lr_scale
    if run:
        run.write_state({**run.read_state(), "lr_scale": lr_scale})  # a resume keeps it, checkpoint or not
    return p


def base_lr(t, p):
    """The next epoch's learning rate before per-update factors: decayed per epoch under exp, times lr_scale."""
    return t.lr * p.lr_scale * (t.lr_decay ** p.epoch if t.lr_schedule == "exp" else 1.0)


def _patience_spent(t, p):
    """Whether train.patience epochs have passed without a better checkpoint metric (early stopping)."""
    if not (t.patience and p.epoch - p.best_epoch >= t.patience):
        return False
    log.info("stopping early: no better loss in the %d epochs since epoch %d, the best", t.patience, p.best_epoch)
    return True


def fit(s, run, trainer=None, progress=None, callbacks=(), stop=None):
    """Train up to cfg.train.epochs (from `progress` when resuming), checkpointing into run (None: save
    nothing) every train.checkpoint_every batches and after each epoch, evaluating and sampling after each
    epoch, until the time limit or the patience runs out; return the best checkpoint metric. Once stop() is
    true, saves a checkpoint and raises Interrupted."""
    t, p = s.cfg.train, progress or Progress()
    loop = Loop.of(s, run, trainer, callbacks, stop, p.elapsed)
    if loop.s.ema and not (p.epoch or p.step):
        loop.s.ema.reset()
    while p.epoch < t.epochs and not _patience_spent(t, p):
        # Decay stops at the smallest learning rate charlm takes: MXNet's updates refuse much smaller ones.
        loop.trainer.set_learning_rate(max(base_lr(t, p), configs.MIN_LR))
        try:
            epoch = train_epoch(loop, p)
        except _Diverged as e:
            p = _recover(loop, p, p.epoch + 1, e.args[0])
            continue
        if epoch.stopped_at is not None:
            log.info("time limit %s reached in epoch %d; its checkpoint resumes with --resume and a longer "
                     "--time-limit", t.time_limit, p.epoch + 1)
            # not when no batch trained since the last record, nor under dist_async, whose workers stop apart
            if epoch.stopped_at > epoch.first and not s.workers.is_async:
                loop.calls("on_epoch", end_at_limit(loop, p, epoch), [])
            break
        record = end_epoch(loop, p, epoch)
        loop.calls("on_epoch", record, _samples(s) if t.sample_every and epoch.number % t.sample_every == 0 else [])
    return p.best
