"""Config sweeps: a W&B-style sweep file expanded into runs (grid or random), run as `charlm train`
processes, resumed when re-run, and summarised by the chosen metric; bayes and early_terminate live in study.py."""
import contextlib
import importlib.util
import itertools
import json
import math
import os
import re
import stat
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import configs, summary as summaries, trainers
from .errors import CharlmError
from .run import CONFIG, Run, read_json, write_text

METRICS = ("val_ppl", "val_loss", "val_bpc", "train_ppl", "train_loss", "train_bpc")
METHODS = ("grid", "random", "bayes")
DISTRIBUTIONS = ("uniform", "log_uniform_values", "int_uniform")
FAILURES = "failures.json"
SUMMARY_EVERY = 10.0  # seconds between rewrites of summary.csv while a sweep runs: each is a whole file and an fsync
MAX_RUNS = 10_000  # each run is a training process: a larger run_cap is a slip, and its plan would not fit in memory
MAX_NODES = 100_000  # values in a sweep file with its aliases expanded: beyond, printing or walking it could hang
MAX_BOUND = 2**53  # distribution bounds: beyond, floats skip integers and the draws overflow
MAX_NAME = 255  # bytes in a file name on Linux and macOS file systems: a run's name is a directory
CONTROL = re.compile(r"[\x00-\x1f\x7f]")  # in a run's name, a terminal line or a --set argument
EXTRA = "pip install 'charlm[sweep]'"


@dataclass
class Sweep:
    """A parsed sweep file."""
    name: str
    base: list
    method: str
    metric: str
    goal: str
    run_cap: int
    seed: int
    parameters: dict  # "section.key" -> spec
    early_terminate: dict = None  # {"min_iter": m, "eta": e}, the first epoch that may stop a run and the cut

    @property
    def uses_study(self):
        """Whether the sweep needs an Optuna study (bayes sampling or early termination)."""
        return self.method == "bayes" or self.early_terminate is not None


def _check_spec(key, spec, method, path):
    where = f"{path}: parameters.{key}"
    if not isinstance(spec, dict):
        raise CharlmError(f"{where} must be a mapping with values, value or distribution")
    if "value" in spec:
        spec = {"values": [spec["value"]]}
    if "values" in spec:
        if not isinstance(spec["values"], list) or not spec["values"]:
            raise CharlmError(f"{where}.values must be a non-empty list")
        for value in spec["values"]:
            _check_flat(value, where)
            _check_text(value, where)
        return {"values": spec["values"]}
    if method == "grid":
        raise CharlmError(f"{where}: a grid sweep takes only values, not a distribution (use method: random)")
    dist = spec.get("distribution")
    if dist not in DISTRIBUTIONS:
        raise CharlmError(f"{where}.distribution must be one of {', '.join(DISTRIBUTIONS)}, got {dist!r}")
    low, high = spec.get("min"), spec.get("max")
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and abs(v) <= MAX_BOUND for v in (low, high)) \
            or not low <= high:
        raise CharlmError(f"{where} needs numbers min <= max within ±2**53, got min {low!r}, max {high!r}")
    if dist == "int_uniform" and not (isinstance(low, int) and isinstance(high, int)):
        raise CharlmError(f"{where}: int_uniform needs integer min and max, got min {low!r}, max {high!r}")
    if dist == "log_uniform_values" and low <= 0:
        raise CharlmError(f"{where}: log_uniform_values needs min > 0")
    return {"distribution": dist, "min": low, "max": high}


def expanded_size(node, sizes=None):
    """How many values node holds with its YAML aliases expanded, counted once per shared node (linear time)."""
    sizes = {} if sizes is None else sizes
    if not isinstance(node, (list, dict)):
        return 1
    if id(node) not in sizes:
        sizes[id(node)] = 0  # a node that holds itself (a recursive alias) counts once
        items = list(node) + list(node.values()) if isinstance(node, dict) else node
        sizes[id(node)] = 1 + sum(expanded_size(item, sizes) for item in items)
    return sizes[id(node)]


def _check_flat(value, where):
    """Refuse a value nested deeper than a flat list or mapping of scalars: YAML aliases nested in one another
    would expand exponentially in every later walk over it (names, signatures, command lines)."""
    items = list(value) + list(value.values()) if isinstance(value, dict) else value if isinstance(value, list) else ()
    if any(isinstance(item, (list, dict)) for item in items):
        raise CharlmError(f"{where}: a value is a scalar or a flat list or mapping of scalars, not nested deeper")


