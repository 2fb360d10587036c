"""Measure what bayes sampling with hyperband early termination buys over random search on the bundled book: per
method and seed, the sweep's wall time, its runs completed and pruned, and the best validation perplexity. The
same search space, epochs and run_cap for both. Prints docs/results.md's "Sweeps: random against bayes with
hyperband" table:

    python scripts/sweep_bench.py                                        # run_cap 16, 3-epoch trials, 3 seeds
    python scripts/sweep_bench.py --run-cap 3 --epochs 2 --seeds 1 --max-chars 5000   # a quick check that it runs

Sweeps go to runs/sweep-bench/. Run nothing else heavy at the same time: on 2 cores any other job distorts the
wall times (the perplexities do not depend on it)."""
import argparse
import csv
import shutil

import yaml
from timing import ROOT, charlm, stamp

RUNS = ROOT / "runs" / "sweep-bench"
SPACE = {"model.hidden_size": {"distribution": "int_uniform", "min": 32, "max": 384},
         "model.num_layers": {"values": [1, 2]},
         "model.dropout": {"distribution": "uniform", "min": 0.0, "max": 0.5},
         "train.lr": {"distribution": "log_uniform_values", "min": 3e-4, "max": 1e-2}}
HYPERBAND = {"type": "hyperband", "min_iter": 1, "eta": 3}  # a run goes past epoch 1 only in the best third


def sweep_file(method, seed, args):
    """Write the sweep file of one method and seed; return its path."""
    base = RUNS / "base.yaml"
    base.write_text(yaml.safe_dump({"data": {"max_chars": args.max_chars},
                                    "train": {"epochs": args.epochs, "sample_every": 0}}))
    doc = {"base": [str(ROOT / "configs" / "fixed.yaml"), str(base)], "method": method, "run_cap": args.run_cap,
           "seed": seed, "metric": {"name": "val_ppl", "goal": "minimize"}, "parameters": SPACE}
    if method == "bayes":
        doc["early_terminate"] = HYPERBAND
    path = RUNS / f"{method}-{seed}.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def measure(method, seed, args):
    """Run one sweep from scratch; (wall seconds, completed, pruned, best val ppl)."""
    path = sweep_file(method, seed, args)
    out = RUNS / "sweeps"
    shutil.rmtree(out / path.stem, ignore_errors=True)  # from scratch: a re-run would resume the last one
    _, wall = charlm("sweep", path, "--runs-dir", out, quiet=True)
    with open(out / path.stem / "summary.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    best = min((float(r["best_val_ppl"]) for r in rows if r.get("best_val_ppl")), default=float("nan"))
    return wall, sum(r["state"] == "complete" for r in rows), sum(r["state"] == "pruned" for r in rows), best


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-cap", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--max-chars", type=int, default=0, help="the first N characters of the book (0: all)")
    args = parser.parse_args()
    RUNS.mkdir(parents=True, exist_ok=True)
    print(stamp())
    print("| method | seed | wall s | completed | pruned | best val ppl |\n|---|---|---|---|---|---|")
    for method in ("random", "bayes"):
        results = []
        for seed in range(args.seeds):
            wall, done, pruned, best = measure(method, seed, args)
            results.append((wall, done, pruned, best))
            print(f"| {method}{' + hyperband' if method == 'bayes' else ''} | {seed} | {wall:.0f} | {done} | "
                  f"{pruned} | {best:.3f} |", flush=True)
        means = [sum(r[i] for r in results) / len(results) for i in range(4)]
        print(f"| **{method} mean** | | {means[0]:.0f} | {means[1]:.1f} | {means[2]:.1f} | {means[3]:.3f} |",
              flush=True)


if __name__ == "__main__":
    main()
