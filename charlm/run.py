"""The run directory: config, vocabulary, state and metrics (losses as perplexity and bits per character), each
file written atomically, and its lock.
Readable without MXNet (charlm.checkpoint saves and loads the MXNet arrays in it)."""
import contextlib
import fcntl
import json
import math
import os
import sys
import time
from pathlib import Path

from . import __version__, configs
from .errors import CharlmError
from .text import read_utf8
from .vocab import vocab_from_json

CONFIG, VOCAB, STATE, METRICS = "config.yaml", "vocab.json", "state.json", "metrics.jsonl"
BEST, LATEST, LOCK = "params-best.params", "latest", ".lock"


def atomic_write(path, write):
    """Call write(tmp_path), fsync, then rename over path: readers see the old file or the new one."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # per process: two writers never share it
    try:
        write(str(tmp))
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError as e:
        with contextlib.suppress(OSError):  # e.g. no such directory: nothing to remove
            tmp.unlink()
        raise CharlmError(f"cannot write {path}: {e.strerror}") from None


def write_text(path, text):
    """Write a text file atomically."""
    atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def read_json(path):
    """A run file's JSON; a clear error when it is not JSON."""
    try:
        return json.loads(read_utf8(path))
    except json.JSONDecodeError:
        raise CharlmError(f"{path} is damaged (not JSON)") from None


def perplexity(loss):
    """Perplexity of a mean NLL in nats: exp(total NLL / total tokens)."""
    return math.exp(min(loss, 700.0))  # beyond e^700 a float overflows; such a model is lost anyway


def bits_per_char(loss):
    """Bits per character of a mean NLL in nats."""
    return loss / math.log(2)


def scores(prefix, loss, level="char"):
    """Metrics of a mean NLL in nats per token: {prefix}loss, {prefix}ppl, and at char level {prefix}bpc."""
    out = {f"{prefix}loss": loss, f"{prefix}ppl": perplexity(loss)}
    if level == "char":
        out[f"{prefix}bpc"] = bits_per_char(loss)
    return out


def checkpoint_metric(record):
    """The loss that picks the best checkpoint: validation loss, or training loss without validation."""
    return record.get("val_loss", record["train_loss"])


def _pid_in(path):
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


