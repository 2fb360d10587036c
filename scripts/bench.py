"""Training speed of charlm against the tutorial-style loop and PyTorch, on the same text and shapes, and the
other speed tables of docs/results.md (docs/performance.md explains them):

    python scripts/bench.py                        # "Training speed against the tutorial loop and PyTorch":
                                                   # tm-lstm, -rnn, -gru: charlm, its scratch cells, the tutorial loop
    python scripts/bench.py --torch-python PY      # add PyTorch rows, run by that interpreter (torch is never a
                                                   # charlm dependency: give a venv that has it)
    python scripts/bench.py --scaling              # "Scaling": LSTM tokens/s and peak RSS, hidden 128-1024 x batch
    python scripts/bench.py --extras               # "Generation and start-up": generation, `charlm --help`,
                                                   # `import charlm`, a 100 MB corpus
    python scripts/bench.py --denormals RUN        # "Subnormal floats": a run's model, subnormals flushed and kept
    python scripts/bench.py --host-time            # ms and host CPU ms per tm step (performance.md, "Where the time goes")
                                                   # (--cells, --busy MS, --profile for MXNet's per-op profile)
    python scripts/bench.py --json results.json    # also write every measurement as JSON

The shapes are the independent harness's: `tm-lstm` is an LSTM of hidden 256, one layer,
input embedding 43, seq_len 35, batch 32, SGD lr 0.2 without momentum, gradient clipping at global norm 5;
`tm-rnn` the same with a tanh RNN; `tm-gru`, not one of the harness's, with a GRU. Every implementation
reads the bundled Time Machine as consecutive (truncated-BPTT) batches. Each measurement is a fresh
process: 5 warm-up steps, then whole steps for about --seconds, ended by a device sync. Within a round the
implementations take turns, in an order that rotates from round to round; the table gives the median over
the rounds with (min-max). Run nothing else meanwhile: on 2 cores a second busy process halves every figure."""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

from timing import ROOT, charlm as run_charlm, peak_rss_mb, spread, stamp, wall

SHAPES = {"tm-lstm": "lstm", "tm-rnn": "rnn", "tm-gru": "gru"}
TM = dict(embed=43, hidden=256, seq_len=35, batch=32, lr=0.2, clip=5.0)
WARMUP = 5
DENORMAL_WARMUP = 50  # batches before --denormals times its batches


# Workers: each runs in its own process and prints one JSON line.

def _batches(ids, batch, seq_len):
    """Consecutive windows of `batch` parallel streams: [(x, y)] of (seq_len, batch) lists of ids."""
    n = (len(ids) - 1) // batch
    rows = [ids[b * n:(b + 1) * n + 1] for b in range(batch)]
    return [([[row[t] for row in rows] for t in range(i, i + seq_len)],
             [[row[t + 1] for row in rows] for t in range(i, i + seq_len)])
            for i in range(0, n - seq_len + 1, seq_len)]


def timed_steps(step, sync, seconds, tokens_per_step, warmup=WARMUP, every=5):
    """tokens/s of step() after `warmup` steps, over whole steps lasting at least `seconds` (checked after
    a sync every `every` steps)."""
    for _ in range(warmup):
        first = step()
    sync()
    steps, start = 0, time.perf_counter()
    while True:
        last = step()
        steps += 1
        if steps % every == 0:
            sync()
            if time.perf_counter() - start >= seconds:
                break
    elapsed = time.perf_counter() - start
    return {"tokens_per_s": steps * tokens_per_step / elapsed, "steps": steps, "first": first, "last": last}


def tm_setup(cell, hidden=256, seq_len=35, batch=32, lr=0.2, clip=5.0, embed=43):
    """charlm's training setup at a tm shape on the bundled book (SGD, one layer, no dropout, no validation)."""
    from charlm import configs, training
    from charlm.engine import mx

    cfg = configs.Config()
    d, m, t = cfg.data, cfg.model, cfg.train
    d.val_frac, d.iterator, d.seq_len, d.batch_size = 0.0, "sequential", seq_len, batch
    m.cell, m.hidden_size, m.num_layers, m.dropout = cell, hidden, 1, 0.0
    m.embed_size = 0 if cell.startswith("scratch") else embed
    t.optimizer, t.lr, t.grad_clip, t.epochs, t.sample_every = "sgd", lr, clip, 10**6, 0
    return training.setup(cfg, mx.cpu())


