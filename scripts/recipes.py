"""Measure the automatic recipe, docs/results.md's tables under "The automatic recipe" (run, table, levers,
study-table) and its speed table by hidden size (speed): hand-picked configurations, the fixed settings
(configs/fixed.yaml) and `charlm train --data X --time-limit B` with nothing else, each given the same text
and time budget.

    python scripts/recipes.py run --data pride_and_prejudice.txt --budget 5m       # every point
    python scripts/recipes.py run --data FILE --budget 10m --points auto fixed h2 h3
    python scripts/recipes.py run --budget 5m --custom no-ema '{"train.ema": 0}'  # the recipe but one setting
    python scripts/recipes.py run --data FILE --level word --budget 5m --points auto fixed  # words
    python scripts/recipes.py cut --data FILE --chars 100000 -o cut.txt   # the first N characters of a text
    python scripts/recipes.py study --data FILE --budget 5m               # the recipe, then its neighbours
    python scripts/recipes.py study-table                                 # the recipe against its neighbours
    python scripts/recipes.py budgets --text pride_and_prejudice.txt      # the recipe's runs by budget
    python scripts/recipes.py budgets --point cosine                      # a --custom point's, by budget
    python scripts/recipes.py parts --at "End of the Project Gutenberg"   # their held-out text in two parts
    python scripts/recipes.py table                                       # the results so far, as Markdown
    python scripts/recipes.py levers                                      # the lever table, from those results

Each run is a `charlm train` process; its result (best validation loss in nats per character, epochs, tokens/s,
peak RSS) is appended to runs/recipes/results.jsonl, and `table` prints them grouped by text and budget.
Run nothing else heavy at the same time: the budget is wall time, and a second busy process halves the
work done in it. To measure two runs at once on two cores, give each one core:
`taskset -c 0 env OMP_NUM_THREADS=1 python scripts/recipes.py run ...` and `taskset -c 1 ...` beside it."""
import argparse
import json
import math
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import yaml
from timing import ROOT, cores

sys.path.insert(0, str(ROOT))

from charlm import recipe  # noqa: E402 (no MXNet)

RUNS = ROOT / "runs" / "recipes"
RESULTS = RUNS / "results.jsonl"
# every setting the recipe would choose, given (the levers off unless a point turns them on)
OFF = {"model.cell": "lstm", "model.embed_size": 64, "model.variational_dropout": False, "model.tie_weights": False,
       "model.weight_drop": 0.0, "train.lr": 3e-3, "train.patience": 0, "train.weight_decay": 0.0, "train.ema": 0.0}
HAND = {**OFF, "train.lr_schedule": "cosine", "train.warmup": 100, "train.epochs": 10_000}
def _hand(hidden, dropout, layers=2, seq_len=64, batch=32, **more):
    """A hand-picked point: HAND with this model and these batches ({"model.cell": "gru"} and the like in more)."""
    return {**HAND, "model.hidden_size": hidden, "model.num_layers": layers, "model.dropout": dropout,
            "data.seq_len": seq_len, "data.batch_size": batch, **{k.replace("__", "."): v for k, v in more.items()}}


# Hand-picked configurations: each a plausible pick for a mid-sized text and a few minutes of two cores.
POINTS = {
    "fixed": dict(recipe.FIXED),  # configs/fixed.yaml's settings, all given, so nothing is chosen
    "auto": None,  # only --data and --time-limit: the automatic recipe
    "h1": _hand(256, 0.2),
    "h2": _hand(384, 0.2),
    "h3": _hand(512, 0.25, train__lr=2e-3),
    "h4": _hand(512, 0.1, layers=1),
    "h5": _hand(256, 0.1, seq_len=128),
    "h6": _hand(256, 0.2, batch=64, train__lr=4e-3),
    "h7": _hand(384, 0.2, model__cell="gru"),
    "h8": _hand(256, 0.2, layers=3),
    "h9": _hand(384, 0.2, train__ema=0.999, train__weight_decay=0.01),
}


