"""Training: fit (epochs, evaluation, checkpoints) -> train_epoch (batches) -> train_step (one update on every
device); evaluate; losses in nats per token. Where a run stands is one printable State."""
import gc
import logging
import math
import time
from dataclasses import dataclass, field

import numpy as np

from . import checkpoint, configs, data, engine, generate, model as models, optim, parallel
from .engine import Sums, autograd, mx, nd
from .errors import CharlmError, Interrupted, TrainingDiverged
from .run import checkpoint_metric, scores

log = logging.getLogger(__name__)
MAX_ROLLBACKS = 3
# MXNet's calls leave reference cycles that outlive Python's young generations, holding their arrays until a
# full collection, which a training loop's few Python objects rarely trigger: collect every this many batches
COLLECT_EVERY = 100
# Patience waits for the average as well as the best: a long average keeps improving, from behind the weights,
# after the weights have stopped.
PATIENT = ("val_loss_raw", "val_loss_ema")


@dataclass
class Setup:
    """Everything a training run trains with: config, text, model, devices, trainer and weight average."""
    cfg: object
    vocab: object
    train_ids: np.ndarray
    val_ids: np.ndarray
    model: object
    workers: parallel.Workers
    split_lines: int = 0
    test_ids: np.ndarray = None
    ema: object = None  # with train.ema, the optim.Average of the model's weights
    trainer: object = None

    @property
    def device(self):
        """The one device that evaluates and samples: the first of several."""
        return self.workers.ctxs[0]


def setup(cfg, ctx, workers=None, vocab=None, corpus=None):
    """Seed, split the corpus (the (vocab, ids) given, else read as cfg.data says and encoded with vocab when
    given; this worker's part), check it fills a batch, and build the model and its trainer on ctx (a Context
    or several)."""
    d = cfg.data
    workers = workers or parallel.Workers(ctx if isinstance(ctx, list) else [ctx])
    vocab, ids = corpus or data.corpus_of(d, vocab=vocab)
    if d.valid_path:
        train_ids, val_ids = ids, data.corpus_of(d, d.valid_path, vocab)[1]
    else:
        train_ids, val_ids = data.split_corpus(cfg, vocab, ids)
    train_ids, val_ids = workers.shards(train_ids, val_ids)
    split_lines = 0
    if d.mode == "lines":
        split_lines = data.batches(cfg, vocab, train_ids).num_split
    else:
        data.check_trainable(len(train_ids), d.batch_size, d.seq_len)
    if (d.val_frac or d.valid_path) and len(val_ids) < 2:
        raise CharlmError(f"validation text has {len(val_ids)} tokens; need at least 2: "
                          f"{'use a longer --valid-data' if d.valid_path else 'raise --val-frac'}")
    test_ids = data.corpus_of(d, d.test_path, vocab)[1] if d.test_path else None  # read now: fail early
    mx.random.seed(cfg.train.seed)
    model = models.build(cfg.model, len(vocab), ctx)
    ema = optim.Average(model, workers.ctxs[0], cfg.train.ema) if cfg.train.ema else None
    s = Setup(cfg, vocab, train_ids, val_ids, model, workers, split_lines, test_ids, ema)
    s.trainer = make_trainer(s)
    return s


def make_trainer(s):
    """A Gluon Trainer for the setup's model, optimizer and learning rate, over its devices and workers."""
    return s.workers.trainer(s.model.collect_params(), s.cfg.train)


@dataclass
class State:
    """Where a run stands: epochs done; batches done of the next, their sums and carried state; the best
    checkpoint metric; the losses patience watches and the last epoch that lowered one; training seconds; the
    learning-rate factor and rollbacks so far."""
    epoch: int = 0
    step: int = 0
    sums: Sums = field(default_factory=Sums)
    hidden: list = field(default=None, repr=False)  # whole, on the first device
    best: float = math.inf
    lowest: dict = field(default_factory=dict)  # the lowest of each loss patience watches (PATIENT)
    improved: int = 0  # the last epoch that lowered one of them
    elapsed: float = 0.0
    lr_scale: float = 1.0
    rollbacks: int = 0


def restore(s, run):
    """Load the run's last checkpoint into the setup (model, trainer, average); the State it stands at."""
    where = checkpoint.restore(run, s.model, s.trainer, s.workers.ctxs, s.ema)
    state = State(sums=Sums.of(where.pop("partial", None)), **where)
    for record in run.metrics():  # those up to the checkpoint
        if "step" not in record and lowered(state.lowest, record):
            state.improved = record["epoch"]
    return state