def work_charlm(a):
    """charlm's own training loop (training.fit, as `charlm train` runs it) on the bundled corpus."""
    from charlm import speed

    s = tm_setup(a.cell, a.hidden, a.seq_len, a.batch, a.lr, a.clip, a.embed)
    # one host sync an epoch, as fit does without a time limit; WARMUP batches first
    watch = speed.time_loop(s, speed.Stopwatch(WARMUP, every=len(s.train_ids) // (a.seq_len * a.batch),
                                               seconds=a.seconds))
    return {"tokens_per_s": watch.tokens / watch.seconds, "steps": watch.batches, "vocab": len(s.vocab),
            "first": watch.losses[0], "last": watch.losses[-1]}


def work_tutorial(a):
    """The Gluon rnn-scratch tutorial's loop: one-hot inputs, one dot per weight per time step, the loss of
    the concatenated outputs, clipping with a host read of the norm, and a hand-written SGD update."""
    from charlm import configs as config, data
    from charlm.engine import autograd, gluon, nd

    vocab, ids = data.corpus_of(config.DataConfig(lowercase=True))
    V, H = len(vocab), a.hidden
    batches = _batches([int(i) for i in ids], a.batch, a.seq_len)
    gates = {"scratch-rnn": 1, "scratch-lstm": 4, "scratch-gru": 3}[a.cell]

    def normal(shape):
        return nd.random.normal(scale=0.01, shape=shape)

    weights = [[normal((V, H)), normal((H, H)), nd.zeros(H)] for _ in range(gates)]
    params = [p for gate in weights for p in gate] + [normal((H, V)), nd.zeros(V)]
    for p in params:
        p.attach_grad()
    loss_fn = gluon.loss.SoftmaxCrossEntropyLoss()
    run = {"i": 0, "state": None}

    def cell(X, state):
        def pre(k, h):
            W_x, W_h, b = weights[k]
            return nd.dot(X, W_x) + nd.dot(h, W_h) + b
        if gates == 1:
            h = nd.tanh(pre(0, state[0]))
            return h, [h]
        if gates == 3:  # d2l's GRU from scratch
            h = state[0]
            r, z = nd.sigmoid(pre(0, h)), nd.sigmoid(pre(1, h))
            h = z * h + (1 - z) * nd.tanh(pre(2, r * h))
            return h, [h]
        h, c = state
        i, f, o, g = nd.sigmoid(pre(0, h)), nd.sigmoid(pre(1, h)), nd.sigmoid(pre(2, h)), nd.tanh(pre(3, h))
        c = f * c + i * g
        h = o * nd.tanh(c)
        return h, [h, c]

    def step():
        x, y = batches[run["i"] % len(batches)]
        run["i"] += 1
        state = run["state"] or [nd.zeros((a.batch, H)) for _ in range(2 if gates == 4 else 1)]
        state = [s.detach() for s in state]
        inputs = [nd.one_hot(nd.array(row), V) for row in x]
        with autograd.record():
            outputs = []
            for X in inputs:
                h, state = cell(X, state)
                outputs.append(nd.dot(h, params[-2]) + params[-1])
            loss = loss_fn(nd.concat(*outputs, dim=0), nd.array([v for row in y for v in row])).mean()
        loss.backward()
        norm = sum((p.grad ** 2).sum() for p in params).sqrt().asscalar()  # the tutorial's host read
        scale = min(1.0, a.clip / norm)
        for p in params:
            p[:] = p - a.lr * scale * p.grad
        run["state"] = state
        return float(loss.asscalar())

    return {**timed_steps(step, nd.waitall, a.seconds, a.seq_len * a.batch), "vocab": V}


def work_torch(a):
    """PyTorch's nn.Embedding -> nn.LSTM / nn.RNN(tanh) / nn.GRU -> nn.Linear, with all cores."""
    import torch

    torch.set_num_threads(len(os.sched_getaffinity(0)))
    # The bundled text as charlm encodes it: charlm.data and charlm.config need NumPy and PyYAML, not MXNet,
    # which this venv lacks.
    sys.path.insert(0, str(ROOT))
    from charlm import configs as config, data

    ids = [int(i) for i in data.corpus_of(config.DataConfig(lowercase=True))[1]]
    V, E, H = max(ids) + 1, a.embed, a.hidden
    batches = [(torch.tensor(x), torch.tensor(y)) for x, y in _batches(ids, a.batch, a.seq_len)]
    torch.manual_seed(0)
    layer = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU}.get(a.cell, partial(torch.nn.RNN, nonlinearity="tanh"))(E, H)
    model = torch.nn.ModuleList([torch.nn.Embedding(V, E), layer, torch.nn.Linear(H, V)])
    optimizer = torch.optim.SGD(model.parameters(), lr=a.lr)
    loss_fn = torch.nn.CrossEntropyLoss()
    run = {"i": 0, "state": None}

    def step():
        x, y = batches[run["i"] % len(batches)]
        run["i"] += 1
        state = run["state"]
        if state is not None:
            state = tuple(s.detach() for s in state) if isinstance(state, tuple) else state.detach()
        out, run["state"] = model[1](model[0](x), state)
        loss = loss_fn(model[2](out).reshape(-1, V), y.reshape(-1))
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), a.clip)
        optimizer.step()
        return loss

    result = timed_steps(step, lambda: None, a.seconds, a.seq_len * a.batch)  # CPU torch runs synchronously
    result["first"], result["last"] = result["first"].item(), result["last"].item()
    return {**result, "vocab": V, "torch": torch.__version__}


