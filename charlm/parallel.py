"""Data parallelism on MXNet's own machinery: each batch split along N over this worker's devices,
gradients summed by the Trainer's kvstore, and under a dist kvstore summed over the workers too."""
import contextlib
import os
import time
from dataclasses import dataclass

from .engine import autograd, clip_global_norm, gluon, mx, nd, on_device
from .errors import CharlmError
from .launch import DMLC_ENV, KVSTORES

joined = False  # whether this process has joined a dist kvstore's cluster (see cli._user_errors)
SUM_KEY = 1 << 20  # the kvstore key for metric sums: far above the Trainer's keys, one per parameter


@dataclass
class Workers:
    """This process's devices and its place among the workers (rank 0 of 1 without a dist kvstore)."""
    ctxs: list
    kvstore: str = "local"
    kv: object = None  # the dist KVStore, connected to the scheduler
    summing: bool = False  # SUM_KEY is initialised on the servers

    @property
    def rank(self):
        """This worker's number, 0 to num_workers - 1; rank 0 writes the run."""
        return self.kv.rank if self.kv else 0

    @property
    def num_workers(self):
        """How many workers train together."""
        return self.kv.num_workers if self.kv else 1

    @property
    def is_async(self):
        """Whether each worker's update lands on its own (dist_async)."""
        return self.kvstore == "dist_async"

    def shard(self, ids):
        """This worker's contiguous 1/num_workers of ids; every shard has the same length, so every
        worker takes the same number of steps (dist_sync waits for all of them at each step)."""
        n = len(ids) // self.num_workers
        return ids[self.rank * n:(self.rank + 1) * n]

    def shards(self, train_ids, val_ids):
        """This worker's training and validation text. Under dist_async no two workers hold the same
        weights, so each scores its own copy on all of the validation text (rank 0's score is kept)."""
        return self.shard(train_ids), (val_ids if self.is_async else self.shard(val_ids))

    def trainer(self, params, optimizer, optimizer_params):
        """A Trainer over these devices and workers.

        Updates run on the servers only under dist_async, where MXNet requires it; otherwise each
        device updates its copy with the summed gradient, which keeps the learning rate and the
        optimizer state in this process, where lr_decay and checkpoints reach them."""
        return _Trainer(params, optimizer, optimizer_params, kvstore=self.kv or self.kvstore,
                        update_on_kvstore=self.is_async)

    def allsum(self, *values):
        """values summed over the workers under dist_sync, as floats; as they are otherwise."""
        if self.kv is None or self.is_async:  # async servers apply the optimizer to whatever is pushed
            return values
        if not self.summing:
            self.kv.init(SUM_KEY, nd.zeros(len(values)))  # collective: every worker gets here together
            self.summing = True
        # float32: the dist kvstore sums in float32 whatever it is given (float64 came back rounded).
        buf = nd.array(values)
        self.kv.pushpull(SUM_KEY, buf, out=buf)
        return tuple(float(v) for v in buf.asnumpy())


class _Trainer(gluon.Trainer):
    """A Trainer that waits until every worker holds rank 0's initial weights before it pushes a gradient."""

    def _init_params(self):
        # MXNet's Trainer broadcasts rank 0's initial weights (push, then an asynchronous pull) and right
        # away pushpulls the first gradients on the same keys. On CPU, MXNet 1.9.1's dist kvstore pushpulls
        # straight from the gradient array (KVStoreDist::PushPullImpl), so no engine dependency orders the
        # gradient after the weight's pull. When both workers' gradients for a key reached the server first,
        # the server held their sum (with no optimizer on the servers it keeps the last sum) and the late
        # pull wrote that sum into the weight, on one worker or both: 7 of 12 tiny dist_sync runs measured
        # here, the weight then wrong (and different between workers) for the rest of the run. Waiting for
        # the pulls costs one sync per Trainer.
        super()._init_params()
        nd.waitall()


def connect(cfg, ctx, kvstore="local"):
    """Workers for these devices and kvstore, or None for one device in one process (the plain path).

    A dist kvstore connects to the scheduler named by the DMLC_* variables MXNet's launchers set."""
    ctxs = ctx if isinstance(ctx, list) else [ctx]
    if kvstore not in KVSTORES:
        raise CharlmError(f"unknown kvstore {kvstore!r}; valid kvstores: {', '.join(KVSTORES)}")
    dist = kvstore.startswith("dist")
    if not dist and os.environ.get("DMLC_ROLE") == "worker":
        raise CharlmError(f"started as a parameter-server worker (DMLC_ROLE=worker) with --kvstore {kvstore}: "
                          f"pass --kvstore dist_sync or dist_async")
    if dist:
        missing = [name for name in DMLC_ENV if not os.environ.get(name)]
        if missing:
            raise CharlmError(f"--kvstore {kvstore} needs a cluster, described by the DMLC_* variables MXNet's "
                              f"launchers set (missing: {', '.join(missing)}): start it with `charlm launch-local "
                              f"-n 2 -- train --kvstore {kvstore} ...` or `python -m mxnet.tools.launch ...`")
    if cfg.data.batch_size % len(ctxs):
        raise CharlmError(f"data.batch_size {cfg.data.batch_size} does not split evenly over {len(ctxs)} devices: "
                          f"make it a multiple of {len(ctxs)}")
    if dist and cfg.train.on_divergence == "rollback":
        raise CharlmError(f"--on-divergence rollback reloads a checkpoint that only rank 0 has: with --kvstore "
                          f"{kvstore} use --on-divergence stop")
    if kvstore == "dist_async" and cfg.train.lr_decay != 1:
        raise CharlmError("--kvstore dist_async runs the optimizer on the servers, where charlm cannot decay the "
                          "learning rate: pass --lr-decay 1")
    if not dist and len(ctxs) == 1:
        return None
    if cfg.data.mode == "lines":
        raise CharlmError("lines mode trains on one device in one process: drop --ctx, --gpus and --kvstore")
    global joined
    workers, joined = Workers(ctxs, kvstore, mx.kv.create(kvstore) if dist else None), dist
    return workers


