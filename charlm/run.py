"""The run directory: config, vocabulary, state and metrics (losses as perplexity and bits per character), each
file written atomically, and its lock.
Readable without MXNet (charlm.checkpoint saves and loads the MXNet arrays in it)."""
import contextlib
import errno
import fcntl
import json
import math
import os
import re
import stat
import sys
import time
from pathlib import Path

from . import __version__, configs
from .errors import CharlmError
from .text import read_utf8
from .vocab import vocab_from_json

CONFIG, VOCAB, STATE, METRICS = "config.yaml", "vocab.json", "state.json", "metrics.jsonl"
BEST, LATEST, LOCK = "params-best.params", "latest", ".lock"
TAG = re.compile(r"e\d+-s\d+")  # a checkpoint's tag, as checkpoint.py names it: e{epoch}-s{step}
PENDING = "params-best-{}.pending"  # a new best until state.json names it, by its checkpoint tag: e3-s0


def atomic_write(path, write):
    """Call write(tmp_path), fsync, then rename over path: readers see the old file or the new one."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # per process: two writers never share it
    try:
        tmp.unlink(missing_ok=True)  # a link left in a received run: writing through it would write its target
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


NUMBERS = ("train_loss", "train_ppl", "train_bpc", "val_loss", "val_ppl", "val_bpc", "val_loss_raw", "val_loss_ema",
           "lr", "grad_norm", "tokens_per_s", "elapsed_s")  # a metrics record's numbers, that readers compute with


def _is_record(record):
    """Whether a parsed metrics line is an epoch's record: an integer epoch (and step), training's loss (which
    picks the best checkpoint without validation), and a number for every known key it has."""
    return (isinstance(record, dict) and all(type(record.get(k, 0)) is int for k in ("epoch", "step"))
            and "epoch" in record and "train_loss" in record
            and all(type(record[k]) in (int, float) for k in NUMBERS if k in record))


def open_regular(path, flags):
    """os.open of a regular file, never through a symbolic link (a received run may hold one) nor a device or FIFO."""
    try:
        fd = os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, 0o644)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise CharlmError(f"{path} is a symbolic link: charlm writes only regular files in a run directory "
                              f"(remove it)") from None
        raise CharlmError(f"cannot open {path}: {e.strerror}") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise CharlmError(f"{path} is not a regular file: charlm writes only regular files in a run directory "
                          f"(remove it)")
    os.set_blocking(fd, True)
    return fd


def write_all(fd, data, path):
    """Write all of data to fd; a one-line error (ENOSPC, say) after cutting the file back to where it was."""
    size = os.lseek(fd, 0, os.SEEK_END)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    except OSError as e:
        with contextlib.suppress(OSError):
            os.ftruncate(fd, size)  # no half line: what was there before stays whole
        raise CharlmError(f"cannot write {path}: {e.strerror}") from None


def remove_files(paths):
    """Unlink the paths that are files or links; directories (which charlm never makes there) stay."""
    for path in paths:
        with contextlib.suppress(FileNotFoundError):
            if not stat.S_ISDIR(path.lstat().st_mode):
                path.unlink()


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
                fd = open_regular(path, os.O_CREAT | os.O_RDWR)
            except CharlmError as e:
                raise CharlmError(f"cannot lock {self.path} for training: {e}") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                owner = _pid_in(path)  # none yet when the holder has only just taken it
                who = f"process {owner}" if owner else "another process"
                raise CharlmError(f"{self.path} is being trained by {who} (lock file {path}); wait for it or stop it "
                                  f"first") from None
            with contextlib.suppress(FileNotFoundError):  # a holder releasing it may have removed the file locked
                if os.fstat(fd).st_ino == os.lstat(path).st_ino:
                    break
            os.close(fd)
        try:
            os.ftruncate(fd, 0)
            write_all(fd, f"{os.getpid()}\n".encode(), path)  # for the message a second trainer gets
            remove_files(self.path.glob(".*.tmp"))  # only a trainer writes here, and it held this lock
            self.settle_best()
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
        path = self.path / METRICS
        fd = open_regular(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        try:
            write_all(fd, (json.dumps(record) + "\n").encode(), path)
        finally:
            os.close(fd)

    def settle_best(self, named=None):
        """Finish or drop the pending best-parameter files: the one state.json names (named: its tag, when the caller
        has just written it) goes into place, any other a kill left is removed."""
        named = named or self.read_state().get("best_pending")
        for pending in self.path.glob(PENDING.format("*")):
            if pending.name == PENDING.format(named) and stat.S_ISREG(pending.lstat().st_mode):  # no link, no dir
                try:
                    os.replace(pending, self.path / BEST)
                except OSError as e:
                    raise CharlmError(f"cannot move {pending.name} to {self.path / BEST}: {e.strerror}") from None
            else:
                remove_files([pending])

    def best_params(self):
        """The best parameters' file: params-best.params, or the pending one state.json names (a kill's leftover)."""
        if not any(self.path.glob(PENDING.format("*"))):  # as almost always: no state.json to read
            return self.path / BEST
        pending = self.path / PENDING.format(self.read_state().get("best_pending"))
        return pending if pending.is_file() else self.path / BEST

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
        for key in ("last", "best_pending"):  # names joined into file names: a checkpoint tag and nothing else
            if state.get(key) is not None and not (isinstance(state[key], str) and TAG.fullmatch(state[key])):
                raise CharlmError(f"{path} is damaged ({key} is {state[key]!r}, not a checkpoint tag such as e3-s0)")
        return state

    def resume_state(self):
        """state.json for a resume: an error, before anything is written, when it cannot say where the run stands."""
        state, path, records = self.read_state(), self.path / STATE, self.metrics()
        if "epoch" not in state:
            kept = [name for name, there in ((METRICS, records), (BEST, (self.path / BEST).exists()),
                                             ("last-* checkpoints", any(self.path.glob("last-*")))) if there]
            if kept:
                raise CharlmError(f"{path} {'has no epoch' if path.exists() else 'is missing'}, but the run has "
                                  f"{', '.join(kept)}: it cannot resume without knowing where it stands (nothing "
                                  f"was changed; put back its state.json, or go on with --init-from {self.path})")
        unnamed = sorted(p.name for p in self.path.glob("last-*") if p.is_file()) if "last" not in state else []
        if unnamed and (self.path / BEST).exists():  # a best exists only once state.json named a checkpoint: lost
            raise CharlmError(f"{path} names no last checkpoint, but the run has {unnamed[0]} and {BEST}: state.json "
                              f"is damaged (nothing was changed; put back its state.json, or go on with --init-from "
                              f"{self.path})")
        ahead = [r["epoch"] for r in records if r["epoch"] > state.get("epoch", 0) + 1]
        if ahead:
            raise CharlmError(f"{self.path / METRICS} has records of epoch {ahead[0]}, past the checkpoint {path} "
                              f"names (epoch {state.get('epoch', 0)}): one of the two is damaged (nothing was changed)")
        return state

    def metrics(self):
        """The metrics.jsonl records, skipping a last line a crash cut short (no line end); a clear error naming
        every other line that is not an epoch's record."""
        path = self.path / METRICS
        text = read_utf8(path) if path.exists() else ""
        lines = text.split("\n")  # the piece after the last line end: "" or a line cut short
        records, bad = [], []
        for n, line in enumerate(lines, 1):
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                if n < len(lines):
                    bad.append(n)
                continue
            if not _is_record(record):
                bad.append(n)
                continue
            records.append(record)
        if bad:
            shown = ", ".join(map(str, bad[:5])) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
            raise CharlmError(f"{path} is damaged (line{'s' if len(bad) > 1 else ''} {shown} "
                              f"{'are' if len(bad) > 1 else 'is'} not an epoch's record)")
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
        path = self.path / CONFIG
        cfg = configs.resolve([path])  # a setting it lacks (made before it existed): the default
        unset = configs.unset(cfg)
        doc = (configs.read_yaml(path, "config ")[0] or {}) if unset else {}  # read again to tell null from absent
        for key in unset:
            section, name = key.split(".")
            if name in (doc.get(section) or {}):  # there but null: a hand edit, as a run records every setting
                raise CharlmError(f"{path}: {key} is null; a run's config.yaml holds every setting it trained "
                                  f"with: give it a value")
        return cfg

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


def init_source(cfg, source, theirs):
    """The vocabulary of --init-from's run `source` (its config: theirs), checked to hold best parameters and fit
    cfg's settings."""
    where = f"--init-from {source.path}"
    theirs = theirs.model
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
    return vocab


def find(run=None, runs_dir="runs"):
    """The run directory given, or the one `runs_dir/latest` points to; checked to be a run."""
    path = Path(run) if run else Path(runs_dir) / LATEST
    if not run and not path.exists():
        raise CharlmError(f"no runs yet in {runs_dir}/: train one with `charlm train`, or pass --run DIR")
    if not run and path.is_symlink():
        target = os.readlink(path)  # charlm writes a run's plain name: a received link may point anywhere
        if target != Path(target).name or target in (".", ".."):
            raise CharlmError(f"{path} points at {target}, not at a run in {runs_dir}/: pass --run DIR to use it")
    if not (path / CONFIG).is_file() or not (path / VOCAB).is_file():
        raise CharlmError(f"{path} is not a run directory (no {CONFIG} and {VOCAB})")
    return Run(path.resolve())