def _check_text(value, where):
    """Refuse NUL and control characters in a value: they would go into a directory name and a command line."""
    if isinstance(value, str) and CONTROL.search(value):
        raise CharlmError(f"{where}: value {value!r} holds a control character (NUL, tab, line break ...)")
    for item in (list(value) + list(value.values()) if isinstance(value, dict)
                 else value if isinstance(value, list) else ()):
        _check_text(item, where)


def _early_terminate(spec, path):
    """W&B's hyperband keys as the first epoch that may stop a run (min_iter) and the reduction factor eta."""
    where = f"{path}: early_terminate"
    if not isinstance(spec, dict) or spec.get("type") != "hyperband":
        got = spec.get("type") if isinstance(spec, dict) else spec
        raise CharlmError(f"{where}.type must be hyperband, got {got!r}")
    keys = {"type", "min_iter", "max_iter", "s", "eta"}  # W&B's strict has no counterpart here: refused
    if set(spec) - keys:
        raise CharlmError(f"{where}: unknown key {sorted(set(spec) - keys, key=str)[0]!r}; valid keys: "
                          f"{', '.join(sorted(keys))}")

    def whole(key, low, default=None):
        value = spec.get(key, default)
        if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= MAX_RUNS:
            raise CharlmError(f"{where}.{key} must be an integer from {low} to {MAX_RUNS}, got {value!r}")
        return value
    eta = whole("eta", 2, 3)
    if "min_iter" in spec:
        if "max_iter" in spec or "s" in spec:
            raise CharlmError(f"{where}: give min_iter, or max_iter and s, not both")
        return {"min_iter": whole("min_iter", 1), "eta": eta}
    if "max_iter" not in spec or "s" not in spec:
        raise CharlmError(f"{where} needs min_iter, or max_iter and s")
    max_iter, s = whole("max_iter", 1), whole("s", 0)
    if eta ** s > max_iter:
        raise CharlmError(f"{where}: max_iter / eta**s must be at least 1 epoch, got {max_iter} / {eta}**{s}")
    return {"min_iter": max_iter // eta ** s, "eta": eta}


def _need_optuna(what, path):
    if importlib.util.find_spec("optuna") is None:  # only whether it is installed: the study imports it when used
        raise CharlmError(f"{path}: {what} needs Optuna: {EXTRA}")


def load(path):
    """Read and check a sweep file; its name is the file's stem."""
    path = Path(path)
    if path.stem in ("", ".", "..") or CONTROL.search(path.stem):  # the stem names the sweep's directory
        raise CharlmError(f"{path}: a sweep file's name (without .yaml) names its directory in the runs directory: "
                          f"give it a plain name, not {path.stem!r}")
    doc, _ = configs.read_yaml(path, "sweep file ")
    try:
        size = expanded_size(doc)
    except RecursionError:
        size = math.inf
    if size > MAX_NODES:
        raise CharlmError(f"{path}: the sweep file expands to more than {MAX_NODES:,} values or nests too deep (YAML "
                          f"aliases nested in one another?)")
    if not isinstance(doc, dict):
        raise CharlmError(f"{path}: a sweep file is a mapping with base, method, metric and parameters")
    known = {"base", "method", "metric", "run_cap", "seed", "parameters", "early_terminate"}
    if set(doc) - known:
        unknown = sorted(set(doc) - known, key=str)[0]  # YAML keys need not be strings
        raise CharlmError(f"{path}: unknown key {unknown!r}; valid keys: {', '.join(sorted(known))}")
    method = doc.get("method", "grid")
    if not isinstance(method, str) or method not in METHODS:
        raise CharlmError(f"{path}: method must be one of {', '.join(METHODS)}, got {method!r}")
    metric = {} if doc.get("metric") is None else doc["metric"]
    if not isinstance(metric, dict):
        raise CharlmError(f"{path}: metric must be a mapping like {{name: val_ppl, goal: minimize}}, got {metric!r}")
    name, goal = metric.get("name", "val_ppl"), metric.get("goal", "minimize")
    if not isinstance(name, str) or not isinstance(goal, str) or name not in METRICS \
            or goal not in ("minimize", "maximize"):
        raise CharlmError(f"{path}: metric needs name in {', '.join(METRICS)} and goal minimize or maximize")
    run_cap = doc.get("run_cap")
    if run_cap is None and method != "grid":
        raise CharlmError(f"{path}: a {method} sweep needs run_cap (how many runs to draw)")
    if run_cap is not None and (not isinstance(run_cap, int) or isinstance(run_cap, bool)
                                or not 1 <= run_cap <= MAX_RUNS):
        raise CharlmError(f"{path}: run_cap must be an integer from 1 to {MAX_RUNS}, got {run_cap!r}")
    seed = doc.get("seed", 0)
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise CharlmError(f"{path}: seed must be a non-negative integer, got {seed!r}")
    params = doc.get("parameters")
    if not isinstance(params, dict) or not params:
        raise CharlmError(f"{path}: parameters must map section.key to values or a distribution")
    valid = {f"{s}.{f.name}" for s, f in configs.keys()}
    for key in params:
        if key not in valid:
            raise CharlmError(f"{path}: unknown parameter {key!r}; valid keys: {', '.join(sorted(valid))}")
    base = doc.get("base")
    base = [] if base is None else [base] if isinstance(base, str) else base
    if not isinstance(base, list) or not all(isinstance(file, str) for file in base):
        raise CharlmError(f"{path}: base must be a config file path or a list of them, got {doc['base']!r}")
    for file in base:
        if not Path(file).is_file():
            raise CharlmError(f"{path}: base config {file} not found (paths are relative to the current directory)")
    early = None if doc.get("early_terminate") is None else _early_terminate(doc["early_terminate"], path)
    sweep = Sweep(path.stem, base, method, name, goal, run_cap, seed,
                  {k: _check_spec(k, v, method, path) for k, v in params.items()}, early)
    if method == "bayes":
        _need_optuna("method: bayes", path)
    if early:
        _need_optuna("early_terminate", path)
    _check_size(sweep, path)
    return sweep


def size(sweep):
    """How many runs the sweep plans, counted without building them."""
    if sweep.method != "grid":
        return sweep.run_cap
    count = math.prod(len(spec["values"]) for spec in sweep.parameters.values())
    return count if sweep.run_cap is None else min(count, sweep.run_cap)


def _check_size(sweep, path):
    """Refuse a grid of more than MAX_RUNS runs, and names longer than a file name may be, before any is made."""
    if size(sweep) > MAX_RUNS:
        raise CharlmError(f"{path}: the grid has {size(sweep):,} points, more than {MAX_RUNS:,} runs; "
                          f"give run_cap or fewer values")
    widest = {k: max(len(_fmt(v).encode()) for v in (spec["values"] if "values" in spec
                                                    else (spec["min"], spec["max"], -1.23e-45)))
              for k, spec in sweep.parameters.items()}
    longest = len(f"{size(sweep):03d}-") + sum(len(k.split(".")[-1]) + 2 + n for k, n in widest.items()
                                                if k in varying(sweep))
    if longest > MAX_NAME:
        raise CharlmError(f"{path}: run names would reach {longest} bytes, more than a file name's {MAX_NAME}; "
                          f"sweep fewer keys or shorter values")


def varying(sweep):
    """The swept keys that take more than one value: run names show these."""
    return [k for k, spec in sweep.parameters.items() if len(spec.get("values", [0, 1])) > 1]


def _draw(spec, rng):
    if "values" in spec:
        return spec["values"][int(rng.integers(len(spec["values"])))]
    low, high = spec["min"], spec["max"]
    if spec["distribution"] == "int_uniform":
        return int(rng.integers(low, high + 1))
    if spec["distribution"] == "log_uniform_values":
        return float(math.exp(rng.uniform(math.log(low), math.log(high))))
    return float(rng.uniform(low, high))


def _fmt(value):
    text = f"{value:.3g}" if isinstance(value, float) else str(value)
    return text.replace("/", "_").replace(" ", "_")


def plan(sweep):
    """The runs of a grid or random sweep in order, as [(run name, {key: value})]."""
    keys = list(sweep.parameters)
    if sweep.method == "grid":
        points = itertools.product(*(sweep.parameters[k]["values"] for k in keys))
        points = [dict(zip(keys, p)) for p in itertools.islice(points, sweep.run_cap)]
    else:
        rng = np.random.default_rng(sweep.seed)
        points = [{k: _draw(sweep.parameters[k], rng) for k in keys} for _ in range(sweep.run_cap)]
    return [(run_name(sweep, i, p), p) for i, p in enumerate(points)]


def run_name(sweep, number, point):
    """The directory name of the sweep's run `number` at point."""
    return f"{number:03d}-" + ",".join(f"{k.split('.')[-1]}={_fmt(point[k])}" for k in varying(sweep))


def status(run_dir, failures):
    """finished, failed, interrupted (resumable) or new."""
    if (run_dir / CONFIG).exists() and Run(run_dir).read_state().get("status") == "finished":
        return "finished"  # whatever an attempt recorded: another process (a resume, a second sweep) finished it
    if run_dir.name in failures:
        return "failed"
    return "interrupted" if (run_dir / CONFIG).exists() else "new"


def command(sweep, sweep_dir, name, point, state):
    """The `charlm train` command line of one run: a new run, or --resume of an interrupted one."""
    if state == "interrupted":
        return [sys.executable, "-m", "charlm", "train", "--resume", str(sweep_dir / name)]
    sets = [arg for k, v in point.items() for arg in ("--set", configs.set_arg(k, v))]
    files = [arg for f in sweep.base for arg in ("-c", f)]
    return [sys.executable, "-m", "charlm", "train", *files, *sets, "--runs-dir", str(sweep_dir), "--name", name]


def check_writable(sweep_dir):
    """Refuse a sweep directory that could not be made or written, before anything runs (--dry-run too)."""
    there = Path(sweep_dir)
    while not there.exists() and there != there.parent:
        there = there.parent
    if not there.is_dir():
        raise CharlmError(f"cannot write the sweep directory {sweep_dir}: {there} is not a directory")
    if not os.access(there, os.W_OK | os.X_OK):
        raise CharlmError(f"cannot write the sweep directory {sweep_dir}: {there} is not writable")


def dry_run(sweep, sweep_dir):
    """[(status, run directory)] of a grid or random sweep's planned runs; nothing is written."""
    check_writable(sweep_dir)
    failures = recorded_failures(sweep_dir)
    return [(status(sweep_dir / name, failures), sweep_dir / name) for name, _ in plan(sweep)]


def prepare(sweep_dir):
    """Make the sweep directory and its logs directory; a runs directory that cannot be written is one line."""
    check_writable(sweep_dir)
    logs = sweep_dir / "logs"
    try:
        sweep_dir.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileExistsError):
            logs.mkdir()
        kind = logs.lstat().st_mode
    except OSError as e:
        raise CharlmError(f"cannot write the sweep directory {sweep_dir}: {e.strerror}") from None
    if not stat.S_ISDIR(kind):  # a received sweep directory's logs may link anywhere: charlm writes through no link
        raise CharlmError(f"{logs} is not a directory (a symbolic link?): charlm writes its logs only into a real "
                          f"directory (remove it)")


