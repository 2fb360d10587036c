"""Training: setup -> fit -> train_epoch -> train_step, and evaluate; losses in nats per token."""
import logging
import math
import time
from dataclasses import dataclass

import numpy as np

from . import data, generate, model as models, parallel
from .engine import autograd, gluon, mx, nd
from .errors import CharlmError

log = logging.getLogger(__name__)
MAX_ROLLBACKS = 3


def perplexity(loss):
    """Perplexity of a mean NLL in nats: exp(total NLL / total tokens)."""
    return math.exp(min(loss, 700.0))  # beyond e^700 a float overflows; such a model is lost anyway


def bits_per_char(loss):
    """Bits per character of a mean NLL in nats."""
    return loss / math.log(2)


def scores(prefix, loss):
    """Metrics of a mean NLL in nats: {prefix}loss, {prefix}ppl, {prefix}bpc."""
    return {f"{prefix}loss": loss, f"{prefix}ppl": perplexity(loss), f"{prefix}bpc": bits_per_char(loss)}


@dataclass
class Setup:
    """Everything a training run starts from."""
    cfg: object
    vocab: data.Vocab
    train_ids: np.ndarray
    val_ids: np.ndarray
    model: object
    ctx: object  # a Context, or a list of them when data-parallel
    workers: parallel.Workers = None  # None: one device in one process

    @property
    def device(self):
        """The one device that evaluates and samples: the first of several."""
        return self.ctx[0] if isinstance(self.ctx, list) else self.ctx


def setup(cfg, ctx, workers=None):
    """Seed, read and split the corpus (this worker's part of it), check it fills a batch, and build the model."""
    d = cfg.data
    vocab, ids = data.corpus_of(d)
    train_ids, val_ids = data.split(ids, d.val_frac)
    if workers:
        train_ids, val_ids = workers.shards(train_ids, val_ids)
    data.check_trainable(len(train_ids), d.batch_size, d.seq_len)
    if d.val_frac and len(val_ids) < 2:
        raise CharlmError(f"validation split has {len(val_ids)} characters; need at least 2: raise --val-frac")
    mx.random.seed(cfg.train.seed)
    model = models.build(cfg.model, len(vocab), ctx)
    return Setup(cfg, vocab, train_ids, val_ids, model, ctx, workers)


def train_step(model, loss_fn, trainer, grads, X, Y, state, tcfg):
    """One update: forward, backward, clip by global norm, step. Returns (NLL sum, norm, state) on device."""
    with autograd.record():
        logits, state = model(X, state)
        nll = loss_fn(logits, Y)  # (T, N)
        total = nll.sum()
        # "sum" is the tutorial's scaling: lr and clip apply to the gradient of the summed loss.
        loss = total if tcfg.loss_reduction == "sum" else total / nll.size
    loss.backward()
    # No isfinite check: it would force a host sync every step; divergence is caught per epoch.
    norm = gluon.utils.clip_global_norm(grads, tcfg.grad_clip or float("inf"), check_isfinite=False)
    trainer.step(1)
    return total, norm, state


def train_epoch(s, loss_fn, trainer, batches, on_batch=None):
    """One pass over batches; returns {train_loss, grad_norm, tokens, train_s, first_bad_batch}."""
    if s.workers:
        return parallel.train_epoch(s, loss_fn, trainer, batches, on_batch)
    grads = [p.grad(s.ctx) for p in s.model.collect_params().values() if p.grad_req != "null"]
    nll_sum, norm_sum = nd.zeros(1, ctx=s.ctx), nd.zeros(1, ctx=s.ctx)
    tokens, state, start, checks = 0, None, time.perf_counter(), []
    for i, (X, Y) in enumerate(batches):
        X, Y = nd.array(X, ctx=s.ctx), nd.array(Y, ctx=s.ctx)
        if state is None or not batches.carries_state:
            state = s.model.begin_state(X.shape[1], s.ctx)
        else:
            state = [h.detach() for h in state]  # truncated BPTT: keep the values, cut the graph
        total, norm, state = train_step(s.model, loss_fn, trainer, grads, X, Y, state, s.cfg.train)
        nll_sum += total
        norm_sum += norm
        checks.append(total + norm)  # non-finite when either is: read once, at the end of the epoch
        tokens += X.size
        if on_batch:
            on_batch(i + 1, len(batches), tokens, lambda t=tokens: nll_sum.asscalar() / t)
    nll = float(nll_sum.asscalar())  # the one host sync of the epoch, so the timing below is honest
    seconds = time.perf_counter() - start
    bad = np.flatnonzero(~np.isfinite(nd.concat(*checks, dim=0).asnumpy()))
    return {"train_loss": nll / tokens, "grad_norm": float(norm_sum.asscalar()) / len(batches),
            "tokens": tokens, "train_s": seconds, "first_bad_batch": int(bad[0]) if len(bad) else None}


def evaluate(model, ids, batch_size, seq_len, ctx):
    """Summed NLL and token count of ids, read as carried-state streams with dropout off."""
    loss_fn = models.TokenNLL()
    batches = data.eval_batches(ids, batch_size, seq_len)
    nll_sum, tokens, state = nd.zeros(1, ctx=ctx), 0, model.begin_state(batches.x.shape[1], ctx)
    for X, Y in batches:
        logits, state = model(nd.array(X, ctx=ctx), state)
        nll_sum += loss_fn(logits, nd.array(Y, ctx=ctx)).sum()
        tokens += X.size
    return float(nll_sum.asscalar()), tokens