def allsum(workers, *values):
    """values summed over the workers, or as they are without Workers."""
    return workers.allsum(*values) if workers else values


def clip_summed(grads, max_norm):
    """Scale each device's gradients (grads[device][param]) so that their sum over the devices has a
    global L2 norm of at most max_norm (none at 0); return the norm of that sum before scaling, on the first device."""
    if len(grads) == 1:
        return clip_global_norm(grads[0], max_norm)
    ctx = grads[0][0].context
    summed = [nd.add_n(*(g.as_in_context(ctx) for g in same)) for same in zip(*grads)]
    norm = nd.add_n(*(nd.sum(g * g) for g in summed)).sqrt()
    if not max_norm:
        return norm
    scale = nd.minimum(max_norm / (norm + 1e-8), 1.0)  # clip_global_norm's own formula
    for device in grads:
        for g in device:
            g *= scale.as_in_context(g.context)
    return norm


def train_step(w, objective, trainer, grads, Xs, Ys, states, tcfg):
    """train.train_step on every device at once. The loss is scaled and the gradient clipped as one
    device with the whole batch (of every worker, under dist_sync) would: the norm is that of the sum."""
    tokens = sum(X.size for X in Xs) * (1 if w.is_async else w.num_workers)
    with autograd.record():
        outs = [objective(X, Y, state) for X, Y, state in zip(Xs, Ys, states)]
        totals = [total for total, _, _ in outs]  # the objective's own mean is per device: not used
        losses = totals if tcfg.loss_reduction == "sum" else [total / tokens for total in totals]
    autograd.backward(losses)
    clip = tcfg.grad_clip
    if w.is_async:
        norm = clip_summed(grads, clip)  # each worker's push is an update of its own: clip what it pushes
        trainer.step(1)
    else:
        trainer.allreduce_grads()  # every device now holds the gradient summed over devices and workers
        norm = [clip_global_norm(g, clip) for g in grads][0]
        trainer.update(1)
    total = nd.add_n(*(t.as_in_context(w.ctxs[0]) for t in totals))
    return total, norm, [state for _, _, state in outs]


def train_steps(s, objective, trainer, batches, first, end, sums, state, on_batch=None, stop=None):
    """train.train_steps with each batch split along N over the devices. The carried state comes in and
    goes out whole, on the first device, so checkpoints hold it as one device would."""
    w, axis = s.workers, s.model.state_batch_axis
    if w.rank:  # fit seeds dropout from (seed, epoch) alone: every worker would draw the same masks
        mx.random.seed(int(nd.random.randint(0, 2**30, shape=(1,)).asscalar()) + w.rank)
    params = [p for p in s.model.collect_params().values() if p.grad_req != "null"]
    grads = [[p.grad(ctx) for p in params] for ctx in w.ctxs]
    states = None
    if state is not None and batches.carries_state:
        parts = [gluon.utils.split_and_load(h, w.ctxs, batch_axis=axis) for h in state]
        states = [[part[d] for part in parts] for d in range(len(w.ctxs))]
    i, start = first, time.perf_counter()
    for _, _, X, Y in on_device(batches, first, end, w.ctxs[0]):
        if stop and stop():
            break
        Xs, Ys = (gluon.utils.split_and_load(a, w.ctxs, batch_axis=1) for a in (X, Y))  # (T, N / devices)
        if states is None or not batches.carries_state:
            states = [s.model.begin_state(x.shape[1], x.context) for x in Xs]
        else:
            states = [[h.detach() for h in state] for state in states]
        total, norm, states = train_step(w, objective, trainer, grads, Xs, Ys, states, s.cfg.train)
        sums.add(total, norm, Y.size)
        i += 1
        if on_batch:
            on_batch(i, len(batches), sums.tokens, sums.mean_loss)
    bad = sums.end_stretch(start, first)
    if states is not None:
        state = [nd.concat(*(st[k].as_in_context(w.ctxs[0]) for st in states), dim=axis)
                 for k in range(len(states[0]))]
    return i, state, bad


class NoRun:
    """Where workers other than rank 0 train into: a run directory that writes nothing (checkpoint saves
    nothing into a run without a path)."""
    path = None

    def lock(self):
        return contextlib.nullcontext(self)

    def read_state(self):
        return {}

    def write_state(self, state):
        """Nothing: rank 0 keeps the run's state."""

    def finish(self):
        """Nothing: rank 0 finishes the run."""
