"""Greedy generation speed of a run's model: charlm (MXNet, `charlm.load(run).generate`) against its ONNX
export in onnxruntime (scripts/onnx_generate.py's loop, one session.run per character), taking turns:

    python scripts/export_bench.py runs/NAME --length 1000 --rounds 5

Prints docs/performance.md's table (median of the rounds) and whether both texts are the same.
"""
import argparse
import importlib.util
import statistics
import tempfile
import time
from pathlib import Path

import charlm
from charlm.export import export

SCRIPT = Path(__file__).resolve().parent / "onnx_generate.py"


def _onnx_generate():
    """scripts/onnx_generate.py as a module."""
    spec = importlib.util.spec_from_file_location("onnx_generate", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _timed(make_text):
    start = time.perf_counter()
    text = make_text()
    return time.perf_counter() - start, text


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", help="run directory")
    parser.add_argument("--prefix", default="the time ")
    parser.add_argument("--length", type=int, default=1000, help="characters generated per round")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    og = _onnx_generate()
    lm = charlm.load(args.run)
    with tempfile.TemporaryDirectory() as tmp:
        out = export(Path(tmp) / "onnx", "onnx", args.run)
        session, manifest, tokens = og.load(out)
        ids = og.encode(args.prefix, manifest, tokens)
        def onnx_text():
            return og.decode(ids + og.generate(session, manifest, ids, args.length), tokens, manifest)
        runners = {"charlm (MXNet)": lambda: lm.generate(args.prefix, args.length),
                   "ONNX export (onnxruntime)": onnx_text}
        for run in runners.values():  # warm-up: graph building, first allocations
            run()
        times, texts = {name: [] for name in runners}, {}
        for _ in range(args.rounds):
            for name, run in runners.items():
                seconds, texts[name] = _timed(run)
                times[name].append(seconds)
    print("| implementation | ms per character, median (min–max) | characters/s |")
    print("|---|---|---|")
    for name, seconds in times.items():
        ms = [1e3 * s / args.length for s in seconds]
        print(f"| {name} | {statistics.median(ms):.3f} ({min(ms):.3f}–{max(ms):.3f}) | "
              f"{args.length / statistics.median(seconds):,.0f} |")
    print(f"same text: {len(set(texts.values())) == 1}")


if __name__ == "__main__":
    main()
