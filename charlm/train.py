"""Training: setup -> fit -> train_steps -> train_step, and evaluate; losses in nats per token."""
import logging
import math
import time
from dataclasses import dataclass

import numpy as np

from . import checkpoint, config as configs, data, engine, generate, lines, model as models, optim, parallel
from .engine import autograd, gluon, mx, nd
from .errors import CharlmError
from .run import METRICS, STATE

log = logging.getLogger(__name__)
MAX_ROLLBACKS = 3


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
    vocab: data.Vocab
    train_ids: np.ndarray
    val_ids: np.ndarray
    model: object
    ctx: object  # a Context, or a list of them when data-parallel
    split_lines: int = 0
    test_ids: np.ndarray = None
    workers: parallel.Workers = None  # None: one device in one process

    @property
    def device(self):
        """The one device that evaluates and samples: the first of several."""
        return self.ctx[0] if isinstance(self.ctx, list) else self.ctx


def setup(cfg, ctx, workers=None, vocab=None):
    """Seed, read and split the corpus (or read the validation file; this worker's part of them), check it
    fills a batch, and build the model; the corpus is encoded with vocab when given, else with its own."""
    d = cfg.data
    vocab, ids = data.corpus_of(d, vocab=vocab)
    if d.valid_path:
        train_ids, val_ids = ids, data.corpus_of(d, d.valid_path, vocab)[1]
    else:
        train_ids, val_ids = split_text(cfg, vocab, ids)
    if workers:
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
    return Setup(cfg, vocab, train_ids, val_ids, model, ctx, split_lines, test_ids, workers)


def split_text(cfg, vocab, ids):
    """(training, validation) ids: the last val_frac of the text, at a line end in lines mode."""
    if cfg.data.mode == "lines":
        return lines.split(ids, cfg.data.val_frac, vocab.eos)
    return data.split(ids, cfg.data.val_frac)


def batches_of(cfg, vocab, ids, rng=None):
    """The batches of ids as cfg.data describes them: one epoch's order drawn from rng, or, without rng,
    the fixed order evaluation reads."""
    d = cfg.data
    if d.mode == "lines":
        return lines.LineBatches(ids, vocab.bos, vocab.eos, d.batch_size, d.buckets, rng)
    if rng is None:
        return data.eval_batches(ids, d.batch_size, d.seq_len)
    return data.ITERATORS[d.iterator](ids, d.batch_size, d.seq_len, rng)


def train_step(objective, trainer, grads, X, Y, state, grad_clip):
    """One update: forward, backward, clip by global norm (none at 0), step. Returns (NLL sum, norm, state)
    on the device. grads are flat views of the gradients."""
    with autograd.record():
        total, loss, state = objective(X, Y, state)
    loss.backward()
    # No isfinite check: it would force a host sync every step; divergence is caught per stretch.
    norm = optim.clip(trainer, grads, grad_clip)
    trainer.step(1)
    return total, norm, state


class Sums:
    """Running sums of an epoch on the host: NLL, gradient norms, tokens and seconds. Each batch's NLL and
    norm stay on the device until its stretch ends: adding them up there cost an engine op per batch,
    whose host time the device waits for (measured: 1 ms of host time per step slows tm-rnn by 1.1 ms)."""

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
        """Wait for the queued batches (the one host sync of a stretch, so the time is honest), add them and
        the seconds since start; return the index of the stretch's first non-finite batch, counted from first."""
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


def train_steps(s, objective, trainer, batches, first, end, sums, state, on_batch=None, stop=None):
    """Train batches[first:end], or up to the batch before which stop() is true, adding to sums.

    Returns (batches done, carried state, index of the first batch whose loss or norm is not finite)."""
    if s.workers:
        return parallel.train_steps(s, objective, trainer, batches, first, end, sums, state, on_batch, stop)
    # flat views of the gradients, made once: what optim.clip takes
    grads = [p.grad(s.ctx).reshape((-1,)) for p in s.model.collect_params().values() if p.grad_req != "null"]
    i, start = first, time.perf_counter()
    for x, y, X, Y in engine.on_device(batches, first, end, s.ctx):
        if stop and stop():
            break
        count = real_targets(y, batches)
        if state is None or not batches.carries_state:
            state = s.model.begin_state(X.shape[1], s.ctx)
        else:
            state = [h.detach() for h in state]  # truncated BPTT: keep the values, cut the graph
        total, norm, state = train_step(objective, trainer, grads, X, Y, state, s.cfg.train.grad_clip)
        sums.add(total, norm, count)
        i += 1
        if on_batch:
            on_batch(i, len(batches), sums.tokens, sums.mean_loss)
    return i, state, sums.end_stretch(start, first)


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
    if workers:
        return workers.trainer(model.collect_params(), tcfg.optimizer, {"learning_rate": tcfg.lr})
    return gluon.Trainer(model.collect_params(), optim.create(tcfg.optimizer, tcfg.lr))