def work_denormals(a):
    """Training tokens/s of a run's model (its best weights, or fresh ones with a.fresh) on its own text."""
    from charlm import checkpoint, run as runs, speed, training
    from charlm.engine import mx

    run = runs.find(a.run)
    cfg = run.config()
    cfg.train.epochs, cfg.train.sample_every, cfg.train.time_limit = 10**6, 0, None
    s = training.setup(cfg, mx.cpu(), vocab=run.vocab())  # the run's own: a run --init-from another keeps that one's
    if not a.fresh:
        checkpoint.load_params(s.model, run.path / runs.BEST, mx.cpu())
    watch = speed.time_loop(s, speed.Stopwatch(DENORMAL_WARMUP, every=a.batches, batches=a.batches))
    return {"tokens_per_s": watch.tokens / watch.seconds}


def work_generate(a):
    """Greedy continuation of 1,000 characters by the fixed 2 x 256 LSTM (speed does not depend on the weights)."""
    from charlm import configs as config, data, generate, model as models, recipe
    from charlm.engine import mx

    cfg = recipe.fixed(config.Config())
    vocab, _ = data.corpus_of(cfg.data)
    model = models.build(cfg.model, len(vocab), mx.cpu())
    prefix = vocab.encode("the time ma")
    generate.complete(model, vocab, prefix, 100, mx.cpu())  # builds the graphs
    start = time.perf_counter()
    generate.complete(model, vocab, prefix, 1000, mx.cpu())
    return {"chars_per_s": 1000 / (time.perf_counter() - start)}


def work_corpus(a):
    """Reading and encoding a text file (a.ids): seconds and the id type."""
    from charlm import configs as config, data

    start = time.perf_counter()
    _, ids = data.corpus_of(config.DataConfig(path=a.ids, lowercase=False))
    return {"seconds": time.perf_counter() - start, "dtype": str(ids.dtype), "chars": len(ids)}


WORKERS = {"charlm": work_charlm, "tutorial": work_tutorial, "torch": work_torch, "generate": work_generate,
           "corpus": work_corpus, "denormals": work_denormals}


# The driver.

def measure(python, impl, env=None, **args):
    """Run one worker in a fresh process; its JSON result with the peak RSS."""
    cmd = [python, __file__, "--worker", impl] + [f"--{k.replace('_', '-')}={v}" for k, v in args.items()]
    out = subprocess.run(cmd, cwd=ROOT, check=True, stdout=subprocess.PIPE, text=True, env=env).stdout
    return json.loads(out.strip().splitlines()[-1])


def median_of(results, key="tokens_per_s"):
    return spread([r[key] for r in results])


def fmt(values, scale=1e3, unit="k"):
    mid, lo, hi = values
    return f"{mid / scale:,.1f}{unit} ({lo / scale:,.1f}-{hi / scale:,.1f})"