def execute(sweep, sweep_dir, jobs=1, on_done=None):
    """Run every unfinished planned run, `jobs` at a time, recording failures; after each, on_done(its row)."""
    trainers.check_jobs(jobs)
    prepare(sweep_dir)
    failures = recorded_failures(sweep_dir)
    planned = plan(sweep)
    rows = {name: row(sweep, sweep_dir, name, point, failures) for name, point in planned}
    todo = [(n, p, s) for n, p in planned if (s := status(sweep_dir / n, {})) != "finished"]
    running, written = [], time.monotonic()
    try:
        while todo or running:
            while todo and len(running) < jobs:
                name, point, state = todo.pop(0)
                failures.pop(name, None)  # a re-run retries failed runs
                log = sweep_dir / "logs" / f"{name}.log"
                running.append((trainers.launch(command(sweep, sweep_dir, name, point, state), log, jobs), name, point, log))
            done = next((job for job in running if job[0].poll() is not None), None)
            if done is None:
                time.sleep(0.2)
                continue
            running.remove(done)
            proc, name, point, log = done
            if proc.returncode != 0:
                failures[name] = trainers.last_error(log)
            write_text(sweep_dir / FAILURES, json.dumps(failures, indent=2, ensure_ascii=False) + "\n")
            rows[name] = row(sweep, sweep_dir, name, point, failures)
            if time.monotonic() - written >= SUMMARY_EVERY:
                summaries.write(summaries.ordered(sweep, rows.values()), sweep_dir)
                written = time.monotonic()
            if on_done:
                on_done(rows[name])
    finally:  # interrupted: stop the runs so they checkpoint; a re-run resumes them
        trainers.stop([proc for proc, *_ in running])
    rows = summaries.ordered(sweep, rows.values())
    summaries.write(rows, sweep_dir)
    return rows


def recorded_failures(sweep_dir):
    """The recorded failures of a sweep directory: {run name: error}."""
    path = sweep_dir / FAILURES
    failures = read_json(path) if path.exists() else {}
    if not isinstance(failures, dict):
        raise CharlmError(f"{path} is damaged (not a JSON object); delete it to retry every unfinished run")
    return failures


def summary(sweep, sweep_dir):
    """One row per planned run, best first by the sweep's metric; unfinished and failed runs last."""
    failures = recorded_failures(sweep_dir)
    return summaries.ordered(sweep, [row(sweep, sweep_dir, name, point, failures) for name, point in plan(sweep)])


def row(sweep, sweep_dir, name, point, failures, state=None):
    """The summary row of the sweep's run `name` at point (state: the study's word for it, if any)."""
    return summaries.row(sweep, sweep_dir / name, point, status(sweep_dir / name, failures), failures.get(name, ""),
                         state)