@dataclass
class Progress:
    """Where a run stands: epochs done, batches done of the next epoch (after a mid-epoch checkpoint)
    with that epoch's running sums and carried hidden state, the best checkpoint metric (a loss),
    training seconds spent, and the learning-rate factor left by divergence rollbacks and their count."""
    epoch: int = 0
    step: int = 0
    partial: dict = None
    hidden: list = None
    best: float = math.inf
    elapsed: float = 0.0
    lr_scale: float = 1.0
    rollbacks: int = 0


class Interrupted(Exception):
    """Training stopped because stop() turned true; the checkpoint of where it stopped is saved."""


def checkpoint_metric(record):
    """The loss that picks the best checkpoint: validation loss, or training loss without validation."""
    return record.get("val_loss", record["train_loss"])


def restore(s, run, trainer):
    """Load the run's last checkpoint into s.model and trainer; return where it stands."""
    state = run.read_state()
    done, step, partial = state.get("epoch", 0), state.get("step", 0), state.get("partial")
    records = [r for r in run.metrics() if r["epoch"] <= done]
    if done and (not records or records[-1]["epoch"] != done):
        raise CharlmError(f"{run.path / METRICS} is damaged: it has no line for epoch {done}, the last "
                          f"checkpoint's; its best loss is unknown")
    progress = Progress(lr_scale=state.get("lr_scale", 1.0))
    if done or step:
        hidden = checkpoint.load_last(run, s.model, trainer, s.ctx)
        try:
            elapsed = partial["elapsed_s"] if partial else records[-1]["elapsed_s"]
            best = min(map(checkpoint_metric, records), default=math.inf)
        except (KeyError, TypeError):
            raise CharlmError(f"{run.path / METRICS} or {run.path / STATE} is damaged: a loss or elapsed time "
                              f"is missing") from None
        progress = Progress(done, step, partial, hidden, best, elapsed, progress.lr_scale)
    run.write_metrics(records)  # without lines past the checkpoint: a kill after an epoch's line, before its own
    return progress


def _recover(s, run, trainer, progress, saved, epoch, step):
    """After a non-finite loss or gradient: stop with an error, or (rollback) reload the last checkpoint
    and halve the learning rate; return the trainer and progress to go on from."""
    if s.cfg.train.on_divergence == "stop" or progress.rollbacks == MAX_ROLLBACKS:
        raise CharlmError(f"training diverged at step {step} (epoch {epoch}): the loss or gradient norm is not "
                          f"finite; the best and last good checkpoints are kept: lower --lr, set --grad-clip, "
                          f"or use --on-divergence rollback")
    rollbacks, lr_scale = progress.rollbacks + 1, progress.lr_scale / 2
    log.warning("diverged at step %d (epoch %d): back to the last checkpoint, learning rate x%g (rollback %d of %d)",
                step, epoch, lr_scale, rollbacks, MAX_ROLLBACKS)
    if saved:
        progress = restore(s, run, trainer)
    else:
        mx.random.seed(s.cfg.train.seed)  # no checkpoint yet: start over from the same initial weights
        s.model.initialize(mx.init.Xavier(), ctx=s.ctx, force_reinit=True)
        trainer, progress = make_trainer(s.model, s.cfg.train, s.workers), Progress()
    progress.rollbacks, progress.lr_scale = rollbacks, lr_scale
    run.write_state({**run.read_state(), "lr_scale": lr_scale})  # a resume keeps it, checkpoint or not
    return trainer, progress


def _stretch_seed(seed, epoch, step):
    """The dropout seed for the batches of `epoch` from `step` on; reseeding at every checkpoint boundary
    (MXNet cannot save its generator's state) lets a run resumed there draw the same masks."""
    return int(np.random.default_rng([seed, epoch, step]).integers(2**31))