def lowered(lowest, record):
    """Whether an epoch's record lowers one of the losses patience watches, each lowest kept in `lowest`."""
    losses = {"best": checkpoint_metric(record), **{k: record[k] for k in PATIENT if k in record}}
    fell = {k: v for k, v in losses.items() if v < lowest.get(k, math.inf)}
    lowest.update(fell)
    return bool(fell)


def real_targets(y, batches):
    """How many targets of a batch's y are real (lines mode pads with targets below 0)."""
    return int((y >= 0).sum()) if batches.padded else y.size


def evaluate(model, ids, cfg, vocab, ctx):
    """Summed NLL and token count of ids with dropout off: carried-state streams, or padded lines."""
    batches = data.batches(cfg, vocab, ids)
    loss_fn = models.TokenNLL(masked=batches.padded)
    nll_sum, tokens, state = nd.zeros(1, ctx=ctx), 0, None
    for x, y, X, Y in engine.on_device(batches, 0, len(batches), ctx):
        if state is None or not batches.carries_state:
            state = model.begin_state(X.shape[1], ctx)
        logits, state = model(X, state)
        nll_sum += loss_fn(logits, Y).sum()
        tokens += real_targets(y, batches)
    return float(nll_sum.asscalar()), tokens


class Callbacks:
    """Hooks by name (on_start, on_batch, on_epoch) of some objects, each optional, and stop()."""

    def __init__(self, callbacks=(), stop=None):
        self.stop, self.callbacks = stop or (lambda: False), callbacks

    def __call__(self, name, *args):
        for callback in self.callbacks:
            getattr(callback, name, _ignore)(*args)


def _ignore(*args):
    """A hook a callback does not have."""


def objective_of(s):
    """The setup's objective: masked in lines mode; the NLL's mean over the update's batches, or its sum."""
    return models.objective(s.model, masked=s.cfg.data.mode == "lines", mean=s.cfg.train.loss_reduction == "mean",
                            share=s.workers.share)


def train_step(s, objective, grads, batch, states, drop=None):
    """One update on every device: (weight drop,) record, backward, sum, clip, step; (NLL sum, norm before clipping,
    states)."""
    if drop:
        drop.drop()
    try:
        with autograd.record():
            outs = [objective(X, Y, state) for (X, Y), state in zip(batch, states)]
        # No isfinite check: it would force a host sync every step; divergence is caught per stretch.
        autograd.backward([loss for _, loss, _ in outs])
    finally:  # a Ctrl-C here must not leave the dropped weights to be saved
        if drop:
            drop.restore()
    norm = s.workers.update(s.trainer, grads, s.cfg.train.grad_clip)
    if s.ema:
        s.ema.update()
    return s.workers.gather([total for total, _, _ in outs]), norm, [state for _, _, state in outs]


def lr_at(s, state, clock, update, updates_per_epoch):
    """The learning rate of update `update` of the run (from 1): the epoch's, times the cosine's and warmup's."""
    t = s.cfg.train
    lr = base_lr(t, state)
    if t.lr_schedule == "cosine":
        # over the time limit or the epochs, whichever the run reaches first
        done = (update - 1) / (t.epochs * updates_per_epoch)
        done = max(done, clock.seconds / clock.limit) if clock.limit else done
        lr *= optim.cosine(done)
    return max(lr * optim.ramp(update, t.warmup), configs.MIN_LR)


class Diverged(Exception):
    """A batch's loss or gradient norm was not finite: args[0] is its step, counted over the run."""


def stretch_seed(seed, epoch, step):
    """The dropout seed from `step` of `epoch` on: a run resumed at a checkpoint draws the same masks."""
    # reseeded at every checkpoint boundary, as MXNet cannot save its generator's state
    return int(np.random.default_rng([seed, epoch, step]).integers(2**31))


