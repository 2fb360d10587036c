"""Measure data-parallel training on this machine: tokens/s of one worker (kvstore local) against two workers
(dist_sync through a scheduler and a server on 127.0.0.1, started by `charlm launch-local`), each worker with
the same config, and the bytes each worker sends and receives per step. Prints docs/results.md's "Parameter-server workers" table:

    python scripts/dist_bench.py                     # the default model, 3 epochs of 200k characters
    python scripts/dist_bench.py --epochs 2 --max-chars 20000 -- --hidden-size 16   # a quick check that it runs

Arguments after `--` go to every `charlm train`. Runs go to runs/dist-bench/. Run nothing else heavy at the
same time: on 2 cores any other job distorts both figures."""
import argparse
import json
import os
import time

import numpy as np
from timing import ROOT, charlm, cores, stamp

from charlm.run import Run

RUNS = ROOT / "runs" / "dist-bench"
ENV = dict(os.environ)  # as given: importing charlm.engine below sets OMP_NUM_THREADS, which the runs must not inherit


def parameter_bytes(run):
    """Bytes of the run's parameters: what one gradient push (or pull) moves."""
    from charlm.engine import mx

    return sum(a.size * np.dtype(a.dtype).itemsize for a in mx.nd.load(str(run / "params-best.params")).values())


def measure(name, workers, train_args):
    """Train one run with `workers` workers; return its last epoch's record and wall seconds."""
    args = ["train", "--runs-dir", RUNS, "--name", name, *train_args]
    if workers == 1:
        seconds = charlm(*args, env=ENV, quiet=True)[1]
    else:
        seconds = charlm("launch-local", "-n", workers, "-s", 1, "--", *args, "--kvstore", "dist_sync", env=ENV,
                         quiet=True)[1]
    return json.loads((RUNS / name / "metrics.jsonl").read_text().splitlines()[-1]), seconds


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3, help="epochs per run; the last one is reported")
    parser.add_argument("--max-chars", type=int, default=200_000, help="characters of the corpus to read")
    parser.add_argument("train_args", nargs="*", help="more `charlm train` arguments (after --)")
    opts = parser.parse_args()
    train_args = ["-c", "configs/fixed.yaml",
                  "--epochs", opts.epochs, "--max-chars", opts.max_chars, "--sample-every", 0, *opts.train_args]
    when = time.strftime("%Y%m%d-%H%M%S")
    rows = [(workers, *measure(f"{when}-{workers}w", workers, train_args)) for workers in (1, 2)]
    run = RUNS / f"{when}-1w"
    size, d = parameter_bytes(run), Run(run).config().data
    print(stamp())
    print(f"`charlm train {' '.join(map(str, train_args))}` per worker ({d.batch_size} x {d.seq_len} characters per "
          f"step and worker); tokens/s of the last epoch. A dist_sync step sends each worker's gradient "
          f"({size / 1e6:.3g} MB of parameters) to the server and receives the sum: {2 * size / 1e6:.3g} MB per step "
          f"and worker.\n")
    print("| workers | kvstore | threads per worker | tokens/s (all workers) | tokens/s per worker | val ppl | "
          "wall s | traffic per worker |")
    print("|---|---|---|---|---|---|---|---|")
    for workers, last, seconds in rows:
        kvstore = "local" if workers == 1 else "dist_sync, 1 server"
        threads = ENV.get("OMP_NUM_THREADS") or max(1, cores() // workers)  # charlm's and launch-local's defaults
        per_worker = last["tokens_per_s"] / workers
        traffic = "-" if workers == 1 else f"{2 * size * per_worker / (d.batch_size * d.seq_len) / 1e6:.3g} MB/s"
        print(f"| {workers} | {kvstore} | {threads} | {last['tokens_per_s'] / 1e3:.1f}k | {per_worker / 1e3:.1f}k | "
              f"{last.get('val_ppl', float('nan')):.3f} | {seconds:.0f} | {traffic} |")


if __name__ == "__main__":
    main()
