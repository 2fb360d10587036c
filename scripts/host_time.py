"""Host (Python) time per training step at the tm shapes (35 x 32 batches, hidden 256, SGD, clip 5).

    python scripts/host_time.py                 # ms per step, host CPU ms per step, for tm-lstm and tm-rnn
    python scripts/host_time.py --busy 1        # the same with 1 ms of extra host work per step
    MXNET_EXEC_BULK_EXEC_TRAIN=0 python scripts/host_time.py --cells scratch-lstm --profile
                                                # and MXNet's profile of the timed epoch, op by op

Runs charlm's training loop (train.train_stretch, as `charlm train` does) over one epoch of the bundled book
after 20 warm-up batches, in this process, with whatever charlm is importable (PYTHONPATH=<a checkout>
times another commit). Run nothing else at the time."""
import argparse
import os
import tempfile
import time

import numpy as np

from charlm import configs as config, engine, recipe, training as train
from charlm.engine import mx

WARMUP = 20


def measure(cell, busy_ms, profile=False):
    cfg = recipe.fixed(config.Config())
    d, m, t = cfg.data, cfg.model, cfg.train
    d.val_frac, d.iterator, d.seq_len, d.batch_size = 0.0, "sequential", 35, 32
    m.cell, m.hidden_size, m.num_layers, m.dropout, m.embed_size = cell, 256, 1, 0.0, 43
    t.optimizer, t.lr, t.grad_clip = "sgd", 0.2, 5.0
    s = train.setup(cfg, mx.cpu())
    loop = train.Loop.of(s)
    if busy_ms:
        keep_up = engine.keep_up

        def busy_keep_up(results):
            start = time.thread_time()
            while time.thread_time() - start < busy_ms / 1e3:
                pass
            keep_up(results)
        engine.keep_up = busy_keep_up
    batches = train.batches_of(cfg, s.vocab, s.train_ids, np.random.default_rng(0))
    epoch = train.Epoch(1, batches, train.Sums())
    train.train_stretch(loop, epoch, 0, WARMUP)
    steps = len(batches) - WARMUP
    if profile:
        # MXNet also writes a trace of every op (100+ MB), by default as ./profile.json: not into the checkout
        trace = os.path.join(tempfile.gettempdir(), "charlm-host-time-profile.json")
        mx.profiler.set_config(profile_all=True, aggregate_stats=True, filename=trace)
        mx.profiler.set_state("run")
    wall, host = time.perf_counter(), time.thread_time()
    epoch.sums = train.Sums()
    train.train_stretch(loop, epoch, WARMUP, len(batches))
    wall, host = time.perf_counter() - wall, time.thread_time() - host
    if profile:
        mx.profiler.set_state("stop")
        print(f"{steps} steps of {cell}:\n{mx.profiler.dumps(reset=True)}")
    return wall / steps * 1e3, host / steps * 1e3, steps * 35 * 32 / wall


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--busy", type=float, default=0.0, help="extra host work per step, ms")
    parser.add_argument("--cells", nargs="+", default=["lstm", "rnn"], help="cells at the tm shape")
    parser.add_argument("--profile", action="store_true", help="print MXNet's per-op profile of each epoch")
    args = parser.parse_args()
    rows = [(cell, *measure(cell, args.busy, args.profile)) for cell in args.cells]
    print("| cell | ms per step | host CPU ms per step | tokens/s |")
    print("|---|---|---|---|")
    for cell, step, host, rate in rows:
        print(f"| {cell} | {step:.2f} | {host:.2f} | {rate / 1e3:.1f}k |")


if __name__ == "__main__":
    main()
