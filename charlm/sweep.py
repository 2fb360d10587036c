"""Config sweeps: a W&B-style sweep file expanded into runs (grid or random), run as `charlm train`
processes, resumed when re-run, and summarised by the chosen metric."""
import csv
import io
import itertools
import json
import math
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from . import configs
from .errors import CharlmError
from .launch import CPUS
from .run import CONFIG, Run, epoch_records, read_json, write_text

METRICS = ("val_ppl", "val_loss", "val_bpc", "train_ppl", "train_loss", "train_bpc")
DISTRIBUTIONS = ("uniform", "log_uniform_values", "int_uniform")
FAILURES = "failures.json"
MAX_RUNS = 10_000  # each run is a training process: a larger run_cap is a slip, and its plan would not fit in memory
MAX_BOUND = 2**53  # distribution bounds: beyond, floats skip integers and the draws overflow


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


def _check_spec(key, spec, method, path):
    where = f"{path}: parameters.{key}"
    if not isinstance(spec, dict):
        raise CharlmError(f"{where} must be a mapping with values, value or distribution")
    if "value" in spec:
        spec = {"values": [spec["value"]]}
    if "values" in spec:
        if not isinstance(spec["values"], list) or not spec["values"]:
            raise CharlmError(f"{where}.values must be a non-empty list")
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


def load(path):
    """Read and check a sweep file; its name is the file's stem."""
    path = Path(path)
    doc, _ = configs.read_yaml(path, "sweep file ")
    if not isinstance(doc, dict):
        raise CharlmError(f"{path}: a sweep file is a mapping with base, method, metric and parameters")
    known = {"base", "method", "metric", "run_cap", "seed", "parameters"}
    if set(doc) - known:
        unknown = sorted(set(doc) - known, key=str)[0]  # YAML keys need not be strings
        raise CharlmError(f"{path}: unknown key {unknown!r}; valid keys: {', '.join(sorted(known))}")
    method = doc.get("method", "grid")
    if method not in ("grid", "random"):
        raise CharlmError(f"{path}: method must be grid or random, got {method!r}")
    metric = {} if doc.get("metric") is None else doc["metric"]
    if not isinstance(metric, dict):
        raise CharlmError(f"{path}: metric must be a mapping like {{name: val_ppl, goal: minimize}}, got {metric!r}")
    name, goal = metric.get("name", "val_ppl"), metric.get("goal", "minimize")
    if name not in METRICS or goal not in ("minimize", "maximize"):
        raise CharlmError(f"{path}: metric needs name in {', '.join(METRICS)} and goal minimize or maximize")
    run_cap = doc.get("run_cap")
    if run_cap is None and method == "random":
        raise CharlmError(f"{path}: a random sweep needs run_cap (how many runs to draw)")
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
    return Sweep(path.stem, base, method, name, goal, run_cap, seed,
                 {k: _check_spec(k, v, method, path) for k, v in params.items()})


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
    """The sweep's runs in order, as [(run name, {key: value})]."""
    keys = list(sweep.parameters)
    if sweep.method == "grid":
        points = itertools.product(*(sweep.parameters[k]["values"] for k in keys))
        points = [dict(zip(keys, p)) for p in itertools.islice(points, sweep.run_cap)]
    else:
        rng = np.random.default_rng(sweep.seed)
        points = [{k: _draw(sweep.parameters[k], rng) for k in keys} for _ in range(sweep.run_cap)]
    varying = [k for k in keys if len(sweep.parameters[k].get("values", [0, 1])) > 1]  # names show what varies
    return [(f"{i:03d}-" + ",".join(f"{k.split('.')[-1]}={_fmt(p[k])}" for k in varying), p)
            for i, p in enumerate(points)]


def status(run_dir, failures):
    """finished, failed, interrupted (resumable) or new."""
    if (run_dir / CONFIG).exists() and Run(run_dir).read_state().get("status") == "finished":
        return "finished"  # whatever an attempt recorded: another process (a resume, a second sweep) finished it
    if run_dir.name in failures:
        return "failed"
    return "interrupted" if (run_dir / CONFIG).exists() else "new"