def compare(args):
    """The headline table: for each shape, charlm's layer, its scratch cell, the tutorial loop, PyTorch."""
    jobs = []
    for shape, cell in SHAPES.items():
        jobs += [(shape, "charlm", cell, sys.executable), (shape, "charlm", "scratch-" + cell, sys.executable),
                 (shape, "tutorial", "scratch-" + cell, sys.executable)]
        if args.torch_python:
            jobs.append((shape, "torch", cell, args.torch_python))
    results = {job[:3]: [] for job in jobs}
    for r in range(args.rounds):
        for shape, impl, cell, python in jobs[r % len(jobs):] + jobs[:r % len(jobs)]:
            results[shape, impl, cell].append(measure(python, impl, cell=cell, seconds=args.seconds,
                                                      **TM))
    print("| shape | implementation | tokens/s, median (min-max) | vs tutorial loop | vs PyTorch "
          "| peak RSS MB | loss first -> last |")
    print("|---|---|---|---|---|---|---|")
    rows = []
    for (shape, impl, cell), rs in results.items():
        mid = median_of(rs)
        tutorial = median_of(results[shape, "tutorial", "scratch-" + SHAPES[shape]])[0]
        torch = results.get((shape, "torch", SHAPES[shape]))
        name = {"charlm": f"charlm `--cell {cell}`", "tutorial": f"tutorial-style loop ({cell})",
                "torch": f"PyTorch {rs[0].get('torch', '')} nn.{cell.upper()}"}[impl]
        vs_torch = f"{mid[0] / median_of(torch)[0]:.2f}x" if torch else "-"
        print(f"| {shape} | {name} | {fmt(mid)} | {mid[0] / tutorial:.1f}x | {vs_torch} "
              f"| {max(x['peak_rss_mb'] for x in rs):.0f} | {rs[0]['first']:.2f} -> {rs[0]['last']:.2f} |")
        rows.append({"shape": shape, "impl": impl, "cell": cell, "runs": rs})
    return rows


def scaling(args):
    """LSTM tokens/s and peak RSS over hidden x batch, charlm against PyTorch when given."""
    impls = [("charlm", sys.executable)] + ([("torch", args.torch_python)] if args.torch_python else [])
    rows = []
    print("| hidden | batch | charlm tokens/s | charlm peak RSS MB |"
          + (" PyTorch tokens/s | PyTorch peak RSS MB | charlm / PyTorch |" if args.torch_python else ""))
    print("|---|---|---|---|" + ("---|---|---|" if args.torch_python else ""))
    for hidden in (128, 256, 512, 1024):
        for batch in (16, 32, 64, 128):
            shape = {**TM, "hidden": hidden, "batch": batch}
            got = {impl: measure(python, impl, cell="lstm", seconds=args.seconds, **shape)
                   for impl, python in impls}
            line = f"| {hidden} | {batch} | {got['charlm']['tokens_per_s'] / 1e3:,.1f}k | " \
                   f"{got['charlm']['peak_rss_mb']:.0f} |"
            if "torch" in got:
                line += f" {got['torch']['tokens_per_s'] / 1e3:,.1f}k | {got['torch']['peak_rss_mb']:.0f} | " \
                        f"{got['charlm']['tokens_per_s'] / got['torch']['tokens_per_s']:.2f}x |"
            print(line, flush=True)
            rows.append({"hidden": hidden, "batch": batch, **got})
    return rows