def run(data, budget, point, sets, level="char"):
    """Train one point at this level (char or word); return its result record."""
    text = (Path(data).name if data else "the bundled Time Machine (lowercased)") + (", words" if level == "word"
                                                                                       else "")
    name = f"{Path(data).stem if data else 'book'}-{level}-{budget}-{point}-{time.strftime('%Y%m%d-%H%M%S')}"
    args = ["train", *(["--data", data] if data else []), "--level", level, "--time-limit", budget, "--runs-dir",
            RUNS, "--name", name, "--sample-every", 0]
    if sets is not None:
        args += [a for k, v in sets.items() for a in ("--set", f"{k}={json.dumps(v)}")]
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "charlm", *map(str, args)], cwd=ROOT, stdout=subprocess.PIPE,
                            text=True)
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    if status:
        raise SystemExit(f"{point}: charlm train failed ({status})")
    records = [json.loads(line) for line in (RUNS / name / "metrics.jsonl").read_text().splitlines()]
    best = min(records, key=lambda r: r["val_loss"])
    return {"text": text, "budget": budget, "point": point, "sets": sets, "run": name,
            "first_line": out.splitlines()[0], "val_loss": best["val_loss"], "best_epoch": best["epoch"],
            "epochs": records[-1]["epoch"], "tokens_per_s": sum(r["tokens_per_s"] for r in records) / len(records),
            "wall_s": seconds, "peak_rss_mb": usage.ru_maxrss / 1024,
            "date": time.strftime("%Y-%m-%d"), "machine": f"{platform.machine()}, {cores()} cores"}


def word_fixed(data):
    """The fixed settings for a word-level text, with the vocabulary the recipe gives it: both predict the same
    tokens, so their perplexities compare."""
    from charlm import configs, data as corpora

    cfg = configs.resolve(sets=["data.level=word", *([f"data.path={data}"] if data else [])])
    return {**POINTS["fixed"], "data.max_vocab": recipe.word_vocab(corpora.corpus_of(cfg.data)[1])}


def speed_worker(hidden, seconds, sets):
    """Training tokens/s of the recipe's 2-layer LSTM at this hidden size, with the bundled book's batches and
    vocabulary, in this process."""
    from charlm import configs, speed as speeds
    from charlm.engine import mx

    cfg = configs.resolve(sets=[f"model.hidden_size={hidden}", "train.time_limit=1h", *sets])
    recipe.fill(cfg)
    vocab = recipe.text_size(cfg.data)[2]
    tokens_per_s = speeds.tokens_per_second(cfg, vocab, mx.cpu(), seconds)
    print(json.dumps({"hidden": hidden, "tokens_per_s": tokens_per_s, "vocab": vocab}))


def speed(seconds, hiddens, sets):
    """The SPEED table of charlm/recipe.py: tokens/s by hidden size, each in a fresh process."""
    print("| hidden | tokens/s |\n|---|---|")
    for hidden in hiddens:
        out = subprocess.run([sys.executable, __file__, "speed-worker", "--hidden", str(hidden), "--seconds",
                              str(seconds), *[arg for s in sets for arg in ("--set", s)]],
                             check=True, stdout=subprocess.PIPE, text=True).stdout
        print(f"| {hidden} | {json.loads(out)['tokens_per_s'] / 1e3:.1f}k |", flush=True)


