"""A received or damaged run directory, a full disk, a kill between two writes, a huge line and the cluster's
sockets: charlm says no in one line and loses nothing (issue 33; the one-line errors are in bad_input_cases.py)."""
import glob
import json
import os
import random
import sys
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import yaml

from charlm import api, configs, launch, lines, recipe
from charlm.errors import CharlmError
from charlm.run import BEST, METRICS, PENDING, STATE, Run, write_text
from bad_input_cases import full_disk_for
from conftest import wait_until


@pytest.fixture
def trained(tiny_cfg, tmp_path):
    """A run trained for one epoch, its config asking for two."""
    tiny_cfg.data.val_frac, tiny_cfg.train.lr, tiny_cfg.model.dropout = 0.2, 0.01, 0.0
    tiny_cfg.train.epochs = 1
    run = api.train(tiny_cfg, runs_dir=tmp_path / "runs", name="r")
    return run


def files(run):
    return {p.name: p.read_bytes() for p in run.path.iterdir() if p.is_file()}


def test_a_lock_that_links_elsewhere_is_refused_and_its_target_kept(trained, tmp_path):
    victim = tmp_path / "bashrc"
    victim.write_text("export PATH\n")
    (trained.path / ".lock").symlink_to(victim)
    with pytest.raises(CharlmError, match="is a symbolic link"):
        api.train(resume=trained.path, epochs=2)
    assert victim.read_text() == "export PATH\n" and (trained.path / ".lock").is_symlink()


def test_metrics_that_link_elsewhere_are_never_appended_to(trained, tmp_path):
    victim = tmp_path / "victim.jsonl"
    victim.write_bytes((trained.path / METRICS).read_bytes())
    (trained.path / METRICS).unlink()
    (trained.path / METRICS).symlink_to(victim)
    with pytest.raises(CharlmError, match="is a symbolic link"):
        trained.append_metrics({"epoch": 2})
    assert victim.read_bytes().count(b"\n") == 1