def extras(args):
    """Generation speed, `charlm generate`, `charlm --help` and `import charlm` wall times, and encoding a 100 MB
    corpus."""
    charlm = [sys.executable, "-m", "charlm"]
    gen = [measure(sys.executable, "generate")["chars_per_s"] for _ in range(3)]
    with tempfile.TemporaryDirectory() as tmp:
        run_charlm("train", "--epochs", "1", "--max-chars", "20000", "--sample-every", "0", "--runs-dir", tmp,
                   "--name", "r", quiet=True)
        generate_s = wall(charlm + ["generate", "the time ma", "--length", "1000", "--run", f"{tmp}/r"])
        big = Path(tmp) / "big.txt"
        book = (ROOT / "data" / "timemachine.txt").read_bytes()
        with open(big, "wb") as f:
            for _ in range(100 * 2**20 // len(book) + 1):
                f.write(book)
        corpus = measure(sys.executable, "corpus", ids=big)
    help_s, import_s = wall(charlm + ["--help"]), wall([sys.executable, "-c", "import charlm"])
    print("| measurement | result | target |")
    print("|---|---|---|")
    print(f"| greedy generation, 1,000 characters, fixed 2 x 256 LSTM | {spread(gen)[0]:,.0f} chars/s "
          f"(min {min(gen):,.0f}) | >= 5,000 |")
    print(f"| `charlm generate \"the time ma\" --length 1000`, process start to exit | {generate_s:.2f} s | < 3 s |")
    print(f"| `charlm --help` | {help_s:.2f} s | < 0.2 s |")
    print(f"| `python -c \"import charlm\"` | {import_s:.2f} s | < 0.2 s |")
    print(f"| encoding a {corpus['chars'] / 1e6:.0f} MB text | {corpus['seconds']:.2f} s, ids as {corpus['dtype']} "
          f"| < 10 s |")
    return {"generate_chars_per_s": gen, "generate_wall_s": generate_s, "help_wall_s": help_s,
            "import_wall_s": import_s, "corpus": corpus}


def denormals(args):
    """Tokens/s of a run's model, its best weights and fresh ones, with subnormal floats flushed and kept: each a
    fresh process, as the flush is set when charlm imports MXNet (CHARLM_FLUSH_DENORMALS=0 keeps them)."""
    print(f"run {args.denormals}, {args.batches} batches after {DENORMAL_WARMUP} warm-up ones\n")
    print("| weights | subnormals | tokens/s |")
    print("|---|---|---|")
    rows = []
    for fresh in (0, 1):
        for flush in ("1", "0"):
            got = measure(sys.executable, "denormals", env={**os.environ, "CHARLM_FLUSH_DENORMALS": flush},
                          run=args.denormals, batches=args.batches, fresh=fresh)
            print(f"| {'fresh initial' if fresh else 'params-best'} | {'flushed' if flush == '1' else 'kept'} | "
                  f"{got['tokens_per_s'] / 1e3:.1f}k |")
            rows.append({"fresh": fresh, "flush": flush, **got})
    return rows


def host_time(args):
    """ms and host CPU ms per step over one epoch of the bundled book after 20 warm-up batches, in this process
    (PYTHONPATH=<a checkout> times another commit); with --busy, extra host work per step; with --profile,
    MXNet's per-op profile of the timed batches."""
    from charlm import engine, speed
    from charlm.engine import mx

    if args.busy:
        keep_up = engine.keep_up

        def busy_keep_up(results):
            start = time.thread_time()
            while time.thread_time() - start < args.busy / 1e3:
                pass
            keep_up(results)
        engine.keep_up = busy_keep_up
    if args.profile:
        # MXNet also writes a trace of every op (100+ MB), by default as ./profile.json: not into the checkout
        trace = os.path.join(tempfile.gettempdir(), "charlm-host-time-profile.json")
        mx.profiler.set_config(profile_all=True, aggregate_stats=True, filename=trace)
    print("| cell | ms per step | host CPU ms per step | tokens/s |")
    print("|---|---|---|---|")
    rows = []
    for cell in args.cells:
        s = tm_setup(cell)
        steps = len(s.train_ids) // (TM["seq_len"] * TM["batch"]) - 20
        if args.profile:
            mx.profiler.set_state("run")
        watch = speed.time_loop(s, speed.Stopwatch(20, every=steps, batches=steps))
        if args.profile:
            mx.profiler.set_state("stop")
            print(f"{steps} steps of {cell}:\n{mx.profiler.dumps(reset=True)}", file=sys.stderr)
        step, host = watch.seconds / watch.batches * 1e3, watch.host / watch.batches * 1e3
        print(f"| {cell} | {step:.2f} | {host:.2f} | {watch.tokens / watch.seconds / 1e3:.1f}k |")
        rows.append({"cell": cell, "ms_per_step": step, "host_ms_per_step": host})
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--torch-python", help="an interpreter that can import torch (adds the PyTorch rows)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=3.0, help="timed seconds per measurement")
    parser.add_argument("--scaling", action="store_true", help="the hidden x batch table instead")
    parser.add_argument("--extras", action="store_true", help="generation, start-up and corpus figures instead")
    parser.add_argument("--denormals", metavar="RUN", help="a run's training speed, subnormals flushed and kept")
    parser.add_argument("--batches", type=int, default=600, help="--denormals: batches timed after the warm-up")
    parser.add_argument("--host-time", action="store_true", help="ms and host CPU ms per tm step instead")
    parser.add_argument("--cells", nargs="+", default=["lstm", "rnn"], help="--host-time: cells at the tm shape")
    parser.add_argument("--busy", type=float, default=0.0, help="--host-time: extra host work per step, ms")
    parser.add_argument("--profile", action="store_true", help="--host-time: MXNet's per-op profile on stderr")
    parser.add_argument("--json", help="write the measurements here")
    parser.add_argument("--worker", choices=WORKERS, help=argparse.SUPPRESS)
    for name, value in {**TM, "cell": "lstm", "ids": "", "run": "", "fresh": 0}.items():
        parser.add_argument(f"--{name.replace('_', '-')}", type=type(value), default=value, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        result = WORKERS[args.worker](args)
        print(json.dumps({**result, "peak_rss_mb": peak_rss_mb()}))
        return
    print(stamp())
    if args.host_time:
        results = host_time(args)
    elif args.denormals:
        results = denormals(args)
    elif args.extras:
        results = extras(args)
    elif args.scaling:
        results = scaling(args)
    else:
        results = compare(args)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
