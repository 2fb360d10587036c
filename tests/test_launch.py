"""A real parameter-server cluster on 127.0.0.1: one scheduler, one server and two workers, started by
`charlm launch-local`; every wait is bounded and every process is ended, whatever happens."""
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from charlm import checkpoint, data, model as models, training as train
from charlm.engine import mx
from charlm.run import Run
from conftest import FIXED_FLAGS, TINY_FLAGS, wait_until

TINY = [*FIXED_FLAGS, *TINY_FLAGS, "--sample-every", "0", "--dropout", "0"]
TIMEOUT = 120  # seconds for a whole cluster run; a few on an idle machine


def cluster_pids(port):
    """Processes whose environment names the cluster's port: its scheduler, servers and workers."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and f"DMLC_PS_ROOT_PORT={port}".encode() in (entry / "environ").read_bytes():
                found.append(int(entry.name))
        except OSError:
            continue  # gone meanwhile, or not ours
    return found


class Launch:
    """`charlm launch-local` in a session of its own, its output in a file; end() kills whatever is left."""

    def __init__(self, tmp_path, *args):
        self.log = tmp_path / "launch.log"
        # Importing charlm.engine here set OMP_NUM_THREADS to every core: launch-local's own default is cores/n.
        env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
        with open(self.log, "w") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "charlm", "launch-local", *map(str, args)],
                                         cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        self.port = None

    def output(self):
        return self.log.read_text()

    def find_port(self):
        def announced():
            match = re.search(r"scheduler on 127\.0\.0\.1:(\d+)", self.output())
            self.port = match and int(match.group(1))
            return self.port

        wait_until(announced, TIMEOUT, "the scheduler's port in launch-local's output")
        return self.port

    def wait(self):
        return self.proc.wait(timeout=TIMEOUT)

    def end(self):
        for pid in [self.proc.pid] + (cluster_pids(self.port) if self.port else []):
            try:
                os.killpg(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        self.proc.wait()


def first_epoch(run):
    """Wait until rank 0 has saved the run's first epoch."""
    metrics = run / "metrics.jsonl"
    wait_until(lambda: metrics.exists() and metrics.read_text(), TIMEOUT, f"an epoch in {metrics}")


@pytest.fixture
def launched(tmp_path):
    launches = []

    def start(*args):
        launches.append(Launch(tmp_path, *args))
        return launches[-1]
    yield start
    for launch in launches:
        launch.end()


