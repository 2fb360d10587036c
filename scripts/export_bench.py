"""Greedy generation speed of a run's model: charlm (MXNet, `charlm.load(run).generate`) against its ONNX
export in onnxruntime (scripts/onnx_generate.py's loop, one session.run per character), each in a process of
its own (onnxruntime's threads spin after a run, which would slow MXNet beside them), taking turns:

    python scripts/export_bench.py runs/NAME --length 1000 --rounds 5

Prints docs/performance.md's table (median of the rounds) and whether both texts are the same.
"""
import argparse
import hashlib
import importlib.util
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent / "onnx_generate.py"
NAMES = {"charlm": "charlm (MXNet)", "onnx": "ONNX export (onnxruntime)"}


def _onnx_generate():
    """scripts/onnx_generate.py as a module."""
    spec = importlib.util.spec_from_file_location("onnx_generate", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def work(kind, run, export_dir, prefix, length):
    """Seconds for `length` greedy characters after a warm-up run, and a hash of the text, in this process."""
    if kind == "charlm":
        import charlm
        lm = charlm.load(run)

        def make():
            return lm.generate(prefix, length)
    else:
        og = _onnx_generate()
        session, manifest, tokens = og.load(Path(export_dir))
        ids = og.encode(prefix, manifest, tokens)

        def make():
            return og.decode(ids + og.generate(session, manifest, ids, length), tokens, manifest)
    make()  # graph building, first allocations
    start = time.perf_counter()
    text = make()
    return {"seconds": time.perf_counter() - start, "text": hashlib.sha256(text.encode()).hexdigest()}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", help="run directory")
    parser.add_argument("--prefix", default="the time ")
    parser.add_argument("--length", type=int, default=1000, help="characters generated per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--worker", choices=NAMES, help=argparse.SUPPRESS)
    parser.add_argument("--export-dir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(work(args.worker, args.run, args.export_dir, args.prefix, args.length)))
        return
    from charlm.export import export

    with tempfile.TemporaryDirectory() as tmp:
        out = export(Path(tmp) / "onnx", "onnx", args.run)
        results = {kind: [] for kind in NAMES}
        for _ in range(args.rounds):
            for kind in NAMES:
                cmd = [sys.executable, __file__, args.run, "--worker", kind, "--export-dir", str(out), "--prefix",
                       args.prefix, "--length", str(args.length)]
                results[kind].append(json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True
                                                               ).stdout.splitlines()[-1]))
    print("| implementation | ms per character, median (min–max) | characters/s |")
    print("|---|---|---|")
    for kind, runs in results.items():
        ms = [1e3 * r["seconds"] / args.length for r in runs]
        print(f"| {NAMES[kind]} | {statistics.median(ms):.3f} ({min(ms):.3f}–{max(ms):.3f}) | "
              f"{1e3 / statistics.median(ms):,.0f} |")
    print(f"same text: {len({r['text'] for runs in results.values() for r in runs}) == 1}")


if __name__ == "__main__":
    main()
