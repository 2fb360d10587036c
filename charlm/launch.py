"""Parameter-server jobs: the kvstore kinds, the DMLC_* environment MXNet's launchers give each process,
and a loopback cluster (scheduler, servers, workers on 127.0.0.1) to try a dist kvstore on one machine."""
import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
import time

KVSTORES = ("local", "device", "dist_sync", "dist_async")
DMLC_ENV = ("DMLC_ROLE", "DMLC_PS_ROOT_URI", "DMLC_PS_ROOT_PORT", "DMLC_NUM_SERVER", "DMLC_NUM_WORKER")
HOST = "127.0.0.1"  # MXNet's own `--launcher local` picks a non-loopback address, which can hang
SERVE = [sys.executable, "-c", "import mxnet"]  # with DMLC_ROLE scheduler or server, importing MXNet serves
# sweep --jobs and launch-local -n: each process trains a model of its own (some hundred MB, a core or more), so
# past this many on one machine they only share the cores and exhaust the memory: a larger count is a slip.
MAX_PROCESSES = 64
CPUS = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1  # macOS: no affinity


def free_port():
    """A TCP port on the loopback address that nothing listens on now."""
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def _die_with_parent():
    # in each child before exec: should the launcher be killed outright, the kernel ends its cluster too
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG


class LoopbackCluster:
    """A scheduler, servers and workers running `worker_argv` on 127.0.0.1, each in a process group of its own."""

    def __init__(self, num_workers, num_servers, worker_argv, grace=3.0):
        self.num_workers, self.num_servers, self.worker_argv = num_workers, num_servers, list(worker_argv)
        self.grace, self.port, self.procs = grace, free_port(), []  # procs: [(name, Popen)]

    def _env(self, role, threads):
        env = {**os.environ, "DMLC_ROLE": role, "DMLC_PS_ROOT_URI": HOST, "DMLC_NODE_HOST": HOST,
               "DMLC_PS_ROOT_PORT": str(self.port), "DMLC_NUM_SERVER": str(self.num_servers),
               "DMLC_NUM_WORKER": str(self.num_workers)}
        env.setdefault("OMP_NUM_THREADS", str(threads))
        return env

    def _spawn(self, name, argv, env, quiet):
        proc = subprocess.Popen(argv, env=env, start_new_session=True, preexec_fn=_die_with_parent,
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL if quiet else None)
        self.procs.append((name, proc))

    def start(self):
        """Start the scheduler, the servers and the workers, in that order."""
        threads = max(1, CPUS // self.num_workers)  # workers share them; servers only add
        self._spawn("scheduler", SERVE, self._env("scheduler", 1), quiet=True)
        for i in range(self.num_servers):
            self._spawn(f"server {i}", SERVE, self._env("server", 1), quiet=True)
        for i in range(self.num_workers):
            self._spawn(f"worker {i}", self.worker_argv, self._env("worker", threads), quiet=False)
        return self

    def wait(self, poll=0.1):
        """Wait for every worker or a failure: (0, None), or the first failure's (exit status, name)."""
        workers = [(name, proc) for name, proc in self.procs if name.startswith("worker")]
        while True:
            for name, proc in self.procs:
                code = proc.poll()
                if code:
                    return (code if code > 0 else 128 - code), name
            if all(proc.poll() == 0 for _, proc in workers):
                return 0, None
            time.sleep(poll)

    def stop(self):
        """SIGTERM every process group, SIGKILL those still running after the grace period; reap all."""
        deadline = time.monotonic() + self.grace
        for _, proc in self.procs:
            _signal_group(proc, signal.SIGTERM)
        for _, proc in self.procs:
            try:
                proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass  # blocked in MXNet's C++ waiting for a peer: SIGTERM's Python handler never runs
            _signal_group(proc, signal.SIGKILL)  # also whatever the process left in its group
            proc.wait()


def _signal_group(proc, sig):
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)


@contextlib.contextmanager
def loopback(num_workers, num_servers, worker_argv, grace=3.0):
    """A started LoopbackCluster, stopped (every process group ended) however the block exits."""
    cluster = LoopbackCluster(num_workers, num_servers, worker_argv, grace)
    try:
        yield cluster.start()
    finally:
        cluster.stop()


def _exit_on_signal(signum, frame):
    raise SystemExit(128 + signum)  # unwinds through the cleanup of whatever is running


@contextlib.contextmanager
def exiting_on(*signals):
    """Within the block, these signals raise SystemExit(128 + signal) so that cleanup runs; then as before."""
    previous = {sig: signal.signal(sig, _exit_on_signal) for sig in signals}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def run_local(num_workers, num_servers, worker_argv, started=None):
    """Run a loopback cluster until every worker is done or a process fails, then stop every process: the exit
    status and the failed process's name (None), or 130 and "interrupted" after Ctrl-C; SIGTERM stops it too.
    started(cluster) is called once it runs."""
    try:
        with exiting_on(signal.SIGTERM), loopback(num_workers, num_servers, worker_argv) as cluster:
            if started:
                started(cluster)
            return cluster.wait()
    except KeyboardInterrupt:
        return 130, "interrupted"