@pytest.mark.parametrize("kvstore, extra", [("dist_sync", []), ("dist_async", ["--lr-decay", 1])])
def test_two_workers_train_together_and_rank_0_alone_writes_the_run(corpus, tmp_path, launched, kvstore, extra):
    launch = launched("-n", 2, "-s", 1, "--", "train", "--kvstore", kvstore, "--data", corpus,
                      "--runs-dir", "runs", "--name", "d", *TINY, "--epochs", 3, *extra)
    port = launch.find_port()
    assert launch.wait() == 0, launch.output()
    assert f"2 worker(s) x 1 device(s), kvstore {kvstore}" in launch.output()
    assert cluster_pids(port) == []  # scheduler and server ended with the workers
    runs = tmp_path / "runs"
    assert sorted(p.name for p in runs.iterdir()) == ["d", "latest"]  # the other worker wrote nothing
    records = [json.loads(line) for line in (runs / "d" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2, 3] and records[-1]["train_loss"] < records[0]["train_loss"] - 0.3

    generated = subprocess.run([sys.executable, "-m", "charlm", "generate", "the", "--length", "10", "--run",
                                runs / "d"], capture_output=True, text=True, timeout=TIMEOUT)
    assert generated.returncode == 0 and len(generated.stdout) == len("the") + 10 + 1, generated.stderr

    # dist_sync: the validation loss is that of both workers' halves of the validation text, with the common
    # final weights; dist_async: that of rank 0's own weights on all of it.
    run = Run(runs / "d")
    cfg = run.config()
    model = models.build(cfg.model, len(run.vocab()), mx.cpu())
    checkpoint.load_params(model, run.path / f"last-{run.read_state()['last']}.params", mx.cpu())
    val = data.split(data.corpus_of(cfg.data)[1], cfg.data.val_frac)[1]
    parts = np.array_split(val[:len(val) // 2 * 2], 2) if kvstore == "dist_sync" else [val]
    nll, tokens = np.sum([train.evaluate(model, part, cfg, run.vocab(), mx.cpu()) for part in parts], axis=0)
    # dist_sync: workers that ended with different weights would fail this (issue #6: the Trainer's first
    # gradient could overtake the pull of rank 0's initial weights; parallel._Trainer waits for that pull).
    assert records[-1]["val_loss"] == pytest.approx(nll / tokens, rel=1e-5)


def test_a_worker_that_dies_stops_the_whole_cluster(corpus, tmp_path, launched):
    launch = launched("-n", 2, "--", "train", "--kvstore", "dist_sync", "--data", corpus, "--runs-dir", "runs",
                      "--name", "k", *TINY, "--epochs", 100000)
    port = launch.find_port()
    first_epoch(tmp_path / "runs" / "k")
    workers = [pid for pid in cluster_pids(port) if b"DMLC_ROLE=worker" in Path(f"/proc/{pid}/environ").read_bytes()]
    assert len(workers) == 2, launch.output()
    os.kill(workers[1], signal.SIGKILL)
    assert launch.wait() == 128 + signal.SIGKILL, launch.output()  # the failed worker's status, in bounded time
    assert "exited with status 137; stopping the others" in launch.output()
    assert cluster_pids(port) == []


def test_an_error_of_rank_0_alone_ends_the_cluster_with_its_one_line_and_status_1(corpus, tmp_path, launched):
    """Only rank 0 makes the run directory: its error ended in a server's C++ abort (status 134), rank 0 hanging
    in MXNet's exit while the other worker pushed to keys rank 0 never set up."""
    (tmp_path / "runs" / "d").mkdir(parents=True)
    launch = launched("-n", 2, "--", "train", "--kvstore", "dist_sync", "--data", corpus, "--runs-dir", "runs",
                      "--name", "d", *TINY)
    port = launch.find_port()
    assert launch.wait() == 1, launch.output()
    assert "Error: run directory runs/d already exists" in launch.output()
    assert "exited with status 1; stopping the others" in launch.output() and "terminate called" not in launch.output()
    assert cluster_pids(port) == []


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_ctrl_c_or_sigterm_stops_the_whole_cluster(corpus, tmp_path, launched, sig, code):
    launch = launched("-n", 2, "--", "train", "--kvstore", "dist_sync", "--data", corpus, "--runs-dir", "runs",
                      "--name", "s", *TINY, "--epochs", 100000)
    port = launch.find_port()
    first_epoch(tmp_path / "runs" / "s")
    launch.proc.send_signal(sig)
    assert launch.wait() == code, launch.output()
    assert cluster_pids(port) == []
    assert json.loads((tmp_path / "runs" / "s" / "state.json").read_text())["epoch"] >= 1  # its checkpoint is kept


def test_a_time_limit_stops_every_worker_at_the_same_batch_on_rank_0s_clock(corpus, tmp_path, launched):
    launch = launched("-n", 2, "--", "train", "--kvstore", "dist_sync", "--data", corpus, "--runs-dir", "runs",
                      "--name", "d", *TINY, "--epochs", 100000, "--time-limit", "3s")
    assert launch.wait() == 0, launch.output()  # a worker that stopped alone would leave the other waiting
    assert "time limit 3s reached" in launch.output() and "done | best val ppl" in launch.output()
    assert Run(tmp_path / "runs" / "d").read_state()["status"] == "finished"


def test_cpus_fall_back_to_the_cpu_count_where_the_os_keeps_no_affinity():
    """macOS has no os.sched_getaffinity: charlm must still import and count the machine's CPUs."""
    code = ("import os; del os.sched_getaffinity; from charlm.launch import CPUS; "
            "assert CPUS == os.cpu_count(), CPUS")
    subprocess.run([sys.executable, "-c", code], check=True)
