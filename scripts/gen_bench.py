"""Generation speed, docs/results.md's tables "Streaming and batches of samples" and "Exported model:
greedy generation":

    python scripts/gen_bench.py [--length 1000] [--repeats 5]
    python scripts/gen_bench.py --export RUN [--length 1000] [--rounds 5]

The first times the fixed model (configs/fixed.yaml's 2 x 256 LSTM; speed does not depend on the weights), all
in one process so that a busy machine slows every figure alike: greedy characters/s written at the end and
streamed (each piece written and flushed as it comes, with the time to the first piece), and sampled
characters/s of one sample against a batch of 32. The second times a run's greedy generation in charlm
(MXNet, `charlm.load(run).generate`) against its ONNX export in onnxruntime (scripts/onnx_generate.py's loop,
one session.run per character), each in a process of its own (onnxruntime's threads spin after a run, which
would slow MXNet beside them), taking turns, and says whether both texts are the same."""
import argparse
import hashlib
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from timing import median_seconds, spread, stamp

SCRIPT = Path(__file__).resolve().parent / "onnx_generate.py"
NAMES = {"charlm": "charlm (MXNet)", "onnx": "ONNX export (onnxruntime)"}


def streamed(pieces, out):
    """Write each piece as it comes; seconds to the first piece after the prefix."""
    start, first = time.perf_counter(), None
    for k, [piece] in enumerate(pieces):
        out.write(piece)
        out.flush()
        if k == 1:
            first = time.perf_counter() - start
    return first


def fixed_model(args):
    """The streaming and batch figures of the fixed model."""
    from charlm import configs, data, generate, model as models
    from charlm.engine import mx

    cfg = configs.Config()
    vocab, _ = data.corpus_of(cfg.data)
    model = models.build(cfg.model, len(vocab), mx.cpu())
    prefix, ctx, n = vocab.encode("the time ma"), mx.cpu(), args.length

    def run(**options):
        return generate.stream(model, vocab, prefix, n, ctx, **options)

    with open(os.devnull, "w") as out:
        whole = median_seconds(lambda: "".join(p for [p] in run()), args.repeats)
        live = median_seconds(lambda: streamed(run(), out), args.repeats)
        first = streamed(run(), out)
    print(f"greedy, {n} characters: {n / whole:,.0f} chars/s written at the end, {n / live:,.0f} streamed "
          f"({whole / live:.2f}x), first piece after {first * 1e3:.1f} ms", flush=True)
    one = median_seconds(lambda: list(run(temperature=1.0, seed=0)), args.repeats)
    batch = median_seconds(lambda: list(run(temperature=1.0, seed=0, num_samples=32)), args.repeats)
    print(f"sampled at temperature 1: {n / one:,.0f} chars/s one sample, {32 * n / batch:,.0f} with --num-samples 32 "
          f"({32 * one / batch:.1f}x)")


def onnx_generate():
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
        og = onnx_generate()
        session, manifest, tokens = og.load(Path(export_dir))
        ids = og.encode(prefix, manifest, tokens)

        def make():
            return og.decode(ids + og.generate(session, manifest, ids, length), tokens, manifest)
    texts = []
    seconds = median_seconds(lambda: texts.append(make()), 1)
    return {"seconds": seconds, "text": hashlib.sha256(texts[-1].encode()).hexdigest()}


def exported(args):
    """charlm's greedy generation of a run against its ONNX export, in turns."""
    from charlm.export import export

    with tempfile.TemporaryDirectory() as tmp:
        out = export(Path(tmp) / "onnx", "onnx", args.export)
        results = {kind: [] for kind in NAMES}
        for _ in range(args.rounds):
            for kind in NAMES:
                cmd = [sys.executable, __file__, "--export", args.export, "--worker", kind, "--export-dir", str(out),
                       "--prefix", args.prefix, "--length", str(args.length)]
                results[kind].append(json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True
                                                               ).stdout.splitlines()[-1]))
    print("| implementation | ms per character, median (min–max) | characters/s |")
    print("|---|---|---|")
    for kind, runs in results.items():
        mid, low, high = spread([1e3 * r["seconds"] / args.length for r in runs])
        print(f"| {NAMES[kind]} | {mid:.3f} ({low:.3f}–{high:.3f}) | {1e3 / mid:,.0f} |")
    print(f"same text: {len({r['text'] for runs in results.values() for r in runs}) == 1}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--length", type=int, default=1000, help="characters generated per measurement")
    parser.add_argument("--repeats", type=int, default=5, help="measurements of the fixed model")
    parser.add_argument("--export", metavar="RUN", help="time this run against its ONNX export instead")
    parser.add_argument("--prefix", default="the time ", help="--export: the prefix continued")
    parser.add_argument("--rounds", type=int, default=5, help="--export: rounds of turns")
    parser.add_argument("--worker", choices=NAMES, help=argparse.SUPPRESS)
    parser.add_argument("--export-dir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(work(args.worker, args.export, args.export_dir, args.prefix, args.length)))
        return
    print(stamp())
    if args.export:
        exported(args)
    else:
        fixed_model(args)


if __name__ == "__main__":
    main()
