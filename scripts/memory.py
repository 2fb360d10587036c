"""Measure charlm's memory, docs/results.md's "Memory" tables: resident set size after each epoch of a run of configs/fixed.yaml (it must stay flat),
peak RSS training on a large corpus against the same training on the bundled book, and peak RSS of the
embedded default's recipe with each of its levers off against the fixed settings.

    python scripts/memory.py epochs [--epochs 20]          # configs/fixed.yaml, RSS after each epoch
    python scripts/memory.py corpus [--mb 200 --batches 300]
    python scripts/memory.py levers [--repeats 3 --epochs 2]  # the default's recipe, each lever off, the fixed

Prints the Markdown tables.
"""
import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

from timing import ROOT, spread
BOOK = ROOT / "data" / "timemachine.txt"


def rss_mb():
    """This process's resident set size in MB, from /proc."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def epochs(args):
    """Train the fixed config in this process and record RSS after every epoch."""
    from charlm import configs as config, engine, training as train
    from charlm.run import Run

    cfg = config.resolve([ROOT / "configs" / "fixed.yaml"])
    cfg.train.epochs, cfg.train.sample_every = args.epochs, 5
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        s = train.setup(cfg, engine.context(False))
        run = Run.create(tmp, "mem")
        run.start(cfg, s.vocab)
        rows.append(("after setup", rss_mb()))
        seen = SimpleNamespace(on_epoch=lambda record, samples: rows.append((record["epoch"], rss_mb())))
        train.fit(s, run, callbacks=[seen])
    print(f"RSS of `charlm train -c configs/fixed.yaml` ({args.epochs} epochs, samples every 5), in one process:\n")
    print("| epoch | RSS (MB) |\n|---|---|")
    for epoch, mb in rows:
        print(f"| {epoch} | {mb:.1f} |")
    after = [mb for epoch, mb in rows[1:]]
    half = len(after) // 2
    first, second = spread(after[1:half])[0], spread(after[half:])[0]
    print(f"\nmedian RSS of epochs 2-{half}: {first:.1f} MB, of epochs {half + 1}-{len(after)}: {second:.1f} MB "
          f"({second - first:+.1f} MB); highest {max(after):.1f} MB")


def peak_rss(cmd, stop=lambda: False):
    """Peak RSS (MB) of the command's own process, sent SIGINT once stop() is true (asked every 0.2 s)."""
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err)
        stopped = False
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)  # this child's own peak, not the largest child's
            if pid:
                break
            if not stopped and stop():
                proc.send_signal(signal.SIGINT)
                stopped = True
            time.sleep(0.2)
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode not in (0, 130):
            err.seek(0)
            raise SystemExit(f"training failed ({proc.returncode}): {err.read().decode().strip()}")
    return usage.ru_maxrss / 1024


