"""The run directory: config, vocabulary, checkpoints, state and metrics, each file written atomically."""
import contextlib
import json
import os
import time
from pathlib import Path

from . import __version__, config as configs
from .data import Vocab
from .errors import CharlmError

CONFIG, VOCAB, STATE, METRICS = "config.yaml", "vocab.json", "state.json", "metrics.jsonl"
PARAMS = {"best": "params-best.params", "last": "params-last.params"}
TRAINER = "trainer-last.states"
LATEST = "latest"
LOCK = ".lock"


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
        tmp.unlink(missing_ok=True)
        raise CharlmError(f"cannot write {path}: {e.strerror}") from None


def write_text(path, text):
    """Write a text file atomically."""
    atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def _pid_in(path):
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, under another user
    return True


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
        """Hold the run directory for this process: a second training of it refuses to start.

        The lock file holds the owner's pid; a lock left by a process that no longer runs is taken over."""
        path = self.path / LOCK
        while True:
            try:
                fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
                break
            except FileExistsError:
                owner = _pid_in(path)
                if owner and owner != os.getpid() and _alive(owner):
                    raise CharlmError(f"{self.path} is being trained by process {owner} (lock file {path}); "
                                      f"wait for it or stop it first") from None
                path.unlink(missing_ok=True)  # stale: its process is gone
        with os.fdopen(fd, "w") as f:
            f.write(f"{os.getpid()}\n")
        try:
            yield self
        finally:
            path.unlink(missing_ok=True)

    def start(self, cfg, vocab, fresh=True):
        """Write the resolved config and the vocabulary, and a new state.json when fresh."""
        write_text(self.path / CONFIG, configs.to_yaml(cfg))
        write_text(self.path / VOCAB, vocab.to_json())
        self.write_state({"epoch": 0, "status": "running"} if fresh else {**self.read_state(), "status": "running"})

    def _point_latest(self):
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
        from .engine import mx  # already imported by whoever trains; only the version is read
        state = {**state, "versions": {"charlm": __version__, "mxnet": mx.__version__}}
        write_text(self.path / STATE, json.dumps(state, indent=2) + "\n")

    def save_checkpoint(self, model, trainer, record, is_best, lr_scale=1.0):
        """Save last (and, when is_best, best) parameters, trainer state, state.json and a metrics line."""
        atomic_write(self.path / PARAMS["last"], model.save_parameters)
        atomic_write(self.path / TRAINER, trainer.save_states)
        if is_best:
            atomic_write(self.path / PARAMS["best"], model.save_parameters)
        with open(self.path / METRICS, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
            f.flush()
            os.fsync(f.fileno())
        previous = self.read_state()
        best_epoch = record["epoch"] if is_best else previous.get("best_epoch")
        # state.json is written last: its epoch says which checkpoint is complete.
        self.write_state({"epoch": record["epoch"], "status": "running", "best_epoch": best_epoch,
                          "lr_scale": lr_scale})
        if record["epoch"] == 1:
            self._point_latest()  # from its first checkpoint on, a run has a model to generate from

    def finish(self):
        """Mark the run finished in state.json."""
        self.write_state({**self.read_state(), "status": "finished"})

    def read_state(self):
        """state.json as a dict ({} before it is first written)."""
        path = self.path / STATE
        try:
            return json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise CharlmError(f"{path} is damaged (not JSON)") from None

    def metrics(self):
        """The metrics.jsonl records, in order, ignoring a line cut short by a crash."""
        path = self.path / METRICS
        records = []
        for line in path.read_text(encoding="utf-8").splitlines() if path.exists() else []:
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        return records

    def keep_metrics(self, last_epoch):
        """Drop metrics lines past last_epoch (from a checkpoint that never completed); return the rest."""
        records = [r for r in self.metrics() if r["epoch"] <= last_epoch]
        write_text(self.path / METRICS, "".join(json.dumps(r) + "\n" for r in records))
        return records

    def config(self):
        """The run's resolved config."""
        return configs.resolve([self.path / CONFIG])

    def vocab(self):
        """The run's vocabulary."""
        return Vocab.from_json((self.path / VOCAB).read_text(encoding="utf-8"))

    def load_params(self, model, which, ctx):
        """Load the run's `which` ("best" or "last") parameters into model."""
        from .engine import mx

        params = self.path / PARAMS[which]
        if not params.exists():
            raise CharlmError(f"{self.path} has no {PARAMS[which]}: it has not finished an epoch yet")
        try:
            model.load_parameters(str(params), ctx=ctx)
        except (mx.base.MXNetError, AssertionError, ValueError) as e:
            # MXNet's messages carry a C++ stack before the cause; the cause is the last line.
            lines = [line.strip() for line in str(e).splitlines() if line.strip()] or [type(e).__name__]
            cause = lines[-1].removeprefix("MXNetError: ")
            raise CharlmError(f"{params} cannot be loaded into the model its config.yaml and vocab.json "
                              f"describe: {cause}") from None

    def load_last(self, model, trainer, ctx):
        """Load the last checkpoint: parameters into model, optimizer state into trainer."""
        self.load_params(model, "last", ctx)
        try:
            trainer.load_states(str(self.path / TRAINER))
        except Exception as e:  # MXNet unpickles it: any failure means the file is damaged
            raise CharlmError(f"{self.path / TRAINER} cannot be loaded: {type(e).__name__}") from None

    def load_model(self, ctx, which="best"):
        """Rebuild the model from config.yaml and vocab.json and load its `which` parameters."""
        from . import model as models

        model = models.build(self.config().model, len(self.vocab()), ctx)
        self.load_params(model, which, ctx)
        return model


def find(run=None, runs_dir="runs"):
    """The run directory given, or the one `runs_dir/latest` points to; checked to be a run."""
    path = Path(run) if run else Path(runs_dir) / LATEST
    if not run and not path.exists():
        raise CharlmError(f"no runs yet in {runs_dir}/: train one with `charlm train`, or pass --run DIR")
    if not (path / CONFIG).is_file() or not (path / VOCAB).is_file():
        raise CharlmError(f"{path} is not a run directory (no {CONFIG} and {VOCAB})")
    return Run(path.resolve())
