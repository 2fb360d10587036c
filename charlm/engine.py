"""MXNet, imported once with charlm's thread defaults, and device selection."""
import os

# MXNet's OpenMP assumes SMT and uses half the cores; on these 2-core machines that is one
# thread. Using every core measured +40% on the fused LSTM. Set before import: read only then.
os.environ.setdefault("OMP_NUM_THREADS", str(len(os.sched_getaffinity(0))))

import mxnet as mx  # noqa: E402
from mxnet import autograd, gluon, nd  # noqa: E402,F401

from .errors import CharlmError  # noqa: E402


def context(gpu: bool):
    """Return mx.gpu(0) or mx.cpu(); a clear error when a GPU is asked for and none is visible."""
    if not gpu:
        return mx.cpu()
    try:
        count = mx.context.num_gpus()
    except mx.base.MXNetError:
        count = 0
    if count == 0:
        raise CharlmError(
            "--gpu: MXNet sees no GPU (CPU-only mxnet build or no CUDA device visible); "
            "install MXNet's CUDA build, e.g. `pip install mxnet-cu112==1.9.1`, or drop --gpu")
    return mx.gpu(0)
