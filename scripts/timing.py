"""The timing the benchmark scripts share: median seconds of repeated work, a charlm command's wall time, peak
RSS, and the line that dates a docs table (date, machine, cores, Python, the command)."""
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def cores():
    """The cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def stamp():
    """The line under a docs table's heading: when, on what, and the command that printed it."""
    command = " ".join([f"scripts/{Path(sys.argv[0]).name}", *sys.argv[1:]])
    return (f"_{time.strftime('%Y-%m-%d %H:%M')} UTC, {platform.processor() or platform.machine()}, {cores()} cores, "
            f"Python {platform.python_version()}, `python {command}`_\n")


def median_seconds(work, repeats, warmup=1):
    """Median seconds of work() over `repeats` runs, after `warmup` runs (graphs built, memory allocated)."""
    for _ in range(warmup):
        work()
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        work()
        seconds.append(time.perf_counter() - start)
    return statistics.median(seconds)


def spread(values):
    """(median, min, max) of some measurements."""
    return statistics.median(values), min(values), max(values)


def charlm(*args, env=None, quiet=False):
    """Run `python -m charlm ARGS` from the checkout; (its stdout, wall seconds)."""
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "charlm", *map(str, args)], cwd=ROOT, env=env, check=True,
                         stdout=subprocess.DEVNULL if quiet else subprocess.PIPE, text=True)
    return out.stdout, time.perf_counter() - start


def wall(cmd, times=5):
    """Median wall seconds of a command run from the checkout, its output discarded."""
    return median_seconds(lambda: subprocess.run(cmd, cwd=ROOT, check=True, stdout=subprocess.DEVNULL), times, 0)


def peak_rss_mb():
    """This process's peak resident set size in MB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