class Run:
    """One run directory under a runs directory."""

    def __init__(self, path):
        self.path = Path(path)

    @classmethod
    def create(cls, runs_dir, name=None):
        """Make a new, empty run directory; an existing one is never reused."""
        runs_dir = Path(runs_dir)
        if name is not None and (not name or name != Path(name).name or name in (LATEST, ".", "..")):
            raise CharlmError(f"--name {name!r}: give a plain directory name (not {LATEST!r}, no slashes)")
        base = name or time.strftime("%Y%m%d-%H%M%S")
        try:
            runs_dir.mkdir(parents=True, exist_ok=True)
            for n in range(1, 100):
                path = runs_dir / (base if n == 1 else f"{base}-{n}")
                try:
                    path.mkdir()
                    return cls(path)
                except FileExistsError:
                    if name:
                        raise CharlmError(f"run directory {path} already exists: choose another --name") from None
        except OSError as e:
            raise CharlmError(f"cannot create a run directory in {runs_dir}: {e.strerror}") from None
        raise CharlmError(f"too many runs named {base}* in {runs_dir}")

    @contextlib.contextmanager
    def lock(self):
        """Hold the run directory for this process: a second training of it refuses to start."""
        # An flock: the kernel drops it however its process ends (never stale), and no test-then-take race.
        path = self.path / LOCK
        while True:
            try:
                fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o644)
            except OSError as e:
                raise CharlmError(f"cannot lock {self.path} for training: {e.strerror}") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                owner = _pid_in(path)  # none yet when the holder has only just taken it
                who = f"process {owner}" if owner else "another process"
                raise CharlmError(f"{self.path} is being trained by {who} (lock file {path}); wait for it or stop it "
                                  f"first") from None
            with contextlib.suppress(FileNotFoundError):  # a holder releasing it may have removed the file locked
                if os.fstat(fd).st_ino == os.stat(path).st_ino:
                    break
            os.close(fd)
        try:
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())  # for the message a second trainer gets
            for tmp in self.path.glob(".*.tmp"):  # only a trainer writes here, and it held this lock
                tmp.unlink(missing_ok=True)
            yield self
        finally:
            path.unlink(missing_ok=True)  # removed while still held, then released
            os.close(fd)

    def start(self, cfg, vocab, fresh=True):
        """Write the resolved config and the vocabulary, and a new state.json when fresh."""
        write_text(self.path / CONFIG, configs.to_yaml(cfg))
        write_text(self.path / VOCAB, vocab.to_json())
        self.write_state({"epoch": 0, "status": "running"} if fresh else {**self.read_state(), "status": "running"})

    def point_latest(self):
        """Point runs_dir/latest at this run, replacing the old link in one rename."""
        tmp = self.path.parent / f".{LATEST}.{os.getpid()}.tmp"  # runs of a sweep share this directory
        try:
            tmp.unlink(missing_ok=True)
            os.symlink(self.path.name, tmp)
            os.replace(tmp, self.path.parent / LATEST)
        except OSError as e:
            raise CharlmError(f"cannot point {self.path.parent / LATEST} at {self.path.name}: {e.strerror}") from None

    def write_state(self, state):
        """Write state.json with the versions that wrote it."""
        mx = sys.modules.get("mxnet")  # the MXNet this process trains with; importing it here would cost seconds
        state = {**state, "versions": {"charlm": __version__, "mxnet": getattr(mx, "__version__", None)}}
        write_text(self.path / STATE, json.dumps(state, indent=2) + "\n")

    def append_metrics(self, record):
        """Append one record to metrics.jsonl, on disk when this returns."""
        with open(self.path / METRICS, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def finish(self):
        """Mark the run finished in state.json."""
        self.write_state({**self.read_state(), "status": "finished"})

    def read_state(self):
        """state.json as a dict ({} before it is first written); a clear error when it is damaged."""
        path = self.path / STATE
        state = read_json(path) if path.exists() else {}
        kinds = {"epoch": int, "step": int, "last": str, "status": str, "best_epoch": (int, type(None)),
                 "lr_scale": (int, float), "partial": (dict, type(None)), "optimizer": dict}
        if not isinstance(state, dict):
            raise CharlmError(f"{path} is damaged (not a JSON object)")
        for key, kind in kinds.items():
            if key in state and not isinstance(state[key], kind):
                raise CharlmError(f"{path} is damaged ({key} is {state[key]!r})")
        return state

    def metrics(self):
        """The metrics.jsonl records, skipping a line a crash cut short; a clear error for JSON that is no record."""
        path = self.path / METRICS
        records = []
        for n, line in enumerate(read_utf8(path).splitlines() if path.exists() else [], 1):
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if not (isinstance(record, dict) and isinstance(record.get("epoch"), int)):
                raise CharlmError(f"{path} is damaged (line {n} is not an epoch's record)")
            records.append(record)
        return records

    def best(self, records=None, metric=None, goal="minimize"):
        """The best record of the run's metrics (or of the records given), the first of equals: by the checkpoint
        metric, or by `metric` toward `goal` among the records that have it; None before any."""
        records = self.metrics() if records is None else records
        key = checkpoint_metric if metric is None else (lambda r: r[metric])
        pick = min if goal == "minimize" else max
        return pick((r for r in records if metric is None or metric in r), key=key, default=None)

    def write_metrics(self, records):
        """Replace metrics.jsonl with these records."""
        write_text(self.path / METRICS, "".join(json.dumps(r) + "\n" for r in records))

    def config(self):
        """The run's resolved config."""
        return configs.resolve([self.path / CONFIG])  # a setting it lacks (made before it existed): the default

    def vocab(self):
        """The run's vocabulary."""
        path = self.path / VOCAB
        try:
            return vocab_from_json(read_utf8(path))
        except (ValueError, KeyError, TypeError, AttributeError):  # JSONDecodeError is a ValueError
            raise CharlmError(f"{path} is damaged (not a vocabulary charlm wrote)") from None


# the settings that shape a Gluon cell's parameters (a scratch cell's: the first two); dropout may differ
SHAPE_KEYS = ("cell", "hidden_size", "embed_size", "num_layers", "tie_weights")


def epoch_records(records):
    """Each epoch's last record: a time limit's record (mid-epoch) is dropped once a resumed run ends its epoch."""
    return [r for r, later in zip(records, records[1:] + [None]) if not later or later["epoch"] != r["epoch"]]


def init_source(cfg):
    """(run, its vocabulary) of cfg.train.init_from, checked to hold best parameters and fit cfg's settings."""
    try:
        source = find(cfg.train.init_from)
    except CharlmError as e:
        raise CharlmError(f"--init-from: {e}") from None
    where = f"--init-from {source.path}"
    theirs = source.config().model
    keys = SHAPE_KEYS[:2] if cfg.model.cell in configs.SCRATCH_CELLS else SHAPE_KEYS
    differ = [k for k in keys if getattr(theirs, k) != getattr(cfg.model, k)]
    if differ:
        raise CharlmError(f"{where}: its model has " + ", ".join(f"{k} {getattr(theirs, k)}" for k in differ)
                          + ", this config " + ", ".join(f"{getattr(cfg.model, k)}" for k in differ)
                          + ": give the same model settings")
    vocab = source.vocab()
    if vocab.level != cfg.data.level:
        raise CharlmError(f"{where}: it is a {vocab.level}-level run, this config is {cfg.data.level}-level")
    if cfg.data.mode == "lines" and vocab.bos is None:
        raise CharlmError(f"{where}: its vocabulary has no line-start token (a stream-mode run); lines mode needs "
                          f"one")
    if not (source.path / BEST).exists():
        raise CharlmError(f"{where}: it has no {BEST}: no epoch of it has been scored yet")
    return source, vocab


def find(run=None, runs_dir="runs"):
    """The run directory given, or the one `runs_dir/latest` points to; checked to be a run."""
    path = Path(run) if run else Path(runs_dir) / LATEST
    if not run and not path.exists():
        raise CharlmError(f"no runs yet in {runs_dir}/: train one with `charlm train`, or pass --run DIR")
    if not (path / CONFIG).is_file() or not (path / VOCAB).is_file():
        raise CharlmError(f"{path} is not a run directory (no {CONFIG} and {VOCAB})")
    return Run(path.resolve())