def train_epoch(s, state, run, clock, calls):
    """Train the rest of the next epoch, checkpointing every train.checkpoint_every batches; the batches done
    and the epoch's count (fewer done: the time limit ended it)."""
    t, w, model, number = s.cfg.train, s.workers, s.model, state.epoch + 1
    rng = np.random.default_rng([t.seed, number])  # batch order and dropout from (seed, epoch) alone: replayable
    epoch_seed = int(rng.integers(2**31))
    batches = data.batches(s.cfg, s.vocab, s.train_ids, rng)
    every, first = t.checkpoint_every or len(batches), state.step
    objective = objective_of(s)
    params = [p for p in model.collect_params().values() if p.grad_req != "null"]
    grads = [[p.grad(ctx).reshape((-1,)) for p in params] for ctx in w.ctxs]  # flat views, made once
    drop = models.WeightDrop.of(model, w.ctxs)
    states = w.split_state(model, state.hidden) if batches.carries_state and state.hidden else None
    per_update = t.lr_schedule == "cosine" or t.warmup
    if s.ema:
        s.ema.bind()
    i, start = first, time.perf_counter()
    w.seed(stretch_seed(t.seed, number, i) if i else epoch_seed)
    for x, y, X, Y in engine.on_device(batches, first, len(batches), w.ctxs[0]):
        if clock.out_of_time(i) or calls.stop():
            break
        if per_update:  # a float on the host: no sync
            s.trainer.set_learning_rate(lr_at(s, state, clock, (number - 1) * len(batches) + i + 1, len(batches)))
        batch = w.split(X, Y)
        if states is None or not batches.carries_state:
            states = [model.begin_state(part.shape[1], part.context) for part, _ in batch]
        else:
            states = [[h.detach() for h in device] for device in states]  # truncated BPTT: keep values, cut graph
        total, norm, states = train_step(s, objective, grads, batch, states, drop)
        state.sums.add(total, norm, real_targets(y, batches))
        i += 1
        if i % COLLECT_EVERY == 0:
            gc.collect()
        calls("on_batch", i, len(batches), state.sums.tokens, state.sums.mean_loss)
        if i % every == 0 or i == len(batches):
            _end_stretch(s, state, run, clock, batches, states, start, i)
            if i < len(batches):
                w.seed(stretch_seed(t.seed, number, i))
            start = time.perf_counter()
    else:
        return i, len(batches)
    if i > state.step:  # stopped with batches trained since the last checkpoint
        _end_stretch(s, state, run, clock, batches, states, start, i)
    if clock.timed_out:
        return i, len(batches)
    raise Interrupted()


def _end_stretch(s, state, run, clock, batches, states, start, i):
    """After batch i: add up the batches since the last checkpoint; checkpoint here unless the epoch is done."""
    bad = state.sums.end_stretch(start, state.step)
    if bad is not None:
        raise Diverged(state.epoch * len(batches) + bad + 1)
    state.hidden = s.workers.join_state(s.model, states) if states is not None else state.hidden
    if i == len(batches):
        return
    state.step = i
    if run:
        partial = {**state.sums.read(), "elapsed_s": clock.elapsed()}
        checkpoint.save_position(run, s.model, s.trainer, state.epoch, i, partial,
                                 state.hidden if batches.carries_state else None, state.lr_scale, s.ema)


def val_loss(s, model):
    """The validation loss of model, over every worker's part of the text."""
    nll, tokens = s.workers.allsum(*evaluate(model, s.val_ids, s.cfg, s.vocab, s.device))
    return nll / tokens


def validation(s):
    """(validation scores, their model): the average's or the weights', whichever loss is lower (train.ema)."""
    loss, level = val_loss(s, s.model), s.cfg.data.level
    if s.ema is None:
        return scores("val_", loss, level), s.model
    with s.ema.swapped() as model:
        averaged = val_loss(s, model)
    chosen = s.ema if averaged < loss else s.model
    return {**scores("val_", min(loss, averaged), level), "val_loss_raw": loss, "val_loss_ema": averaged}, chosen


def end_epoch(s, state, run, clock, done, total):
    """Score the epoch's `done` of `total` batches (training sums over the workers, validation) and checkpoint
    it; an epoch ended early by the time limit gets a record with "step" and stays unfinished; the record."""
    sums, level, number = state.sums.read(), s.cfg.data.level, state.epoch + 1
    nll, tokens = s.workers.allsum(sums["nll"], sums["tokens"])
    record = {"epoch": number, **scores("train_", nll / tokens, level), "lr": s.trainer.learning_rate,
              "grad_norm": sums["grad_norm"] / done, "tokens_per_s": tokens / sums["train_s"]}
    chosen = s.model
    if len(s.val_ids):
        val, chosen = validation(s)
        record.update(val)
        gc.collect()  # validation's cycles too (COLLECT_EVERY)
    record["elapsed_s"] = clock.elapsed()
    if not all(math.isfinite(record[k]) for k in ("train_loss", "val_loss") if k in record):
        raise TrainingDiverged(f"training diverged in epoch {number} (validation loss {record.get('val_loss')}); "
                               f"the best and last good checkpoints are kept: lower --lr or set --grad-clip")
    better = checkpoint_metric(record) < state.best
    if done < total:
        record["step"] = done
        if run:
            checkpoint.save_at_limit(run, record, better, chosen)
    else:
        if not better:
            state.lr_scale *= s.cfg.train.plateau_factor  # no better than the best so far: anneal (off at 1)
        if run:
            checkpoint.save_epoch(run, s.model, s.trainer, record, is_best=better, lr_scale=state.lr_scale,
                                  best=chosen, ema=s.ema)
        state.epoch, state.step, state.sums, state.hidden = number, 0, Sums(), None
        state.elapsed = record["elapsed_s"]
        if lowered(state.lowest, record):
            state.improved = number
    if better:
        state.best = checkpoint_metric(record)
    return record


