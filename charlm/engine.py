"""MXNet, imported once with charlm's thread and floating-point defaults; device selection; batches fed to a device
and the running sums read back from it."""
import ctypes
import os
import platform
import re
import sys
import time
from dataclasses import dataclass, field

import numpy as np

from .errors import CharlmError
from .launch import CPUS

# MXNet's OpenMP assumes SMT and takes half the cores; every core is faster. Read only at import.
os.environ.setdefault("OMP_NUM_THREADS", str(CPUS))
# Operator tuning keeps the small elementwise ops the scratch cells are made of on one thread.
os.environ.setdefault("MXNET_USE_OPERATOR_TUNING", "0")


def flush_denormals():
    """Flush subnormal floats to zero (x86-64 Linux) in this thread and those it starts later; True if set."""
    setting = os.environ.get("CHARLM_FLUSH_DENORMALS", "1")
    if setting not in ("0", "1"):
        raise CharlmError(f"CHARLM_FLUSH_DENORMALS must be 0 (keep subnormal floats) or 1 (flush them), "
                          f"got {setting!r}")
    if setting == "0" or sys.platform != "linux" or platform.machine() != "x86_64":
        return False
    libm = ctypes.CDLL(None)  # Python's own symbols, libm's among them: find_library("m") runs ldconfig
    env = (ctypes.c_uint32 * 8)()  # glibc's x86-64 fenv_t: 32 bytes, the SSE control word MXCSR in the last 4
    if not hasattr(libm, "fegetenv") or libm.fegetenv(env) != 0:
        return False
    for kind in (np.float16, np.float32, np.float64, np.longdouble):
        np.finfo(kind)  # built once and cached; built with subnormals flushed, numpy warns that they are zero
    env[7] |= 0x8040  # MXCSR's FTZ (bit 15) and DAZ (bit 6)
    return libm.fesetenv(env) == 0


FLUSH_DENORMALS = flush_denormals()  # subnormals are slow; before the import, for MXNet's threads to inherit

try:
    import mxnet as mx  # noqa: E402
    from mxnet import autograd, gluon, nd  # noqa: E402,F401
except ImportError as e:  # the MXNet build is the user's choice, so no build is a requirement of charlm
    if e.name != "mxnet":
        raise CharlmError(f"MXNet is installed but cannot be imported: {e}") from None
    raise CharlmError("MXNet is not installed: pip install mxnet==1.9.1, or mxnet-cu112==1.9.1 for CUDA 11.2 "
                      "(from charlm's clone: pip install \".[cpu]\" or \".[cu112]\")") from None


PREFETCH = 64  # batches copied to a device together (see on_device)
AHEAD = 8  # batches the host may queue ahead of the device (see keep_up)

NO_GPU = ("MXNet sees no GPU (CPU-only mxnet build or no CUDA device visible); "
          "install MXNet's CUDA build, e.g. `pip install mxnet-cu112==1.9.1`, or drop {flag}")


def _gpu_count():
    try:
        return mx.context.num_gpus()
    except mx.base.MXNetError:
        return 0


def context(gpu: bool):
    """Return mx.gpu(0) or mx.cpu(); a clear error when a GPU is asked for and none is visible."""
    if not gpu:
        return mx.cpu()
    if _gpu_count() == 0:
        raise CharlmError("--gpu: " + NO_GPU.format(flag="--gpu"))
    return mx.gpu(0)


def _parse_devices(flag, text, pattern, example):
    """(kind, index) pairs of a comma-separated device list; a clear error when malformed or repeated."""
    items = [item.strip() for item in text.split(",")]
    matches = [re.fullmatch(pattern, item) for item in items]
    if not all(matches):
        raise CharlmError(f"{flag} {text!r}: expected a comma-separated device list like {example}")
    devices = [(m.group("kind") or "gpu", int(m.group("index"))) for m in matches]
    repeated = sorted({f"{kind}:{i}" for kind, i in devices if devices.count((kind, i)) > 1})
    if repeated:
        raise CharlmError(f"{flag} {text!r} names {', '.join(repeated)} more than once")
    return devices


def contexts(gpu=False, gpus=None, ctx=None):
    """The devices to train on, from --ctx cpu:0,cpu:1, --gpus 0,1 or --gpu: one Context, or a list of several."""
    if bool(gpu) + (gpus is not None) + (ctx is not None) > 1:
        raise CharlmError("--ctx, --gpus and --gpu each choose the devices: give only one of them")
    if gpus is None and ctx is None:
        return context(gpu)
    flag, text, pattern, example = (("--gpus", gpus, r"(?P<kind>)(?P<index>\d+)", "0,1") if gpus is not None else
                                    ("--ctx", ctx, r"(?P<kind>cpu|gpu):(?P<index>\d+)", "cpu:0,cpu:1 or gpu:0,gpu:1"))
    devices = _parse_devices(flag, text, pattern, example)
    wanted = [i for kind, i in devices if kind == "gpu"]
    count = _gpu_count() if wanted else 0
    if wanted and count == 0:
        raise CharlmError(f"{flag}: " + NO_GPU.format(flag=flag))
    if wanted and max(wanted) >= count:
        raise CharlmError(f"{flag} {text!r}: MXNet sees {count} GPU(s), numbered 0 to {count - 1}")
    made = [mx.gpu(i) if kind == "gpu" else mx.cpu(i) for kind, i in devices]
    return made[0] if len(made) == 1 else made


def on_device(batches, first, end, ctx):
    """(x, y, X, Y) for batches[first:end], X and Y copied to ctx PREFETCH batches at a time, one array per shape."""
    # MXNet's host-to-device copy is synchronous: one per batch would stall the queue between steps.
    for start in range(first, end, PREFETCH):
        block = [batches[j] for j in range(start, min(start + PREFETCH, end))]
        shapes = {x.shape for x, _ in block}  # several in lines mode, one bucket length each
        stacked = {shape: [nd.array(np.stack([b[k] for b in block if b[0].shape == shape]), ctx=ctx) for k in (0, 1)]
                   for shape in shapes}
        seen = dict.fromkeys(shapes, 0)
        for x, y in block:
            X, Y = stacked[x.shape]
            yield x, y, X[seen[x.shape]], Y[seen[x.shape]]
            seen[x.shape] += 1


def keep_up(results):
    """Every AHEAD steps, wait for the step AHEAD before the last of `results` (one array per step)."""
    # Unchecked, the host queues up to an epoch ahead and a stop comes that late; a wait per step is slower.
    if len(results) > AHEAD and len(results) % AHEAD == 0:
        results[-AHEAD - 1].wait_to_read()


@dataclass
class Sums:
    """An epoch's running sums on the host: NLL, gradient norms, tokens, seconds (each stretch's on the device)."""
    nll: float = 0.0
    norm: float = 0.0
    tokens: int = 0
    seconds: float = 0.0
    totals: list = field(default_factory=list, repr=False)  # the stretch's batches, on the device
    norms: list = field(default_factory=list, repr=False)

    @classmethod
    def of(cls, saved=None):
        """The sums a mid-epoch checkpoint saved (read()'s), or zero."""
        saved = saved or {}
        return cls(saved.get("nll", 0.0), saved.get("grad_norm", 0.0), saved.get("tokens", 0),
                   saved.get("train_s", 0.0))

    def add(self, total, norm, tokens):
        """One batch: its NLL sum and gradient norm (on the device) and its count of real targets."""
        self.totals.append(total)
        self.norms.append(norm)
        self.tokens += tokens
        keep_up(self.totals)

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