def peak_of_training(path, batches, runs_dir):
    """Peak RSS (MB) and wall seconds of `charlm train --data path`, stopped by SIGINT after `batches` batches."""
    every = max(1, batches // 3)
    cmd = [sys.executable, "-m", "charlm", "train", "-c", str(ROOT / "configs" / "fixed.yaml"), "--data", str(path),
           "--runs-dir", str(runs_dir),
           "--name", path.stem, "--epochs", "1", "--checkpoint-every", str(every), "--sample-every", "0"]
    state = Path(runs_dir) / path.stem / "state.json"

    def trained_enough():
        try:
            return json.loads(state.read_text()).get("step", 0) >= batches
        except (OSError, json.JSONDecodeError):
            return False

    start = time.perf_counter()
    peak = peak_rss(cmd, trained_enough)
    return peak, time.perf_counter() - start


OFF = {  # each lever of the default's recipe, turned off
    "without the EMA": ["train.ema=0"],
    "without weight drop": ["model.weight_drop=0"],
    "untied, a 64-wide embedding": ["model.tie_weights=false", "model.embed_size=64"],
}
# name: settings over the default's recipe (None: configs/fixed.yaml instead)
LEVERS = {"the recipe": [], **OFF, "without all three": [s for sets in OFF.values() for s in sets],
          "the fixed settings": None}


def levers(args):
    """Peak RSS of the embedded default's recipe (2 x 256 here), with each of its levers off, and of the fixed
    settings (the same 2 x 256 LSTM without them): each args.repeats times, interleaved, their median."""
    from charlm import api, configs

    cfg = api.config()
    api.choose(cfg)  # the recipe `charlm train` runs on this machine
    peaks = {name: [] for name in LEVERS}
    with tempfile.TemporaryDirectory() as tmp:
        chosen = Path(tmp) / "recipe.yaml"
        chosen.write_text(configs.to_yaml(cfg))
        for _ in range(args.repeats):  # interleaved: a slow or crowded spell of the machine falls on every row
            for name, sets in LEVERS.items():
                config = ROOT / "configs" / "fixed.yaml" if sets is None else chosen
                peaks[name].append(peak_rss([sys.executable, "-m", "charlm", "train", "-c", str(config),
                                             "--epochs", str(args.epochs), "--set", "train.time_limit=null",
                                             "--sample-every", "0", "--runs-dir", str(Path(tmp) / "runs"),
                                             *[arg for s in sets or [] for arg in ("--set", s)]]))
    m = cfg.model
    print(f"Peak RSS of `charlm train` ({m.cell} {m.num_layers} x {m.hidden_size}, dropout {m.dropout:g}, weight drop "
          f"{m.weight_drop:g}, EMA {cfg.train.ema:g}), {args.epochs} epochs, {args.repeats} runs each:\n")
    print("| run | peak RSS (MB), median (min–max) |\n|---|---|")
    for name, mbs in peaks.items():
        print("| {} | {:.0f} ({:.0f}–{:.0f}) |".format(name, *spread(mbs)))


def corpus(args):
    """Peak RSS of training on an args.mb MB text (the book repeated) against training on the book itself."""
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        book = BOOK.read_bytes()
        big = tmp / "big.txt"
        with open(big, "wb") as f:
            for _ in range(-(-args.mb * 10**6 // len(book))):
                f.write(book)
        size = big.stat().st_size / 1e6
        small = tmp / "book.txt"
        small.write_bytes(book)
        base, base_s = peak_of_training(small, args.batches, tmp / "runs")
        peak, peak_s = peak_of_training(big, args.batches, tmp / "runs")
    print(f"Peak RSS of `charlm train -c configs/fixed.yaml`, stopped after {args.batches} batches:\n")
    print("| corpus | size (MB) | peak RSS (MB) | wall (s) |\n|---|---|---|---|")
    print(f"| the Time Machine | {len(book) / 1e6:.2f} | {base:.0f} | {base_s:.1f} |")
    print(f"| the book repeated | {size:.0f} | {peak:.0f} | {peak_s:.1f} |")
    print(f"\nthe large corpus adds {peak - base:.0f} MB = {(peak - base) / size:.2f}x its size "
          f"(target: below 2x the file plus the model: {2 * size + base:.0f} MB)")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="what", required=True)
    e = sub.add_parser("epochs", help="RSS after each epoch of configs/fixed.yaml")
    e.add_argument("--epochs", type=int, default=20)
    c = sub.add_parser("corpus", help="peak RSS on a large corpus")
    c.add_argument("--mb", type=int, default=200)
    c.add_argument("--batches", type=int, default=300)
    v = sub.add_parser("levers", help="peak RSS of the default's recipe, each lever off, and the fixed settings")
    v.add_argument("--repeats", type=int, default=3)
    v.add_argument("--epochs", type=int, default=2)
    args = parser.parse_args()
    {"epochs": epochs, "corpus": corpus, "levers": levers}[args.what](args)


if __name__ == "__main__":
    main()