def table():
    """The results, a table per (text, budget), best first."""
    rows = [json.loads(line) for line in RESULTS.read_text().splitlines()]
    groups = {}
    for r in rows:
        groups.setdefault((r["text"], r["budget"]), []).append(r)
    for (text, budget), group in groups.items():
        print(f"\n{text}, --time-limit {budget} ({group[0]['date']}, {group[0]['machine']}):\n")
        unit = "word" if text.endswith(", words") else "char"
        print(f"| point | val loss (nats/{unit}) | val ppl per {unit} | best epoch / epochs | tokens/s | settings |")
        print("|---|---|---|---|---|---|")
        for r in sorted(group, key=lambda r: r["val_loss"]):
            if r["sets"] is None:
                sets = "the recipe"
            elif r["point"] not in POINTS:  # a custom point: the recipe with these settings given
                sets = "the recipe with " + ", ".join(f"{k}={v}" for k, v in r["sets"].items())
            else:
                sets = ", ".join(f"{k}={v}" for k, v in r["sets"].items() if HAND.get(k, "-") != v)
            print(f"| {r['point']} | {r['val_loss']:.4f} | {math.exp(r['val_loss']):.3f} | {r['best_epoch']} / "
                  f"{r['epochs']} | {r['tokens_per_s'] / 1e3:.1f}k | {sets} |")


# the lever table's rows: the point that changes one setting, what it changes, whether the recipe has the lever
# on (then the point turns it off), and the point it is measured against: the recipe, or the recipe untied
LEVERS = [("untied", "tied embedding and output weights (against a 64-wide embedding)", True, "auto"),
          ("exp-schedule", "cosine schedule over the budget (against exp, x0.93 per epoch)", True, "untied"),
          ("no-ema", "averaged weights, EMA 0.999", True, "untied"),
          ("tm-16x32-novar", "variational dropout (one mask per sequence)", True, "untied"),
          ("tm-16x64", "BPTT length 32 (against 64)", True, "untied"),
          ("weight-decay", "weight decay 0.1 (AdamW)", False, "untied"),
          ("no-weight-drop", "weight drop 0.2 on the recurrent weights", True, "auto"),
          ("ema-0.999", "an average over the last third of the updates (against EMA 0.999)", True, "auto")]


def levers(text):
    """The lever table for one text: the recipe's validation loss against the recipe with one lever changed."""
    rows = [json.loads(line) for line in RESULTS.read_text().splitlines()]
    last = {r["point"]: r for r in rows if r["text"] == text}
    print(f"{text}, --time-limit {last['auto']['budget']} ({last['auto']['date']}, {last['auto']['machine']}):\n")
    print("| lever | against | val loss with | val loss without | gain |\n|---|---|---|---|---|")
    for name, lever, on, base in LEVERS:
        if name in last:
            with_, without = (last[base], last[name]) if on else (last[name], last[base])
            gain = (without["val_loss"] - with_["val_loss"]) / without["val_loss"]
            against = "the recipe" if base == "auto" else "the recipe untied"
            print(f"| {lever}{' (in the recipe)' if on else ''} | {against} "
                  f"| {with_['val_loss']:.4f} | {without['val_loss']:.4f} | {gain:+.1%} |")


def neighbours(model):
    """The recipe's neighbours for the model of a run: one size smaller and one larger (the rest chosen for that
    size), and dropout 0.15 lower and higher at the same size."""
    sizes, hidden, dropout = sorted(recipe.SPEED), model["hidden_size"], model["dropout"]
    out = {}
    if hidden in sizes and hidden > sizes[0]:
        out["smaller"] = {"model.hidden_size": sizes[sizes.index(hidden) - 1]}
    if hidden in sizes and hidden < sizes[-1]:
        out["larger"] = {"model.hidden_size": sizes[sizes.index(hidden) + 1]}
    for name, step in (("less-dropout", -0.15), ("more-dropout", 0.15)):
        out[name] = {"model.hidden_size": hidden, "model.dropout": round(min(0.7, max(0.0, dropout + step)), 2)}
    return out


def study(data, budget):
    """Train the recipe for a text and a budget, then each of its neighbours; their records, as each ends."""
    auto = run(data, budget, "auto", None)
    yield auto
    model = yaml.safe_load((RUNS / auto["run"] / "config.yaml").read_text())["model"]
    for name, sets in neighbours(model).items():
        yield run(data, budget, name, sets)


