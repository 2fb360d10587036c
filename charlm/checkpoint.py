"""MXNet state saved into a run directory and loaded back: parameters, optimizer state, carried hidden state.
Nothing is unpickled: arrays are in MXNet's own format, the optimizer's counters in state.json."""
import math

from . import model as models
from .engine import mx, nd
from .errors import CharlmError, mxnet_cause
from .run import BEST, METRICS, PENDING, STATE, atomic_write, checkpoint_metric, remove_files


def _last_files(tag):
    """Parameter, optimizer-state, hidden-state and averaged-weight files of the last checkpoint called tag."""
    return f"last-{tag}.params", f"last-{tag}.optim", f"last-{tag}.hidden", f"last-{tag}.ema"


def save_epoch(run, model, trainer, record, is_best, lr_scale=1.0, best=None, ema=None):
    """At the end of an epoch: save the last checkpoint (with ema, the Average of the weights), the best
    parameters when is_best (those of `best`, the model or its average; default model), a metrics line."""
    tag = f"e{record['epoch']}-s0"
    if is_best:
        atomic_write(run.path / PENDING.format(tag), (best or model).save_parameters)
    run.append_metrics(record)
    best_epoch = record["epoch"] if is_best else run.read_state().get("best_epoch")
    _save_last(run, model, trainer, None, {"epoch": record["epoch"], "step": 0, "best_epoch": best_epoch,
                                           "lr_scale": lr_scale, "best_pending": tag if is_best else None}, ema)
    run.settle_best(tag if is_best else None)
    if record["epoch"] == 1:
        run.point_latest()  # from its first checkpoint on, a run has a model to generate from


def save_at_limit(run, record, is_best, best):
    """A time limit's record mid-epoch: a metrics line, and `best`'s parameters (model or average) when is_best."""
    if is_best:
        tag = f"e{record['epoch']}-s{record['step']}"
        atomic_write(run.path / PENDING.format(tag), best.save_parameters)
        run.write_state({**run.read_state(), "best_epoch": record["epoch"], "best_pending": tag})
        run.settle_best(tag)
    run.append_metrics(record)
    if record["epoch"] == 1:
        run.point_latest()


def save_position(run, model, trainer, epoch, step, partial, hidden=None, lr_scale=1.0, ema=None):
    """Mid-epoch: save the last checkpoint after `step` batches of epoch + 1, its running sums, hidden state and
    averaged weights."""
    _save_last(run, model, trainer, hidden, {"epoch": epoch, "step": step, "partial": partial,
                                             "best_epoch": run.read_state().get("best_epoch"), "lr_scale": lr_scale},
               ema)


def _save_last(run, model, trainer, hidden, state, ema=None):
    """Write a new last checkpoint, then state.json naming it, then drop the old one: a kill leaves one whole."""
    tag = f"e{state['epoch']}-s{state['step']}"
    params, optim, hid, avg = _last_files(tag)
    atomic_write(run.path / params, model.save_parameters)
    if ema is not None:
        atomic_write(run.path / avg, ema.save_parameters)
    arrays, counters = _optimizer_state(trainer)
    atomic_write(run.path / optim, lambda tmp: nd.save(tmp, arrays))
    if hidden is not None:
        atomic_write(run.path / hid, lambda tmp: nd.save(tmp, list(hidden)))
    run.write_state({**state, "status": "running", "last": tag, "optimizer": counters})
    keep = {params, optim, hid, avg}
    remove_files(old for old in run.path.glob("last-*") if old.name not in keep)


def _optimizer_state(trainer):
    """(arrays, counters): optimizer state by parameter index ("3", or "3.0", "3.1" of a tuple), update counts."""
    arrays = {}  # dist_async keeps the state on the servers: none here, and a resume starts it afresh
    for index, state in trainer._updaters[0].states.items():  # every device applies the same summed gradient
        if isinstance(state, nd.NDArray):
            arrays[str(index)] = state
        elif state is not None:
            arrays.update({f"{index}.{k}": a for k, a in enumerate(state)})
    opt = trainer.optimizer
    return arrays, {"num_update": opt.num_update, "begin_num_update": opt.begin_num_update,
                    "index_update_count": dict(opt._index_update_count)}


