"""Measure the recipes' figures by running their commands (time, perplexity, samples): the tables of
docs/results.md's "The embedded default", "The Gluon tutorial", "d2l", "Word level" and "Addition", and
README's front-page figures.

    python scripts/targets.py                 # all of the below, one after the other
    python scripts/targets.py default         # only `charlm train` (+ `charlm generate "the time ma"`)
    python scripts/targets.py tutorial --seeds 0 1 2
    python scripts/targets.py d2l             # d2l's five models x two samplings, 500 epochs each
    python scripts/targets.py word            # configs/word-lstm.yaml on the Time Machine's words
    python scripts/targets.py addition        # configs/addition*.yaml, LSTM and RNN, 2,000 held-out sums

Runs go to runs/targets/; the table is printed as Markdown. Run nothing else heavy at the same time:
on 2 cores a second job more than halves the speed of both."""
import argparse
import json
import time

from timing import ROOT, charlm, stamp

RUNS = ROOT / "runs" / "targets"


def metrics(name):
    return [json.loads(line) for line in (RUNS / name / "metrics.jsonl").read_text().splitlines()]


def default():
    name = time.strftime("default-%Y%m%d-%H%M%S")
    _, seconds = charlm("train", "--runs-dir", RUNS, "--name", name)
    records = metrics(name)
    best = min(records, key=lambda r: r["val_loss"])
    text, gen_seconds = charlm("generate", "the time ma", "--run", RUNS / name, "--length", 200)
    sampled, _ = charlm("generate", "the time ma", "--run", RUNS / name, "--length", 200,
                        "--temperature", 0.7, "--seed", 1)
    print("| command | wall time | best val ppl (epoch) | val bpc | train tok/s |")
    print("|---|---|---|---|---|")
    print(f"| `charlm train` | {seconds / 60:.1f} min | {best['val_ppl']:.3f} ({best['epoch']}/{len(records)}) "
          f"| {best['val_bpc']:.3f} | {sum(r['tokens_per_s'] for r in records) / len(records) / 1e3:.1f}k |")
    print(f"\n`charlm generate \"the time ma\" --length 200` ({gen_seconds:.1f} s end to end):\n")
    print("```\n" + text.rstrip("\n") + "\n```")
    print("\n`charlm generate \"the time ma\" --length 200 --temperature 0.7 --seed 1`:\n")
    print("```\n" + sampled.rstrip("\n") + "\n```")


def tutorial(seeds):
    print("| command | seed | wall time | train ppl at epoch 200 |")
    print("|---|---|---|---|")
    samples = {}
    for seed in seeds:
        name = time.strftime(f"tutorial-seed{seed}-%Y%m%d-%H%M%S")
        out, seconds = charlm("train", "-c", "configs/tutorial-scratch.yaml", "--seed", seed,
                              "--runs-dir", RUNS, "--name", name)
        last = metrics(name)[-1]
        print(f"| `charlm train -c configs/tutorial-scratch.yaml --seed {seed}` | {seed} | {seconds / 60:.1f} min "
              f"| {last['train_ppl']:.3f} |")
        lines = out.splitlines()
        at = max(i for i, line in enumerate(lines) if line.startswith(f"epoch {last['epoch']} "))
        samples[seed] = "\n".join(line for line in lines[at + 1:] if line.startswith("  > "))
    for seed, text in samples.items():
        print(f"\nSamples at epoch 200, seed {seed}:\n\n```\n{text}\n```")


D2L = [("scratch-rnn", ["--cell", "scratch-rnn", "--hidden-size", 512]), ("rnn", ["--cell", "rnn"]),
       ("gru", ["--cell", "gru"]), ("lstm", ["--cell", "lstm"]),
       ("2-layer lstm", ["--cell", "lstm", "--num-layers", 2])]