def _samples(s):
    """Greedy continuations of the configured prefixes that the vocabulary can encode."""
    texts = []
    for prefix in s.cfg.train.sample_prefixes:
        try:
            ids = generate.encode_prefix(prefix, s.vocab, s.cfg.data)
        except CharlmError:
            continue  # the default prefixes are English; another corpus may lack their characters
        texts.append(generate.complete(s.model, s.vocab, ids, s.cfg.train.sample_length, s.device))
    return texts


def make_trainer(model, tcfg, workers=None):
    """A Gluon Trainer for the configured optimizer and learning rate (over `workers` when data-parallel)."""
    args = model.collect_params(), tcfg.optimizer, {"learning_rate": tcfg.lr}
    return workers.trainer(*args) if workers else gluon.Trainer(*args)


@dataclass
class Progress:
    """Where a run stands: epochs done, best checkpoint metric (a loss), training seconds spent,
    the learning-rate factor left by divergence rollbacks and how many there were."""
    epoch: int = 0
    best: float = math.inf
    elapsed: float = 0.0
    lr_scale: float = 1.0
    rollbacks: int = 0


def checkpoint_metric(record):
    """The loss that picks the best checkpoint: validation loss, or training loss without validation."""
    return record.get("val_loss", record["train_loss"])


def restore(s, run, trainer):
    """Load the run's last checkpoint into s.model and trainer; return where it stands."""
    state = run.read_state()
    done = state.get("epoch", 0)
    if not done:
        return Progress()
    run.load_last(s.model, trainer, s.ctx)
    records = run.keep_metrics(done)
    return Progress(done, min(map(checkpoint_metric, records)), records[-1]["elapsed_s"], state.get("lr_scale", 1.0))


def _recover(s, run, trainer, progress, epoch, step):
    """After a non-finite loss or gradient: stop with an error, or (rollback) reload the last checkpoint,
    halve the learning rate and return the trainer to go on with."""
    if s.cfg.train.on_divergence == "stop" or progress.rollbacks == MAX_ROLLBACKS:
        raise CharlmError(f"training diverged at step {step} (epoch {epoch}): the loss or gradient norm is not "
                          f"finite; the best and last good checkpoints are kept: lower --lr, set --grad-clip, "
                          f"or use --on-divergence rollback")
    progress.rollbacks, progress.lr_scale = progress.rollbacks + 1, progress.lr_scale / 2
    log.warning("diverged at step %d (epoch %d): back to the checkpoint of epoch %d, learning rate x%g "
                "(rollback %d of %d)", step, epoch, epoch - 1, progress.lr_scale, progress.rollbacks, MAX_ROLLBACKS)
    if epoch > 1:
        run.load_last(s.model, trainer, s.ctx)
        return trainer
    mx.random.seed(s.cfg.train.seed)  # no checkpoint yet: start over from the same initial weights
    s.model.initialize(mx.init.Xavier(), ctx=s.ctx, force_reinit=True)
    return make_trainer(s.model, s.cfg.train, s.workers)


def fit(s, run, trainer=None, progress=None, on_batch=None, on_epoch=None):
    """Train up to cfg.train.epochs (from `progress` when resuming), evaluating, checkpointing and
    sampling after each epoch; return the best checkpoint metric."""
    tcfg, dcfg = s.cfg.train, s.cfg.data
    trainer, progress = trainer or make_trainer(s.model, tcfg, s.workers), progress or Progress()
    loss_fn = models.TokenNLL()
    loss_fn.hybridize(static_alloc=True, static_shape=True)
    best, start = progress.best, time.perf_counter() - progress.elapsed
    epoch = progress.epoch + 1
    while epoch <= tcfg.epochs:
        trainer.set_learning_rate(tcfg.lr * progress.lr_scale * tcfg.lr_decay ** (epoch - 1))
        # Batch order and dropout are drawn from (seed, epoch) alone, so an epoch replays exactly.
        rng = np.random.default_rng([tcfg.seed, epoch])
        mx.random.seed(int(rng.integers(2**31)))
        batches = data.ITERATORS[dcfg.iterator](s.train_ids, dcfg.batch_size, dcfg.seq_len, rng)
        stats = train_epoch(s, loss_fn, trainer, batches, on_batch)
        if stats["first_bad_batch"] is not None:
            step = (epoch - 1) * len(batches) + stats["first_bad_batch"] + 1
            trainer = _recover(s, run, trainer, progress, epoch, step)
            continue  # the same epoch again, from the last checkpoint
        record = {"epoch": epoch, **scores("train_", stats["train_loss"]), "lr": trainer.learning_rate,
                  "grad_norm": stats["grad_norm"], "tokens_per_s": stats["tokens"] / stats["train_s"]}
        if len(s.val_ids):
            nll, tokens = parallel.allsum(s.workers, *evaluate(s.model, s.val_ids, dcfg.batch_size, dcfg.seq_len,
                                                                s.device))
            record.update(scores("val_", nll / tokens))
        record["elapsed_s"] = time.perf_counter() - start
        if not all(math.isfinite(record[k]) for k in ("train_loss", "val_loss") if k in record):
            raise CharlmError(f"training diverged in epoch {epoch} (validation loss {record.get('val_loss')}); "
                              f"the best and last good checkpoints are kept: lower --lr or set --grad-clip")
        metric = checkpoint_metric(record)
        run.save_checkpoint(s.model, trainer, record, is_best=metric < best, lr_scale=progress.lr_scale)
        best = min(best, metric)
        samples = _samples(s) if tcfg.sample_every and epoch % tcfg.sample_every == 0 else []
        if on_epoch:
            on_epoch(record, samples)
        epoch += 1
    return best
