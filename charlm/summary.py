"""A sweep's summary: a row per run (its point, its best record by the sweep's metric, its state), best first,
written as summary.csv, and the command line that repeats the best run."""
import csv
import io
import shlex

from . import configs
from .run import CONFIG, Run, epoch_records, write_text

STATES = {"finished": "complete", "failed": "failed", "interrupted": "waiting", "new": "waiting"}
TAIL = ["state", "status", "error"]  # summary.csv's last columns


def row(sweep, run_dir, point, status, error="", state=None):
    """The row of the run in run_dir at point: its best record by the sweep's metric, its state and error."""
    out = {"run": run_dir.name, **point, "state": state or STATES[status], "status": status,
           "error": error if "failed" in (status, state) else ""}
    records = [r for r in Run(run_dir).metrics() if sweep.metric in r] if (run_dir / CONFIG).exists() else []
    if records:
        best, ends = Run(run_dir).best(records, sweep.metric, sweep.goal), epoch_records(records)
        out.update({f"best_{sweep.metric}": best[sweep.metric], "best_epoch": best["epoch"]})
        out.update({"train_ppl": best["train_ppl"]} if "train_ppl" in best else {})
        speeds = [r["tokens_per_s"] for r in ends if "tokens_per_s" in r]
        out.update({"tokens_per_s": sum(speeds) / len(speeds)} if speeds else {})
        out.update({"wall_s": records[-1]["elapsed_s"]} if "elapsed_s" in records[-1] else {})
    return out


def ordered(sweep, rows):
    """Rows best first by the sweep's metric, complete runs before pruned ones, rows without the metric last."""
    sign, key = (1 if sweep.goal == "minimize" else -1), f"best_{sweep.metric}"
    rank = {"complete": 0, "pruned": 1}
    return sorted(rows, key=lambda r: (key not in r, rank.get(r["state"], 2), sign * r.get(key, 0)))


def best_command(sweep, rows):
    """The `charlm train` command line that repeats the best complete run of rows, or None."""
    best = next((r for r in rows if r["state"] == "complete" and f"best_{sweep.metric}" in r), None)
    if best is None:
        return None
    files = [arg for f in sweep.base for arg in ("-c", f)]
    sets = [arg for k in sweep.parameters for arg in ("--set", configs.set_arg(k, best[k]))]
    return shlex.join(["charlm", "train", *files, *sets])


def columns(rows):
    """Column names of summary rows, in a stable order."""
    names = []
    for r in rows:
        names += [k for k in r if k not in names]
    return [n for n in names if n not in TAIL] + TAIL


def write(rows, sweep_dir):
    """Write summary.csv atomically."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns(rows))
    writer.writeheader()
    writer.writerows(rows)
    write_text(sweep_dir / "summary.csv", buf.getvalue())