def test_a_planted_temporary_link_is_replaced_not_written_through(tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("mine")
    (tmp_path / f".config.yaml.{os.getpid()}.tmp").symlink_to(victim)
    write_text(tmp_path / "config.yaml", "data: {}\n")
    assert victim.read_text() == "mine" and (tmp_path / "config.yaml").read_text() == "data: {}\n"


def test_directories_named_like_checkpoints_or_temporary_files_stay_and_resume_goes_on(trained):
    (trained.path / "last-e9-s9.params").mkdir()
    (trained.path / ".x.tmp").mkdir()
    api.train(resume=trained.path, epochs=2)
    assert trained.read_state()["epoch"] == 2
    assert (trained.path / "last-e9-s9.params").is_dir() and (trained.path / ".x.tmp").is_dir()


def test_a_full_disk_while_appending_metrics_keeps_the_last_checkpoint(trained):
    before = files(trained)
    with full_disk_for(METRICS)(), pytest.raises(CharlmError, match="metrics.jsonl: No space left on device"):
        api.train(resume=trained.path, epochs=2)
    after = files(trained)
    assert {k: after[k] for k in (METRICS, BEST, "last-e1-s0.params")} == \
        {k: before[k] for k in (METRICS, BEST, "last-e1-s0.params")}
    assert {**json.loads(after[STATE]), "status": ""} == {**json.loads(before[STATE]), "status": ""}  # resume: running
    api.train(resume=trained.path, epochs=2)  # and it resumes from there
    assert [r["epoch"] for r in trained.metrics()] == [1, 2]


class Killed(BaseException):
    """A kill -9 at this point: nothing after it runs."""


def test_a_kill_between_the_best_parameters_and_state_json_keeps_the_pair_consistent(trained):
    real = Run.write_state

    def write_state(run, state):
        if state.get("epoch") == 2:
            raise Killed()
        real(run, state)
    with mock.patch.object(Run, "write_state", write_state), pytest.raises(Killed):
        api.train(resume=trained.path, epochs=2)
    val = [r["val_loss"] for r in trained.metrics()]
    assert val[1] < val[0]  # epoch 2 was the better one: its parameters were being saved as the best
    assert trained.read_state()["last"] == "e1-s0"
    assert (trained.path / BEST).read_bytes() == (trained.path / "last-e1-s0.params").read_bytes()
    api.train(resume=trained.path, epochs=2)
    assert (trained.path / BEST).read_bytes() == (trained.path / "last-e2-s0.params").read_bytes()
    assert not list(trained.path.glob(PENDING.format("*")))


def test_a_kill_after_state_json_names_the_best_is_finished_by_readers_and_the_next_lock(trained):
    real = Run.settle_best

    def settle_best(run, named=None):
        if (run.path / PENDING.format("e2-s0")).exists():
            raise Killed()
        real(run, named)
    with mock.patch.object(Run, "settle_best", settle_best), pytest.raises(Killed):
        api.train(resume=trained.path, epochs=2)
    assert trained.read_state()["best_epoch"] == 2
    assert trained.best_params().name == PENDING.format("e2-s0")
    assert api.load(trained.path).generate("the", length=5).startswith("the")
    with trained.lock():
        pass
    assert (trained.path / BEST).read_bytes() == (trained.path / "last-e2-s0.params").read_bytes()
    assert not list(trained.path.glob(PENDING.format("*")))


def test_every_damaged_metrics_line_is_reported_and_only_a_cut_last_line_skipped(tmp_path):
    run = Run(tmp_path)
    one, two = '{"epoch": 1, "train_loss": 1}', '{"epoch": 2, "train_loss": 1}'
    (tmp_path / METRICS).write_text(f'{one}\nnot json\n{two}\n[]\n{{"epoch": 3, "trai')
    with pytest.raises(CharlmError, match=r"lines 2, 4 are not an epoch's record"):
        run.metrics()
    (tmp_path / METRICS).write_text(f'{one}\n{{"epoch": 2, "trai')
    assert run.metrics() == [json.loads(one)]


def test_an_over_long_line_is_split_into_pieces_no_longer_than_the_largest_bucket():
    ids = np.concatenate([np.arange(3, 7), [1], np.full(100_000, 5), [1]]).astype(np.int64)  # 1 ends a line
    batches = lines.LineBatches(ids, 0, 1, 4)
    assert batches.buckets[-1] <= lines.LONGEST and batches.num_split == 1
    order = np.argsort(batches.starts)
    pieces = [batches.tgt[s:s + n] for s, n in zip(batches.starts[order], batches.lengths[order])]
    assert np.array_equal(np.concatenate(pieces), batches.tgt)  # every token once, in order
    assert max(batches[i][0].shape[0] for i in range(len(batches))) <= lines.LONGEST


def _listening(pids):
    """The local addresses (hex, as /proc/net/tcp writes them) of the TCP sockets these processes listen on."""
    inodes = set()
    for pid in pids:
        for fd in glob.glob(f"/proc/{pid}/fd/*"):
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(target[len("socket:["):-1])
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for row in Path(table).read_text().splitlines()[1:]:
            fields = row.split()
            if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                found.append(fields[1])
    return found


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_every_socket_of_a_loopback_cluster_listens_on_127_0_0_1_only(tmp_path):
    ready, stop = tmp_path / "ready", tmp_path / "stop"
    worker = [sys.executable, "-c", "import os, sys, time, mxnet as mx\n"
              "kv = mx.kv.create('dist_sync')\n"
              f"open({str(ready)!r} + str(kv.rank), 'w').close()\n"
              f"while not os.path.exists({str(stop)!r}):\n"
              "    time.sleep(0.05)\n"]
    with launch.loopback(2, 1, worker) as cluster:
        def ready():
            assert all(proc.poll() is None for _, proc in cluster.procs)
            return len(list(tmp_path.glob("ready*"))) == 2

        wait_until(ready, 120, "both workers' kvstores")
        addresses = _listening([proc.pid for _, proc in cluster.procs])
        stop.touch()
        assert cluster.wait() == (0, None)
    assert len(addresses) == 4  # the scheduler, the server and both workers each listen
    assert all(a.startswith("0100007F:") for a in addresses), addresses  # 127.0.0.1, little-endian hex


ODD_VALUES = [None, True, 0, -1, 10**30, -10**400, 1e308, float("inf"), float("nan"), "", "ünïcödé ✓ 中文", "x" * 5000,
              [], ["a", 1], {}, {"k": None}, "1e-4", "\x00\x07", "lstm", 8, 0.5]


def _mutated_config(rng):
    """The text of a full config file with a few random mutations: values, keys, sections, nesting, aliases."""
    doc = yaml.safe_load(configs.to_yaml(recipe.fixed(configs.Config())))
    for _ in range(rng.randrange(1, 4)):
        section = rng.choice([name for name, values in doc.items() if isinstance(values, dict) and values] or [None])
        if section is None:
            break
        key = rng.choice(list(doc[section]))
        kind = rng.randrange(6)
        if kind == 0:
            doc[section][key] = rng.choice(ODD_VALUES)
        elif kind == 1:
            del doc[section][key]
        elif kind == 2:
            doc[section][rng.choice(["hiden_size", "", "ü", "1"])] = rng.choice(ODD_VALUES)
        elif kind == 3:
            doc[rng.choice(["extra", "", "Data"])] = {key: 1}
        elif kind == 4:
            doc[section] = rng.choice(ODD_VALUES)
        else:
            doc[section][key] = [[[[rng.choice(ODD_VALUES)]]]]
    text = yaml.safe_dump(doc, allow_unicode=True, sort_keys=False)
    kind = rng.randrange(5)
    if kind == 0:  # one section an alias of another, and a value that expands nine times per level
        text = text.replace("data:", "data: &d", 1).replace("model:", "model: *d\nunused:", 1)
        text += "laughs: &a [1, 2]\nmore: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\nmost: [*b, *b, *b, *b, *b, *b]\n"
    elif kind == 1:
        depth = rng.choice([10, 50])
        text = f"train:\n  sample_prefixes: {'[' * depth}{']' * depth}\n" + text
    elif kind == 2:
        text = text.replace(":", ": [", 1)
    elif kind == 3:
        text = "? [a, b]\n: 1\n" + text  # a key that is a list
    return text


def test_random_config_files_give_a_valid_config_or_one_line(tmp_path):
    rng = random.Random(33)
    path = tmp_path / "config.yaml"
    deep = "train:\n  sample_prefixes: " + "[" * 2000 + "]" * 2000 + "\n"  # past Python's recursion limit
    for example, text in enumerate([deep] + [_mutated_config(rng) for _ in range(150)]):
        path.write_text(text, encoding="utf-8")
        for read in (lambda: configs.resolve([path]), lambda: Run(tmp_path).config()):
            try:
                assert isinstance(read(), configs.Config)
            except CharlmError as e:
                assert "\n" not in str(e), (example, str(e))


def test_a_pending_best_that_is_a_directory_is_never_moved_onto_the_best(tmp_path):
    from charlm.run import BEST, PENDING, STATE
    run = Run(tmp_path)
    (tmp_path / BEST).write_bytes(b"best")
    (tmp_path / STATE).write_text(json.dumps({"epoch": 1, "best_pending": "e1-s0"}))
    (tmp_path / PENDING.format("e1-s0")).mkdir()
    run.settle_best()
    assert (tmp_path / BEST).read_bytes() == b"best" and (tmp_path / PENDING.format("e1-s0")).is_dir()


def test_a_checkpoint_state_json_does_not_name_is_refused_unless_a_kill_left_it_half_written(tmp_path):
    from charlm.run import BEST, STATE
    run = Run(tmp_path)
    (tmp_path / METRICS).write_text(json.dumps({"epoch": 1, "train_loss": 1.0}) + "\n")
    (tmp_path / STATE).write_text(json.dumps({"epoch": 0, "status": "running"}))
    (tmp_path / "last-e1-s0.params").write_bytes(b"p")
    assert run.resume_state()["epoch"] == 0  # killed while writing the first checkpoint: it starts over
    (tmp_path / BEST).write_bytes(b"b")
    with pytest.raises(CharlmError, match="names no last checkpoint, but the run has last-e1-s0.params and"):
        run.resume_state()