def by_budget(text, point="auto"):
    """(budget, record) of a point's latest run at each budget for one text, the shortest budget first."""
    from charlm.configs import duration

    rows = [json.loads(line) for line in RESULTS.read_text().splitlines()]
    latest = {r["budget"]: r for r in rows if r["text"] == text and r["point"] == point}
    return sorted(latest.items(), key=lambda item: duration(item[0]))


def budgets(text, point="auto"):
    """A point (the recipe: auto) at each budget it ran for one text: what it chose, where its best epoch fell,
    and how far below the next shorter budget it ended."""
    print("| budget | the recipe's choice | exposure | val loss | best epoch / epochs | val loss over the last quarter "
          "of the epochs | below the shorter budget |")
    print("|---|---|---|---|---|---|---|")
    before = None
    for budget, r in by_budget(text, point):
        m, t = (yaml.safe_load((RUNS / r["run"] / "config.yaml").read_text())[k] for k in ("model", "train"))
        choice = f"{m['num_layers']} x {m['hidden_size']}, dropout {m['dropout']:g}" + (
            f", weight drop {m['weight_drop']:g}" if m["weight_drop"] else "") + (
            f", weight decay {t['weight_decay']:g}" if t["weight_decay"] else "")
        exposure = r["first_line"].split("exposure ")[1].split(")")[0] if "exposure " in r["first_line"] else "-"
        below = f"{(before - r['val_loss']) / before:.1%}" if before else "-"
        records = [json.loads(line) for line in (RUNS / r["run"] / "metrics.jsonl").read_text().splitlines()]
        last = [x["val_loss"] for x in records if x["epoch"] > 0.75 * r["epochs"]]
        print(f"| {budget} | {choice} | {exposure} | {r['val_loss']:.4f} | {r['best_epoch']} / {r['epochs']} | "
              f"{last[0]:.4f} to {last[-1]:.4f} | {below} |")
        before = r["val_loss"]


def parts(text, marker, point="auto"):
    """A point's runs by budget for one text, their best weights scored on the held-out text in two parts: before
    the first `marker` in it, and from there on."""
    from charlm import api, data
    from charlm.errors import CharlmError

    print(f"| budget | val loss | before \"{marker}\" | from there on |\n|---|---|---|---|")
    for budget, r in by_budget(text, point):
        try:
            lm = api.load(RUNS / r["run"])
        except CharlmError as e:  # a run directory moved or cleared since it was measured
            raise SystemExit(f"{budget}: {e}") from None
        held_out = lm.vocab.decode(data.split_corpus(lm.config, lm.vocab, data.corpus_of(lm.config.data,
                                                                                          vocab=lm.vocab)[1])[1])
        at = held_out.find(marker)
        if at < 0:
            raise SystemExit(f"{marker!r} is not in {text}'s held-out text")
        head, tail = lm.score(held_out[:at]), lm.score(held_out[at:])
        print(f"| {budget} | {r['val_loss']:.4f} | {head['loss']:.4f} ({head['tokens']:,} characters) | "
              f"{tail['loss']:.4f} ({tail['tokens']:,} characters) |")