def _load_optimizer(trainer, path, counters):
    """Load what _optimizer_state saved into every device's updater of trainer."""
    try:
        arrays = nd.load(str(path)) or {}  # SGD's: no arrays, which load as an empty list
        parts = sorted((([int(n) for n in name.split(".")], a) for name, a in arrays.items()), key=lambda p: p[0])
    except (mx.base.MXNetError, AttributeError, ValueError):  # AttributeError: a list of arrays, no names
        raise CharlmError(f"{path} (optimizer state) cannot be loaded") from None
    try:
        counts = {int(i): int(n) for i, n in counters["index_update_count"].items()}
        num_update, begin = int(counters["num_update"]), int(counters["begin_num_update"])
    except (KeyError, TypeError, ValueError, AttributeError):
        raise CharlmError(f"{path.parent / STATE} is damaged (optimizer is {counters!r})") from None
    for updater, ctx in zip(trainer._updaters, trainer._contexts):
        updater.states = {}
        for (index, *part), array in parts:
            array = array.copyto(ctx)  # a copy each: an updater writes its state in place, which the next would read
            updater.states[index] = (*updater.states.get(index, ()), array) if part else array
        updater.states_synced = dict.fromkeys(updater.states, True)
    opt = trainer.optimizer
    opt.num_update, opt.begin_num_update = num_update, begin
    opt._all_index_update_counts = {ctx.device_id: dict(counts) for ctx in trainer._contexts}
    opt._index_update_count = opt._all_index_update_counts[trainer._contexts[0].device_id]


def load_last(run, model, trainer, ctx, ema=None):
    """Load the last checkpoint into model and trainer, and its averaged weights into ema when given; return its
    carried hidden state (or None)."""
    state = run.read_state()
    tag = state.get("last")
    params, optim, hidden, avg = (run.path / name for name in _last_files(tag))
    if not tag or not params.exists():
        raise CharlmError(f"{run.path} has no last checkpoint{f' ({params.name})' if tag else ''}")
    if not optim.exists() and (run.path / f"last-{tag}.states").exists():
        raise CharlmError(f"{run.path} was saved by an earlier charlm, whose optimizer state (last-{tag}.states) is "
                          f"a pickle, which can run code when loaded: --resume does not read it; go on from its "
                          f"parameters in a new run with charlm train --init-from {run.path}")
    load_params(model, params, ctx)
    _load_optimizer(trainer, optim, state.get("optimizer"))
    if ema is not None:
        if not avg.exists():
            raise CharlmError(f"{run.path} has no {avg.name}: the averaged weights of its last checkpoint")
        load_params(ema, avg, ctx)
    device = ctx[0] if isinstance(ctx, list) else ctx  # a carried state is saved from one device
    if not hidden.exists():
        return None
    try:
        return [h.as_in_context(device) for h in nd.load(str(hidden))]
    except mx.base.MXNetError:
        raise CharlmError(f"{hidden} (hidden state) cannot be loaded") from None


def load_params(model, path, ctx):
    """Load the parameter file path into model."""
    try:
        model.load_parameters(str(path), ctx=ctx)
    except (mx.base.MXNetError, AssertionError, ValueError) as e:
        raise CharlmError(f"{path} cannot be loaded into the model its config.yaml and vocab.json "
                          f"describe: {mxnet_cause(e)}") from None


def load_model(run, ctx):
    """Rebuild the model from the run's config.yaml and vocab.json and load its best parameters."""
    model = models.build(run.config().model, len(run.vocab()), ctx)
    params = run.best_params()
    if not params.exists():
        raise CharlmError(f"{run.path} has no {BEST}: no epoch of it has been scored yet")
    load_params(model, params, ctx)
    return model


def restore(run, model, trainer, ctx, ema=None):
    """Load the run's last checkpoint into model, trainer and ema (the averaged weights, when kept); where it
    stands: {lr_scale} before any checkpoint, else also epoch, step, partial (the epoch's saved sums), hidden,
    best and elapsed. metrics.jsonl loses any line written past the checkpoint."""
    state = run.read_state()
    done, step, partial = state.get("epoch", 0), state.get("step", 0), state.get("partial")
    # the records up to the checkpoint: of the epochs it finished, and a time limit's within the next, to its step
    records = [r for r in run.metrics() if r["epoch"] <= done or r["epoch"] == done + 1 and r.get("step", 1e18) <= step]
    ends = [r for r in records if "step" not in r]
    if done and (not ends or ends[-1]["epoch"] != done):
        raise CharlmError(f"{run.path / METRICS} is damaged: it has no line for epoch {done}, the last "
                          f"checkpoint's; its best loss is unknown")
    where = {"lr_scale": state.get("lr_scale", 1.0)}
    if done or step:
        hidden = load_last(run, model, trainer, ctx, ema)
        try:
            elapsed = partial["elapsed_s"] if partial else ends[-1]["elapsed_s"]
            best = run.best(records)
            best = checkpoint_metric(best) if best else math.inf
        except (KeyError, TypeError):
            raise CharlmError(f"{run.path / METRICS} or {run.path / STATE} is damaged: a loss or elapsed time "
                              f"is missing") from None
        where.update(epoch=done, step=step, partial=partial, hidden=hidden, best=best, elapsed=elapsed)
    run.write_metrics(records)  # without lines past the checkpoint: a kill after an epoch's line, before its own
    return where