def _yaml_value(value):
    return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()


def command(sweep, sweep_dir, name, point, state):
    """The `charlm train` command line of one run: a new run, or --resume of an interrupted one."""
    if state == "interrupted":
        return [sys.executable, "-m", "charlm", "train", "--resume", str(sweep_dir / name)]
    sets = [arg for k, v in point.items() for arg in ("--set", f"{k}={_yaml_value(v)}")]
    files = [arg for f in sweep.base for arg in ("-c", f)]
    return [sys.executable, "-m", "charlm", "train", *files, *sets, "--runs-dir", str(sweep_dir), "--name", name]


def _last_error(log):
    lines = [line for line in log.read_text(encoding="utf-8", errors="replace").splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("Error:")]
    return (errors or lines or ["exited without output"])[-1].removeprefix("Error: ")


def execute(sweep, sweep_dir, jobs=1, on_done=None):
    """Run every unfinished planned run, `jobs` at a time, recording failures; after each, on_done(row, rows)."""
    (sweep_dir / "logs").mkdir(parents=True, exist_ok=True)
    failures = recorded_failures(sweep_dir)
    todo = [(n, p, s) for n, p in plan(sweep) if (s := status(sweep_dir / n, {})) != "finished"]
    env = {**os.environ, "OMP_NUM_THREADS": str(max(1, CPUS // jobs))}
    running = []
    try:
        while todo or running:
            while todo and len(running) < jobs:
                name, point, state = todo.pop(0)
                failures.pop(name, None)  # a re-run retries failed runs
                log = sweep_dir / "logs" / f"{name}.log"
                with open(log, "a", encoding="utf-8") as out:
                    proc = subprocess.Popen(command(sweep, sweep_dir, name, point, state), stdout=out,
                                            stderr=subprocess.STDOUT, env=env)
                running.append((proc, name, log))
            done = next((job for job in running if job[0].poll() is not None), None)
            if done is None:
                time.sleep(0.2)
                continue
            running.remove(done)
            proc, name, log = done
            if proc.returncode != 0:
                failures[name] = _last_error(log)
            write_text(sweep_dir / FAILURES, json.dumps(failures, indent=2, ensure_ascii=False) + "\n")
            rows = summary(sweep, sweep_dir)
            write_summary(rows, sweep_dir)
            if on_done:
                on_done(next(r for r in rows if r["run"] == name), rows)
    finally:
        for proc, _, _ in running:  # interrupted: stop the runs so they checkpoint; a re-run resumes them
            proc.terminate()
            proc.wait()
    return summary(sweep, sweep_dir)


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
    rows = []
    for name, point in plan(sweep):
        run_dir = sweep_dir / name
        state = status(run_dir, failures)
        row = {"run": name, **point, "status": state, "error": failures.get(name, "") if state == "failed" else ""}
        records = [r for r in Run(run_dir).metrics() if sweep.metric in r]
        if records:
            best, ends = Run(run_dir).best(records, sweep.metric, sweep.goal), epoch_records(records)
            row.update({f"best_{sweep.metric}": best[sweep.metric], "best_epoch": best["epoch"],
                        "train_ppl": best["train_ppl"],
                        "tokens_per_s": sum(r["tokens_per_s"] for r in ends) / len(ends),
                        "wall_s": records[-1]["elapsed_s"]})
        rows.append(row)
    sign = 1 if sweep.goal == "minimize" else -1
    return sorted(rows, key=lambda r: (f"best_{sweep.metric}" not in r, sign * r.get(f"best_{sweep.metric}", 0)))


def columns(rows):
    """Column names of summary rows, in a stable order."""
    names = []
    for row in rows:
        names += [k for k in row if k not in names]
    tail = ["status", "error"]
    return [n for n in names if n not in tail] + tail


def write_summary(rows, sweep_dir):
    """Write summary.csv atomically."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns(rows))
    writer.writeheader()
    writer.writerows(rows)
    write_text(sweep_dir / "summary.csv", buf.getvalue())
