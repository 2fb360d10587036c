"""Training speed of a run's model with subnormal floats flushed to zero (charlm's default) and without.

    python scripts/denormals.py runs/RUN               # the run's best weights and fresh ones, flush on and off
    python scripts/denormals.py runs/RUN --batches 300

Each measurement is a fresh process (the flush is set when charlm imports MXNet; CHARLM_FLUSH_DENORMALS=0
turns it off) that builds the run's model from its config.yaml, loads params-best.params (or keeps its fresh
initial weights), and times training on the run's own data over the same batches after 50 warm-up ones.
Run nothing else at the time."""
import argparse
import json
import os
import subprocess
import sys
import time

WARMUP = 50


def measure(path, trained, batches):
    """Training tokens/s in this process (see the module docstring)."""
    import numpy as np

    from charlm import checkpoint, run as runs, training as train
    from charlm.engine import mx

    run = runs.find(path)
    cfg = run.config()
    s = train.setup(cfg, mx.cpu(), vocab=run.vocab())  # the run's own: a run --init-from another keeps that one's
    if trained:
        checkpoint.load_params(s.model, run.path / runs.BEST, mx.cpu())
    loop = train.Loop.of(s)
    order = train.batches_of(cfg, s.vocab, s.train_ids, np.random.default_rng(0))
    epoch = train.Epoch(1, order, train.Sums())
    train.train_stretch(loop, epoch, 0, WARMUP)
    epoch.sums, start = train.Sums(), time.perf_counter()
    train.train_stretch(loop, epoch, WARMUP, min(len(order), WARMUP + batches))
    return epoch.sums.tokens / (time.perf_counter() - start)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", help="a run directory with config.yaml and params-best.params")
    parser.add_argument("--batches", type=int, default=600, help="batches timed after the warm-up")
    parser.add_argument("--worker", choices=["trained", "fresh"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(measure(args.run, args.worker == "trained", args.batches)))
        return
    print(f"run {args.run}, {args.batches} batches after {WARMUP} warm-up ones\n")
    print("| weights | subnormals | tokens/s |")
    print("|---|---|---|")
    for weights in ("trained", "fresh"):
        for flush in ("1", "0"):
            out = subprocess.run([sys.executable, __file__, args.run, "--batches", str(args.batches), "--worker",
                                  weights], env={**os.environ, "CHARLM_FLUSH_DENORMALS": flush}, check=True,
                                 stdout=subprocess.PIPE, text=True).stdout
            label = "params-best" if weights == "trained" else "fresh initial"
            print(f"| {label} | {'flushed' if flush == '1' else 'kept'} | {json.loads(out) / 1e3:.1f}k |")


if __name__ == "__main__":
    main()