def d2l():
    print("| model | sampling | command | wall time | train ppl at epoch 500 | train tok/s |")
    print("|---|---|---|---|---|---|")
    for model, args in D2L:
        for sampling in ("random", "sequential"):
            name = time.strftime(f"d2l-{model.replace(' ', '')}-{sampling}-%Y%m%d-%H%M%S")
            args_ = ["-c", "configs/d2l.yaml", *args, "--iterator", sampling]
            _, seconds = charlm("train", *args_, "--runs-dir", RUNS, "--name", name)
            records = metrics(name)
            rate = sum(r["tokens_per_s"] for r in records) / len(records)
            print(f"| {model} | {sampling} | `charlm train {' '.join(map(str, args_))}` | {seconds / 60:.1f} min "
                  f"| {records[-1]['train_ppl']:.3f} | {rate / 1e3:.1f}k |")


def word():
    name = time.strftime("word-lstm-%Y%m%d-%H%M%S")
    args = ["-c", "configs/word-lstm.yaml", "--lowercase", "--min-freq", 2]
    out, seconds = charlm("train", *args, "--runs-dir", RUNS, "--name", name)
    records = metrics(name)
    best = min(records, key=lambda r: r["val_loss"])
    print("| command | wall time | vocabulary | best val ppl per word (epoch) | train ppl then |")
    print("|---|---|---|---|---|")
    vocab = next(line for line in out.splitlines() if line.startswith("run ")).split(" | ")[3]
    print(f"| `charlm train {' '.join(map(str, args))}` | {seconds / 60:.1f} min | {vocab} "
          f"| {best['val_ppl']:.2f} ({best['epoch']}/{len(records)}) | {best['train_ppl']:.2f} |")


def addition():
    data, long, test = RUNS / "add-mixed.txt", RUNS / "add-long.txt", RUNS / "add-test.txt"
    RUNS.mkdir(parents=True, exist_ok=True)
    # trained on sums of 1 to 8 digits, then on 8-digit ones (values uniform below 10^8), and tested on
    # 8-digit ones from another seed
    charlm("data", "addition", "--digits", 8, "--count", 400000, "--seed", 1, "--mixed", "-o", data)
    charlm("data", "addition", "--digits", 8, "--count", 100000, "--seed", 3, "-o", long)
    charlm("data", "addition", "--digits", 8, "--count", 2000, "--seed", 2, "-o", test)
    print("| cell | command | wall time | best val ppl | exact match on 2,000 held-out sums | by answer position |")
    print("|---|---|---|---|---|---|")
    for cell in ("lstm", "rnn"):
        first = time.strftime(f"addition-{cell}-%Y%m%d-%H%M%S")
        # Adam 1e-2 leaves the RNN guessing uniformly (training perplexity 13.6 throughout): 2e-3 for it
        lr = ["--lr", 0.002] if cell == "rnn" else []
        stages = [(first, ["-c", "configs/addition.yaml", "--data", data.relative_to(ROOT), "--cell", cell, *lr]),
                  (f"{first}-tuned", ["-c", "configs/addition.yaml", "-c", "configs/addition-tune.yaml", "--data",
                                      long.relative_to(ROOT), "--cell", cell, "--init-from",
                                      (RUNS / first).relative_to(ROOT)])]
        for name, args in stages:
            _, seconds = charlm("train", *args, "--runs-dir", RUNS, "--name", name)
            out, _ = charlm("eval", "--task", "addition", "--data", test, "--run", RUNS / name, "--json")
            best, result = min(metrics(name), key=lambda r: r["val_loss"]), json.loads(out)
            print(f"| {cell} | `charlm train {' '.join(map(str, args))}` | {seconds / 60:.1f} min "
                  f"| {best['val_ppl']:.3f} | {result['accuracy']:.2%} "
                  f"| {' '.join(f'{p:.2f}' for p in result['position_accuracy'])} |")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("which", nargs="?", choices=["default", "tutorial", "d2l", "word", "addition", "all"],
                        default="all")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    args = parser.parse_args()
    print(stamp())
    if args.which in ("default", "all"):
        default()
    if args.which in ("tutorial", "all"):
        print()
        tutorial(args.seeds)
    for which, measure in [("d2l", d2l), ("word", word), ("addition", addition)]:
        if args.which in (which, "all"):
            print()
            measure()


if __name__ == "__main__":
    main()