def objective_of(s):
    """The setup's training objective (models.objective) as its config asks: masked in lines mode, and the
    mean or the sum of the NLL ("sum" is the tutorial's scaling: lr and clip apply to the summed loss's
    gradient)."""
    d, t = s.cfg.data, s.cfg.train
    return models.objective(s.model, masked=d.mode == "lines", mean=t.loss_reduction == "mean")


def fit(s, run, trainer=None, progress=None, on_batch=None, on_epoch=None, stop=None):
    """Train up to cfg.train.epochs (from `progress` when resuming), checkpointing every
    train.checkpoint_every batches and after each epoch, evaluating and sampling after each epoch;
    return the best checkpoint metric. Once stop() is true, saves a checkpoint and raises Interrupted."""
    tcfg, dcfg = s.cfg.train, s.cfg.data
    trainer, p = trainer or make_trainer(s.model, tcfg, s.workers), progress or Progress()
    objective = objective_of(s)
    start, saved, every = time.perf_counter() - p.elapsed, bool(p.epoch or p.step), tcfg.checkpoint_every
    while p.epoch < tcfg.epochs:
        epoch = p.epoch + 1
        # Decay stops at the smallest learning rate charlm takes: MXNet's updates refuse much smaller ones.
        trainer.set_learning_rate(max(tcfg.lr * p.lr_scale * tcfg.lr_decay ** (epoch - 1), configs.MIN_LR))
        # Batch order and dropout are drawn from (seed, epoch) alone, so an epoch replays exactly.
        rng = np.random.default_rng([tcfg.seed, epoch])
        epoch_seed = int(rng.integers(2**31))
        batches = batches_of(s.cfg, s.vocab, s.train_ids, rng)
        step, state, sums = p.step, p.hidden, Sums(p.partial)
        mx.random.seed(_stretch_seed(tcfg.seed, epoch, step) if step else epoch_seed)
        bad = None
        while step < len(batches):
            end = min(len(batches), (step // every + 1) * every) if every else len(batches)
            done, state, bad = train_steps(s, objective, trainer, batches, step, end, sums, state, on_batch, stop)
            if bad is not None:
                trainer, p = _recover(s, run, trainer, p, saved, epoch, (epoch - 1) * len(batches) + bad + 1)
                break  # on from the last checkpoint
            if done == len(batches):
                break
            if done > step:  # a checkpoint boundary, or a stop with batches trained since the last checkpoint
                p.step, p.partial, p.hidden = done, {**sums.read(), "elapsed_s": time.perf_counter() - start}, state
                checkpoint.save_position(run, s.model, trainer, p.epoch, done, p.partial,
                                         state if batches.carries_state else None, p.lr_scale)
                saved = True
            if done < end:
                raise Interrupted()
            mx.random.seed(_stretch_seed(tcfg.seed, epoch, done))
            step = done
        if bad is not None:
            continue
        stats = sums.read()
        stats["nll"], stats["tokens"] = parallel.allsum(s.workers, stats["nll"], stats["tokens"])
        record = {"epoch": epoch, **scores("train_", stats["nll"] / stats["tokens"], dcfg.level),
                  "lr": trainer.learning_rate,
                  "grad_norm": stats["grad_norm"] / len(batches), "tokens_per_s": stats["tokens"] / stats["train_s"]}
        if len(s.val_ids):
            nll, tokens = parallel.allsum(s.workers, *evaluate(s.model, s.val_ids, s.cfg, s.vocab, s.device))
            record.update(scores("val_", nll / tokens, dcfg.level))
        record["elapsed_s"] = time.perf_counter() - start
        if not all(math.isfinite(record[k]) for k in ("train_loss", "val_loss") if k in record):
            raise CharlmError(f"training diverged in epoch {epoch} (validation loss {record.get('val_loss')}); "
                              f"the best and last good checkpoints are kept: lower --lr or set --grad-clip")
        metric = checkpoint_metric(record)
        if metric >= p.best:
            p.lr_scale *= tcfg.plateau_factor  # no better than the best so far: anneal (off at 1)
        checkpoint.save_epoch(run, s.model, trainer, record, is_best=metric < p.best, lr_scale=p.lr_scale)
        saved, p.best = True, min(p.best, metric)
        p.epoch, p.step, p.partial, p.hidden, p.elapsed = epoch, 0, None, None, record["elapsed_s"]
        samples = _samples(s) if tcfg.sample_every and epoch % tcfg.sample_every == 0 else []
        if on_epoch:
            on_epoch(record, samples)
    return p.best