def study_table():
    """The recipe against its neighbours, a row per text and budget: how near the best of them it is."""
    rows = [json.loads(line) for line in RESULTS.read_text().splitlines()]
    groups = {}
    for r in rows:
        groups.setdefault((r["text"], r["budget"]), {})[r["point"]] = r  # the latest of each point
    names = ["smaller", "larger", "less-dropout", "more-dropout"]
    print("| text | budget | the recipe's choice | the recipe | " + " | ".join(names) + " | against the best |")
    print("|---" * (len(names) + 5) + "|")
    for (text, budget), points in groups.items():
        if "auto" not in points or not any(n in points for n in names):
            continue
        auto = points["auto"]
        model = yaml.safe_load((RUNS / auto["run"] / "config.yaml").read_text())["model"]
        others = [points[n]["val_loss"] for n in names if n in points]
        cells = [f"{points[n]['val_loss']:.4f}" if n in points else "-" for n in names]
        gap = (auto["val_loss"] - min(others + [auto["val_loss"]])) / min(others + [auto["val_loss"]])
        choice = f"{model['num_layers']} x {model['hidden_size']}, dropout {model['dropout']:g}" + (
            f", weight drop {model['weight_drop']:g}" if model["weight_drop"] else "")
        print(f"| {text} | {budget} | {choice} | {auto['val_loss']:.4f} | " + " | ".join(cells) + f" | {gap:+.1%} |")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("run")
    p.add_argument("--data", help="a text file (default: the bundled Time Machine)")
    p.add_argument("--budget", required=True)
    p.add_argument("--points", nargs="+", default=list(POINTS), choices=list(POINTS))
    p.add_argument("--custom", nargs=2, metavar=("NAME", "JSON"),
                   help='instead of --points, the recipe with these settings given: {"model.dropout": 0.3}')
    p.add_argument("--level", choices=("char", "word"), default="char",
                   help="tokens; at word level the fixed settings get the recipe's vocabulary")
    c = sub.add_parser("cut")
    c.add_argument("--data", required=True, nargs="+", help="texts, concatenated")
    c.add_argument("--chars", type=int, default=0, help="keep the first N characters (0: all)")
    c.add_argument("-o", "--output", required=True)
    st = sub.add_parser("study")
    st.add_argument("--data", help="a text file (default: the bundled Time Machine)")
    st.add_argument("--budget", required=True)
    sub.add_parser("study-table")
    bu = sub.add_parser("budgets")
    pa = sub.add_parser("parts")
    pa.add_argument("--at", required=True, help="where the second part of the held-out text starts")
    for parser_ in (bu, pa):
        parser_.add_argument("--text", default="pride_and_prejudice.txt")
        parser_.add_argument("--point", default="auto", help="auto (the recipe) or a --custom point's name")
    sub.add_parser("table")
    lv = sub.add_parser("levers")
    lv.add_argument("--text", default="the bundled Time Machine (lowercased)")
    sp = sub.add_parser("speed")
    sp.add_argument("--seconds", type=float, default=8.0)
    sp.add_argument("--hidden", type=int, nargs="+", default=sorted(recipe.SPEED))
    w = sub.add_parser("speed-worker")
    w.add_argument("--hidden", type=int, required=True)
    w.add_argument("--seconds", type=float, required=True)
    for parser_ in (sp, w):
        parser_.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                             help="a setting beside the recipe's, as charlm's --set")
    a = parser.parse_args()
    if a.command == "table":
        return table()
    if a.command == "study-table":
        return study_table()
    if a.command == "budgets":
        return budgets(a.text, a.point)
    if a.command == "parts":
        return parts(a.text, a.at, a.point)
    if a.command == "levers":
        return levers(a.text)
    if a.command == "speed":
        return speed(a.seconds, a.hidden, a.set)
    if a.command == "speed-worker":
        return speed_worker(a.hidden, a.seconds, a.set)
    if a.command == "cut":
        text = "".join(Path(d).read_text(encoding="utf-8") for d in a.data)
        Path(a.output).write_text(text[:a.chars] if a.chars else text, encoding="utf-8")
        return
    RUNS.mkdir(parents=True, exist_ok=True)
    if a.command == "study":
        results = study(a.data, a.budget)
    else:
        points = {a.custom[0]: json.loads(a.custom[1])} if a.custom else {p: POINTS[p] for p in a.points}
        if a.level == "word" and "fixed" in points:
            points["fixed"] = word_fixed(a.data)
        results = (run(a.data, a.budget, point, sets, a.level) for point, sets in points.items())
    for result in results:
        with open(RESULTS, "a", encoding="utf-8") as f:
            f.write(json.dumps(result) + "\n")
        print(f"{result['point']}: val loss {result['val_loss']:.4f} (epoch {result['best_epoch']} of "
              f"{result['epochs']})", flush=True)


if __name__ == "__main__":
    main()
