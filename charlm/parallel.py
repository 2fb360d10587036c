"""Where a batch trains: this process's devices and its place among the workers. One device of one process
is the trivial case; several devices split each batch along N, and a dist kvstore sums over workers too."""
import atexit
import os
import sys
import time
from dataclasses import dataclass

from . import optim
from .engine import gluon, mx, nd
from .errors import CharlmError
from .launch import DMLC_ENV, KVSTORES

SUM_KEY = 1 << 20  # the kvstore key for metric sums: far above the Trainer's keys, one per parameter
SYNC_EVERY = 50  # batches between dist_sync workers' readings of rank 0's clock, under a time limit


@dataclass
class Workers:
    """This process's devices and its place among the workers (rank 0 of 1 without a dist kvstore)."""
    ctxs: list
    kvstore: str = "local"
    kv: object = None  # the dist KVStore, connected to the scheduler
    summing: bool = False  # SUM_KEY is initialised on the servers

    def __post_init__(self):
        self.rank, self.num_workers = (self.kv.rank, self.kv.num_workers) if self.kv else (0, 1)  # rank 0 writes
        self.is_async = self.kvstore == "dist_async"  # each worker's update lands on its own
        self.spread = len(self.ctxs) > 1 or self.kv is not None
        # the device batches one update's gradient is the mean over: every worker's too under dist_sync
        self.share = len(self.ctxs) * (1 if self.is_async else self.num_workers)

    def shard(self, ids):
        """This worker's contiguous 1/num_workers of ids, all of one length (dist_sync steps together)."""
        n = len(ids) // self.num_workers
        return ids[self.rank * n:(self.rank + 1) * n]

    def shards(self, train_ids, val_ids):
        """This worker's training and validation text (all of the validation under dist_async)."""
        return self.shard(train_ids), (val_ids if self.is_async else self.shard(val_ids))

    def trainer(self, params, tcfg):
        """A Trainer over these devices and workers: updates on the servers only under dist_async."""
        if self.is_async:  # MXNet's own optimizer, which the servers unpickle
            return _Trainer(params, tcfg.optimizer, {"learning_rate": tcfg.lr}, kvstore=self.kv,
                            update_on_kvstore=True)
        optimizer = optim.create(tcfg.optimizer, tcfg.lr, tcfg.weight_decay)
        if not self.spread:
            return gluon.Trainer(params, optimizer)
        return _Trainer(params, optimizer, kvstore=self.kv or self.kvstore, update_on_kvstore=False)

    def split(self, X, Y):
        """A batch on the first device as [(X, Y)] per device, each (T, N / devices)."""
        if len(self.ctxs) == 1:
            return [(X, Y)]
        return list(zip(*(gluon.utils.split_and_load(a, self.ctxs, batch_axis=1) for a in (X, Y))))

    def split_state(self, model, state):
        """A carried state, whole on the first device, as one part per device."""
        if len(self.ctxs) == 1:
            return [state]
        parts = [gluon.utils.split_and_load(h, self.ctxs, batch_axis=model.state_batch_axis) for h in state]
        return [[part[d] for part in parts] for d in range(len(self.ctxs))]

    def join_state(self, model, states):
        """The devices' states as one, on the first device: checkpoints hold it as one device would."""
        if len(states) == 1:
            return states[0]
        return [nd.concat(*(st[k].as_in_context(self.ctxs[0]) for st in states), dim=model.state_batch_axis)
                for k in range(len(states[0]))]

    def gather(self, values):
        """The sum of one (1,) array per device, on the first device."""
        return values[0] if len(values) == 1 else nd.add_n(*(v.as_in_context(self.ctxs[0]) for v in values))

    def update(self, trainer, grads, max_norm):
        """Sum the gradients over devices and workers, clip them, update; the norm before clipping."""
        if not self.spread or self.is_async:  # nothing to sum, or the servers sum and update: clip what is pushed
            norm = optim.clip(trainer.optimizer if not self.spread else None, grads, max_norm, summed=False)
            trainer.step(1)
            return norm
        trainer.allreduce_grads()  # every device now holds the gradient summed over devices and workers
        norm = optim.clip(trainer.optimizer, grads, max_norm)
        trainer.update(1)
        return norm

    def seed(self, value):
        """Seed dropout for a stretch of batches: each worker draws its own masks."""
        mx.random.seed(value + self.rank)

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

    def from_rank0(self, value):
        """Rank 0's number on every dist_sync worker (a collective); elsewhere this process's own."""
        if self.kv is None or self.is_async:
            return value
        return self.allsum(0.0 if self.rank else value, 0.0)[0]  # two values: the size the key has for epoch sums

    def fail_fast(self):
        """After an error in a cluster worker: exit 1 at once, not wait in MXNet's exit for peers."""
        if self.kv is not None:
            atexit.register(_exit_now)


class Clock:
    """A run's training seconds, earlier sessions included, against its time limit (None: none); dist_sync workers
    read rank 0's clock every SYNC_EVERY batches, so that all stop at the same batch."""

    def __init__(self, workers, limit=None, elapsed=0.0):
        self.workers, self.limit, self.start = workers, limit, time.perf_counter() - elapsed
        self.seconds, self.timed_out = None, False

    def elapsed(self):
        """Training seconds of the run so far, earlier sessions included."""
        return time.perf_counter() - self.start

    def out_of_time(self, i):
        """Whether the time limit is spent before batch i of an epoch."""
        if self.limit is None:
            return False
        w = self.workers
        if w.kv is None or w.is_async:
            self.seconds = self.elapsed()
        elif i % SYNC_EVERY == 0 or self.seconds is None:
            self.seconds = w.from_rank0(self.elapsed())
        self.timed_out = self.seconds >= self.limit
        return self.timed_out


def _exit_now():
    sys.stdout.flush()  # os._exit skips Python's flush: epoch lines piped to a log would be lost
    sys.stderr.flush()
    os._exit(1)


class _Trainer(gluon.Trainer):
    """A Trainer that waits until every worker holds rank 0's initial weights before it pushes a gradient."""

    def _init_params(self):
        # MXNet's Trainer broadcasts rank 0's initial weights (push, then an asynchronous pull) and right
        # away pushpulls the first gradients on the same keys. On CPU, MXNet 1.9.1's dist kvstore pushpulls
        # straight from the gradient array (KVStoreDist::PushPullImpl), so no engine dependency orders the
        # gradient after the weight's pull: when both workers' gradients reached the server first, the late
        # pull wrote their sum into the weight. Waiting for the pulls costs one sync per Trainer.
        super()._init_params()
        nd.waitall()


def connect(cfg, ctx, kvstore="local"):
    """Workers for these devices and kvstore; a dist kvstore joins the cluster the DMLC_* variables name."""
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
    t = cfg.train
    if kvstore == "dist_async" and t.lr_schedule == "exp" and t.lr_decay != 1:
        raise CharlmError("--kvstore dist_async runs the optimizer on the servers, where charlm cannot decay the "
                          "learning rate: pass --lr-decay 1 or --lr-schedule constant")
    if kvstore == "dist_async" and (t.lr_schedule == "cosine" or t.warmup or t.weight_decay):
        raise CharlmError("--kvstore dist_async runs the optimizer on the servers, where charlm cannot schedule the "
                          "learning rate or decay weights: drop --lr-schedule, --warmup and --weight-decay")
    if cfg.data.mode == "lines" and (dist or len(ctxs) > 1):
        raise CharlmError("lines mode trains on one device in one process: drop --ctx, --gpus and --kvstore")
    return Workers(ctxs, kvstore, mx.kv.create(kvstore) if dist else None)