def recover(s, state, run, step):
    """After a non-finite loss at `step`: stop with an error, or roll back to the last checkpoint (or the start)
    at half the rate; the State to go on from."""
    epoch = state.epoch + 1
    if s.cfg.train.on_divergence == "stop" or state.rollbacks == MAX_ROLLBACKS:
        raise TrainingDiverged(f"training diverged at step {step} (epoch {epoch}): the loss or gradient norm is "
                               f"not finite; the best and last good checkpoints are kept: lower --lr, set "
                               f"--grad-clip, or use --on-divergence rollback")
    rollbacks, lr_scale = state.rollbacks + 1, state.lr_scale / 2
    log.warning("diverged at step %d (epoch %d): back to the last checkpoint, learning rate x%g (rollback %d of %d)",
                step, epoch, lr_scale, rollbacks, MAX_ROLLBACKS)
    if run and run.read_state().get("last"):
        state = restore(s, run)
    else:
        mx.random.seed(s.cfg.train.seed)  # no checkpoint yet: start over from the same initial weights
        s.model.initialize(mx.init.Xavier(), ctx=s.workers.ctxs, force_reinit=True)
        s.trainer, state = make_trainer(s), State()
        if s.ema:
            s.ema.reset()
    state.rollbacks, state.lr_scale = rollbacks, lr_scale
    if run:
        run.write_state({**run.read_state(), "lr_scale": lr_scale})  # a resume keeps it, checkpoint or not
    return state


def base_lr(t, state):
    """The next epoch's learning rate before per-update factors: decayed per epoch under exp, times lr_scale."""
    return t.lr * state.lr_scale * (t.lr_decay ** state.epoch if t.lr_schedule == "exp" else 1.0)


def _patience_spent(t, state):
    """Whether train.patience epochs have passed without lowering the checkpoint metric, the weights' validation
    loss or their average's (early stopping)."""
    if not (t.patience and state.epoch - state.improved >= t.patience):
        return False
    log.info("stopping early: no lower loss in the %d epochs since epoch %d", t.patience, state.improved)
    return True


def fit(s, run, state=None, callbacks=(), stop=None):
    """Train up to cfg.train.epochs (from `state` when resuming), checkpointing into run (None: save nothing)
    every train.checkpoint_every batches and after each epoch, evaluating and sampling after each epoch, until
    the time limit or the patience runs out; return the best checkpoint metric. Once stop() is true, saves a
    checkpoint and raises Interrupted."""
    t, state = s.cfg.train, state or State()
    calls = Callbacks(callbacks, stop)
    clock = parallel.Clock(s.workers, configs.duration(t.time_limit) if t.time_limit else None, state.elapsed)
    if s.ema and not (state.epoch or state.step):
        s.ema.reset()
    while state.epoch < t.epochs and not _patience_spent(t, state):
        # Decay stops at the smallest learning rate charlm takes: MXNet's updates refuse much smaller ones.
        s.trainer.set_learning_rate(max(base_lr(t, state), configs.MIN_LR))
        first = state.step
        try:
            done, total = train_epoch(s, state, run, clock, calls)
        except Diverged as e:
            state = recover(s, state, run, e.args[0])
            continue
        if done < total:
            log.info("time limit %s reached in epoch %d; its checkpoint resumes with --resume and a longer "
                     "--time-limit", t.time_limit, state.epoch + 1)
            # not when no batch trained since the last record, nor under dist_async, whose workers stop apart
            if done > first and not s.workers.is_async:
                calls("on_epoch", end_epoch(s, state, run, clock, done, total), [])
            break
        record = end_epoch(s, state, run, clock, done, total)
        sampled = t.sample_every and record["epoch"] % t.sample_every == 0
        text = s.val_ids if len(s.val_ids) else s.train_ids
        calls("on_epoch", record, generate.samples(s.model, s.vocab, s.cfg, text, s.device) if sampled else [])
    return state.best
