"""A sweep's trainers: `charlm train` processes started with their output in a log (never through a link), each
in a session of its own that stops with the sweep, and the error a failed one ends with."""
import ctypes
import os
import signal
import subprocess
import sys

from .errors import CharlmError
from .launch import CPUS, MAX_PROCESSES
from .run import open_regular


def last_error(log):
    """The error a trainer's log ends with: its last `Error:` line, else its last line (a log that is no regular
    file, a FIFO say, is not read: it could block)."""
    try:
        fd = open_regular(log, os.O_RDONLY)
    except CharlmError as e:
        return str(e)
    with open(fd, encoding="utf-8", errors="replace") as f:
        lines = [line for line in f.read().splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("Error:")]
    return (errors or lines or ["exited without output"])[-1].removeprefix("Error: ")


def _stop_with_parent():
    # in each child before exec: should the sweep be killed outright, its trainers stop (and checkpoint) too
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG


def launch(cmd, log, jobs, env=None):
    """Start one trainer with its output in log, in a session of its own: the sweep alone decides when it stops."""
    env = {**os.environ, **(env or {}), "OMP_NUM_THREADS": str(max(1, CPUS // jobs))}
    fd = open_regular(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT)  # never through a link, nor a FIFO or device
    try:
        return subprocess.Popen(cmd, stdout=fd, stderr=subprocess.STDOUT, env=env, start_new_session=True,
                                preexec_fn=_stop_with_parent)
    finally:
        os.close(fd)


def stop(procs):
    """Ask trainers to stop (each saves a checkpoint at its next batch) and wait for them."""
    for proc in procs:
        proc.terminate()
    for proc in procs:
        proc.wait()


def check_jobs(jobs):
    """Refuse more jobs than MAX_PROCESSES."""
    if not 1 <= jobs <= MAX_PROCESSES:
        raise CharlmError(f"--jobs must be from 1 to {MAX_PROCESSES}, got {jobs}")
