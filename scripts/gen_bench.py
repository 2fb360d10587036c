"""Generation speed of the fixed model (configs/fixed.yaml's 2 x 256 LSTM; speed does not depend on the weights),
all in one process so that a busy machine slows every figure alike:

    python scripts/gen_bench.py [--length 1000] [--repeats 5]

greedy characters/s written at the end and streamed (each piece written and flushed as it comes, with the
time to the first piece), and sampled characters/s of one sample against a batch of 32."""
import argparse
import os
import statistics
import time

from charlm import configs, data, generate, model as models, recipe
from charlm.engine import mx


def timed(work, repeats):
    """Median seconds of work() over repeats runs, after one run that builds the graphs."""
    work()
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        work()
        seconds.append(time.perf_counter() - start)
    return statistics.median(seconds)


def streamed(pieces, out):
    """Write each piece as it comes; seconds to the first piece after the prefix."""
    start, first = time.perf_counter(), None
    for k, [piece] in enumerate(pieces):
        out.write(piece)
        out.flush()
        if k == 1:
            first = time.perf_counter() - start
    return first


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--length", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=5)
    a = parser.parse_args()
    cfg = recipe.fixed(configs.Config())
    vocab, _ = data.corpus_of(cfg.data)
    model = models.build(cfg.model, len(vocab), mx.cpu())
    prefix, ctx, n = vocab.encode("the time ma"), mx.cpu(), a.length

    def run(**options):
        return generate.stream(model, vocab, prefix, n, ctx, **options)

    with open(os.devnull, "w") as out:
        whole = timed(lambda: "".join(p for [p] in run()), a.repeats)
        live = timed(lambda: streamed(run(), out), a.repeats)
        first = streamed(run(), out)
    print(f"greedy, {n} characters: {n / whole:,.0f} chars/s written at the end, {n / live:,.0f} streamed "
          f"({whole / live:.2f}x), first piece after {first * 1e3:.1f} ms", flush=True)
    one = timed(lambda: list(run(temperature=1.0, seed=0)), a.repeats)
    batch = timed(lambda: list(run(temperature=1.0, seed=0, num_samples=32)), a.repeats)
    print(f"sampled at temperature 1: {n / one:,.0f} chars/s one sample, {32 * n / batch:,.0f} with --num-samples 32 "
          f"({32 * one / batch:.1f}x)")


if __name__ == "__main__":
    main()
