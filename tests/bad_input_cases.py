"""Every bad input charlm is known to meet and the one-line error it gets. test_bad_inputs.py checks
each row; scripts/bad_inputs.py prints docs/reliability.md's table from this same list."""
import contextlib
import errno
import hashlib
import json
import os
import pickle
import sys
from pathlib import Path
from unittest import mock

from click.testing import CliRunner

from charlm.cli import main
from charlm.launch import DMLC_ENV
from conftest import FIXED_FLAGS

TINY = [*FIXED_FLAGS,
        "--hidden-size", "8", "--embed-size", "4", "--num-layers", "1", "--seq-len", "4", "--batch-size", "2",
        "--epochs", "1", "--sample-every", "0"]
TEXT = "the quick brown fox jumps over the lazy dog.\n" * 20


def digest(run):
    """The SHA-256 of each file of a run directory, by name."""
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(run.iterdir()) if p.is_file()}


class Workspace:
    """Files the cases need, made in one directory; a trained run is made on first use, and damaged copies of it
    (with their digests as damaged, in `damaged`)."""

    def __init__(self, tmp):
        self.tmp = Path(tmp)
        self.corpus = self.file("corpus.txt", TEXT.encode())
        self._run = None
        self.damaged = {}

    def file(self, name, content):
        path = self.tmp / name
        path.write_bytes(content)
        return path

    @property
    def run(self):
        if self._run is None:
            result = CliRunner().invoke(main, ["train", "--data", str(self.corpus), "--runs-dir",
                                               str(self.tmp / "runs"), "--name", "good", *TINY])
            assert result.exit_code == 0, result.output
            self._run = self.tmp / "runs" / "good"
        return self._run

    def damaged_run(self, name, damage):
        """A copy of the trained run with damage(copy) applied."""
        import shutil
        copy = self.tmp / "runs" / name
        shutil.copytree(self.run, copy)
        damage(copy)
        self.damaged[copy] = digest(copy)
        return copy


def _truncate(run):
    params = run / "params-best.params"
    params.write_bytes(params.read_bytes()[:200])


def _other_size(run):
    config = run / "config.yaml"
    config.write_text(config.read_text().replace("hidden_size: 8", "hidden_size: 12"))


def _fewer_characters(run):
    vocab = run / "vocab.json"
    chars = json.loads(vocab.read_text())["chars"]
    vocab.write_text(json.dumps({"chars": chars[:-1]}))


def _damage_optimizer_state(run):
    optim = next(run.glob("last-*.optim"))
    optim.write_bytes(optim.read_bytes()[:20])


def _pickled_optimizer_state(run):
    """The last checkpoint as an earlier charlm wrote it: the optimizer state a pickle, last-TAG.states."""
    optim = next(run.glob("last-*.optim"))
    optim.unlink()
    optim.with_suffix(".states").write_bytes(pickle.dumps(({}, None)))


def _damage_vocab(run):
    (run / "vocab.json").write_text('{"chars": ')


def _damage_state(run):
    state = run / "state.json"
    state.write_text(json.dumps({**json.loads(state.read_text()), "epoch": "two"}))


def _damage_metrics_line(run):
    (run / "metrics.jsonl").write_text("5\n")


def _delete_metrics(run):
    (run / "metrics.jsonl").unlink()


def _metrics_line_not_json(run):
    metrics = run / "metrics.jsonl"
    metrics.write_text("not json\n" + metrics.read_text())


def _metrics_value_a_string(run):
    metrics = run / "metrics.jsonl"
    record = json.loads(metrics.read_text().splitlines()[0])
    metrics.write_text(json.dumps({**record, "val_ppl": str(record["val_ppl"])}) + "\n")


def _no_state(run):
    (run / "state.json").unlink()


def _state_without_epoch(run):
    state = run / "state.json"
    state.write_text(json.dumps({k: v for k, v in json.loads(state.read_text()).items() if k != "epoch"}))


def _state_with(key, value):
    def damage(run):
        state = run / "state.json"
        state.write_text(json.dumps({**json.loads(state.read_text()), key: value}))
    return damage


def _state_only(state):
    def damage(run):
        (run / "state.json").write_text(json.dumps(state))
    return damage


def _lock_linked_to(victim):
    def damage(run):
        (run / ".lock").symlink_to(victim)
    return damage


def _null_in_config(key):
    def damage(run):
        config = run / "config.yaml"
        config.write_text(config.read_text().replace(f"  {key}: ", f"  {key}: null # ", 1))
    return damage


def _unfinished(run):
    (run / "params-best.params").unlink()


def _word_level(run):
    (run / "vocab.json").write_text(json.dumps({"level": "word", "tokens": ["<unk>", "<eos>", "the", "fox"]}))


def _no_onnx():
    return mock.patch.dict(sys.modules, {"onnx": None})  # None in sys.modules: its import raises ImportError


def _unlockable_run():
    """A run directory this user may not write in (permissions do not stop root, who runs the tests here)."""
    real = os.open

    def refuse(path, flags, *args, **kwargs):
        if str(path).endswith(".lock"):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
        return real(path, flags, *args, **kwargs)
    return mock.patch("charlm.run.os.open", refuse)


def _unreadable_data():
    real = open

    def refuse(path, *args, **kwargs):
        if str(path).endswith("secret.txt"):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
        return real(path, *args, **kwargs)
    return mock.patch("builtins.open", refuse)


def _disk_full():
    return mock.patch("charlm.run.os.fsync", side_effect=OSError(errno.ENOSPC, "No space left on device"))


def _worker_env():
    """The environment a launcher gives a worker; no scheduler listens, but these cases stop before connecting."""
    return mock.patch.dict(os.environ, {"DMLC_ROLE": "worker", "DMLC_PS_ROOT_URI": "127.0.0.1",
                                        "DMLC_PS_ROOT_PORT": "9", "DMLC_NUM_SERVER": "1", "DMLC_NUM_WORKER": "2"})


def _no_tensorboardx():
    return mock.patch.dict(sys.modules, {"tensorboardX": None})  # None: importing it raises ImportError


def _no_cluster():
    return mock.patch.dict(os.environ, {name: "" for name in DMLC_ENV})  # empty counts as unset


def full_disk_for(suffix):
    """os.write failing with ENOSPC on the files whose names end with suffix."""
    real = os.write

    def write(fd, data):
        if os.readlink(f"/proc/self/fd/{fd}").endswith(suffix):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(fd, data)
    return lambda: mock.patch("charlm.run.os.write", write)


def _corpus_too_large():
    return mock.patch("charlm.data.load_corpus", side_effect=MemoryError())


def _out_of_memory():
    message = "Unable to allocate 8.00 GiB for an array with shape (1073741824,) and data type int64"
    return mock.patch("charlm.training.setup", side_effect=MemoryError(message))


def _linked_runs(ws):
    """A runs directory whose `latest` points at a run outside it."""
    runs = ws.tmp / "linked-runs"
    if not runs.exists():
        runs.mkdir()
        (runs / "latest").symlink_to(Path("..") / "runs" / ws.run.name)
    return runs


def _fifo(ws):
    path = ws.tmp / "fifo"
    if not path.exists():
        os.mkfifo(path)
    return path


def _resume(ws, name, damage):
    """`charlm train --resume` of a copy of the workspace's run, damaged by damage(run), to 2 epochs."""
    return ["train", "--resume", str(ws.damaged_run(name, damage)), "--epochs", "2"]


def _train(ws, *args):
    return ["train", "--data", str(ws.corpus), "--runs-dir", str(ws.tmp / "new-runs"), *TINY, *args]


ONE_POINT = "parameters: {model.hidden_size: {values: [1]}}\n"
LAUGHS = "parameters:\n  model.cell:\n    values:\n      - &a0 [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"      - &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]\n" for i in range(1, 9))  # 10**8 values once expanded


def _sweep(ws, name, text, *args, received=None):
    """A sweep of the file `name` holding text, into a runs directory of its own; received(sweep directory)
    plants what a received sweep directory may hold."""
    folder = ws.tmp / "sweeps" / name.replace(".", "_")
    (folder / "runs" / Path(name).stem).mkdir(parents=True, exist_ok=True)
    if received and not any((folder / "runs" / Path(name).stem).iterdir()):
        received(folder / "runs" / Path(name).stem)
    (folder / name).write_text(text)
    return ["sweep", str(folder / name), "--runs-dir", str(folder / "runs"), *args]


def _generate(ws, *args):
    return ["generate", "the", "--run", str(ws.run), *args]


# (input, how it is given, a fragment of the message). `args` builds the command line from a Workspace.
CASES = [
    ("missing file", lambda ws: _train(ws, "--data", str(ws.tmp / "nope.txt")), "data file not found"),
    ("a directory instead of a file", lambda ws: _train(ws, "--data", str(ws.tmp)), "is a directory"),
    ("empty file", lambda ws: _train(ws, "--data", str(ws.file("empty.txt", b""))), "holds no text"),
    ("invalid UTF-8", lambda ws: _train(ws, "--data", str(ws.file("latin1.txt", "caf\xe9 ".encode("latin-1") * 9))),
     "is not valid utf-8: byte 0xe9 at offset 3; give its --encoding, or --errors replace"),
    ("`--encoding` that is not a text encoding", lambda ws: _train(ws, "--encoding", "rot13"),
     "'rot13' is not a text encoding"),
    ("UTF-16 without a byte order mark",
     lambda ws: _train(ws, "--data", str(ws.file("u16.txt", TEXT.encode("utf-16-be"))), "--encoding", "utf-16"),
     "is not valid utf-16: UTF-16 stream does not start with BOM; give its --encoding"),
    ("a binary file", lambda ws: _train(ws, "--data", str(ws.file("bin.dat", bytes(range(256)) * 4))),
     "looks like a binary file"),
    ("corpus too short for one batch", lambda ws: _train(ws, "--data", str(ws.file("short.txt", b"short"))),
     "needs at least 9"),
    ("corpus too short for a validation split", lambda ws: _train(ws, "--val-frac", "0.001"),
     "validation text has 0 tokens; need at least 2: raise --val-frac"),
    ("`--seq-len 0`", lambda ws: _train(ws, "--seq-len", "0"), "data.seq_len must be at least 1"),
    ("`--batch-size -1`", lambda ws: _train(ws, "--batch-size", "-1"), "data.batch_size must be at least 1"),
    ("`--epochs 0`", lambda ws: _train(ws, "--epochs", "0"), "train.epochs must be at least 1"),
    ("`--hidden-size 0`", lambda ws: _train(ws, "--hidden-size", "0"), "model.hidden_size must be at least 1"),
    ("`--checkpoint-every -1`", lambda ws: _train(ws, "--checkpoint-every", "-1"),
     "train.checkpoint_every must not be negative"),
    ("`--val-frac 1`", lambda ws: _train(ws, "--val-frac", "1"), "data.val_frac must be in [0, 1)"),
    *[(f"`--time-limit {limit}`", lambda ws, limit=limit: _train(ws, "--time-limit", limit),
       f"train.time_limit must be a positive duration such as 90s, 30m, 2h or 600 (seconds), got '{limit}'")
      for limit in ("0", "-5m", "abc")],
    ("`--patience -1`", lambda ws: _train(ws, "--patience", "-1"), "train.patience must not be negative"),
    *[(f"`--ema {decay}`", lambda ws, decay=decay: _train(ws, "--ema", decay), "train.ema must be in [0, 1)")
      for decay in ("1.5", "-0.1")],
    ("`--ema` without validation text", lambda ws: _train(ws, "--ema", "0.99", "--val-frac", "0"),
     "train.ema picks the average or the weights by validation loss"),
    ("`--weight-decay -1`", lambda ws: _train(ws, "--weight-decay", "-1"), "train.weight_decay must not be negative"),
    *[(f"`--{flag} 1`", lambda ws, flag=flag: _train(ws, f"--{flag}", "1"), f"model.{key} must be in [0, 1)")
      for flag, key in (("dropout", "dropout"), ("weight-drop", "weight_drop"))],
    ("`--warmup -1`", lambda ws: _train(ws, "--warmup", "-1"), "train.warmup must not be negative"),
    ("unknown `--lr-schedule`", lambda ws: _train(ws, "--lr-schedule", "linear"), "Invalid value for '--lr-schedule'"),
    ("`--tensorboard` without tensorboardX", lambda ws: _train(ws, "--tensorboard", str(ws.tmp / "tb")),
     'pip install "charlm[tensorboard]"'),
    ("`--lr-schedule cosine` with `--kvstore dist_async`",
     lambda ws: _train(ws, "--kvstore", "dist_async", "--lr-decay", "1", "--lr-schedule", "cosine"),
     "cannot schedule the learning rate or decay weights"),
    ("`--seed -1`", lambda ws: _train(ws, "--seed", "-1"), "train.seed must not be negative, got -1"),
    ("`config show` of a missing file", lambda ws: ["config", "show", "--data", str(ws.tmp / "nope.txt")],
     "data file not found"),
    ("`config show` of invalid UTF-8",
     lambda ws: ["config", "show", "--data", str(ws.file("latin1.txt", "caf\xe9 ".encode("latin-1") * 9))],
     "is not valid utf-8"),
    ("empty file, settings left to the recipe",
     lambda ws: ["train", "--data", str(ws.file("empty.txt", b"")), "--runs-dir", str(ws.tmp / "new-runs")],
     "holds no text"),
    ("`--grad-clip nan`", lambda ws: _train(ws, "--grad-clip", "nan"), "train.grad_clip must not be negative, got nan"),
    ("`--lr` too small to change a weight", lambda ws: _train(ws, "--lr", "1e-39"),
     "train.lr must be a number of at least 1e-30"),
    ("a model too large for MXNet's arrays", lambda ws: _train(ws, "--hidden-size", "30000"),
     "the model is too large for MXNet"),
    ("data file this user may not read", lambda ws: _train(ws, "--set", f"data.path={ws.file('secret.txt', b'x')}"),
     "cannot read data file"),
    ("`--valid-data` file missing", lambda ws: _train(ws, "--valid-data", str(ws.tmp / "nope.txt")),
     "data file not found"),
    ("`data.buckets` not increasing", lambda ws: _train(ws, "--mode", "lines", "--set", "data.buckets=[8, 4]"),
     "data.buckets must be increasing positive lengths"),
    ("`--tie-weights` with embed_size != hidden_size", lambda ws: _train(ws, "--tie-weights"),
     "model.tie_weights needs a Gluon cell (rnn, lstm, gru) with embed_size = hidden_size"),
    ("`--init-from` a directory that is not a run", lambda ws: _train(ws, "--init-from", str(ws.tmp)),
     "is not a run directory"),
    ("`--init-from` a run with another model shape",
     lambda ws: _train(ws, "--init-from", str(ws.run), "--hidden-size", "12"),
     "its model has hidden_size 8, this config 12: give the same model settings"),
    ("`--init-from` a run whose vocabulary lacks characters of the text",
     lambda ws: _train(ws, "--init-from", str(ws.run), "--data", str(ws.file("i.txt", "naïve text. ".encode() * 20))),
     "characters not in the vocabulary: 'ï'"),
    ("`--init-from` a character-level run at word level",
     lambda ws: _train(ws, "--init-from", str(ws.run), "--level", "word"), "it is a char-level run"),
    ("`--init-from` a stream-mode run in lines mode",
     lambda ws: _train(ws, "--init-from", str(ws.run), "--mode", "lines"), "its vocabulary has no line-start token"),
    ("unknown cell", lambda ws: _train(ws, "--cell", "transformer"), "Invalid value for '--cell'"),
    ("unknown optimizer", lambda ws: _train(ws, "--optimizer", "lion"), "Invalid value for '--optimizer'"),
    ("unknown key in a config file", lambda ws: _train(ws, "-c", str(ws.file("k.yaml", b"model:\n  hiden_size: 3\n"))),
     "k.yaml:2: unknown key model.hiden_size; valid keys in model:"),
    ("malformed YAML", lambda ws: _train(ws, "-c", str(ws.file("m.yaml", b"model:\n  cell: [lstm\n"))),
     "m.yaml: line 3 malformed YAML"),
    ("`generate` before any run was trained", lambda ws: ["generate", "the", "--runs-dir", str(ws.tmp / "none")],
     "no runs yet in"),
    ("`latest` pointing outside its runs directory", lambda ws: ["generate", "the", "--runs-dir", str(_linked_runs(ws))],
     "latest points at ../runs/good, not at a run in"),
    ("`--run` that is not a run directory", lambda ws: ["generate", "the", "--run", str(ws.tmp)],
     "is not a run directory"),
    ("truncated parameter file", lambda ws: ["generate", "the", "--run", str(ws.damaged_run("cut", _truncate))],
     "params-best.params cannot be loaded"),
    ("parameters that do not match the saved config",
     lambda ws: ["eval", "--run", str(ws.damaged_run("other", _other_size))], "params-best.params cannot be loaded"),
    ("vocabulary that does not match the parameters",
     lambda ws: ["generate", "the", "--run", str(ws.damaged_run("vocab", _fewer_characters))],
     "params-best.params cannot be loaded"),
    ("damaged optimizer state on `--resume`",
     lambda ws: _resume(ws, "states", _damage_optimizer_state),
     "last-e1-s0.optim (optimizer state) cannot be loaded"),
    ("optimizer state pickled by an earlier charlm, on `--resume`",
     lambda ws: _resume(ws, "pickled", _pickled_optimizer_state),
     "is a pickle, which can run code when loaded: --resume does not read it; go on from its parameters in a new "
     "run with charlm train --init-from"),
    ("damaged vocabulary", lambda ws: ["generate", "the", "--run", str(ws.damaged_run("badvocab", _damage_vocab))],
     "vocab.json is damaged (not a vocabulary charlm wrote)"),
    ("damaged state file on `--resume`",
     lambda ws: _resume(ws, "badstate", _damage_state),
     "state.json is damaged (epoch is 'two')"),
    ("a metrics line that is no record, on `--resume`",
     lambda ws: _resume(ws, "badline", _damage_metrics_line),
     "metrics.jsonl is damaged (line 1 is not an epoch's record)"),
    ("metrics file deleted, on `--resume`",
     lambda ws: _resume(ws, "nometrics", _delete_metrics),
     "metrics.jsonl is damaged: it has no line for epoch 1"),
    ("run directory this user may not write in, on `--resume`",
     lambda ws: ["train", "--resume", str(ws.run), "--epochs", "2"], "cannot lock"),
    ("prefix with characters outside the vocabulary", lambda ws: ["generate", "the €", "--run", str(ws.run)],
     "prefix characters not in the model's vocabulary: '€'"),
    ("empty prefix", lambda ws: ["generate", "", "--run", str(ws.run)], "the prefix is empty"),
    ("`--length 0`", lambda ws: ["generate", "the", "--length", "0", "--run", str(ws.run)],
     "--length must be at least 1"),
    ("`--temperature 0`", lambda ws: ["generate", "the", "--temperature", "0", "--run", str(ws.run)],
     "--temperature must be positive"),
    ("`--temperature nan`", lambda ws: ["generate", "the", "--temperature", "nan", "--run", str(ws.run)],
     "--temperature must be positive, got nan"),
    ("`--top-k 0`", lambda ws: ["generate", "the", "--top-k", "0", "--run", str(ws.run)], "--top-k must be between 1"),
    ("`--top-k` larger than the vocabulary", lambda ws: ["generate", "the", "--top-k", "99", "--run", str(ws.run)],
     "--top-k must be between 1 and the vocabulary size"),
    ("`--top-p 0`", lambda ws: _generate(ws, "--top-p", "0"), "--top-p must be in (0, 1], got 0.0"),
    ("`--top-p 1.5`", lambda ws: _generate(ws, "--top-p", "1.5"), "--top-p must be in (0, 1], got 1.5"),
    ("`--top-p nan`", lambda ws: _generate(ws, "--top-p", "nan"), "--top-p must be in (0, 1], got nan"),
    ("`--stop \"\"`", lambda ws: _generate(ws, "--stop", ""), "--stop must be non-empty text, got ''"),
    ("`--num-samples 0`", lambda ws: _generate(ws, "--num-samples", "0"), "--num-samples must be at least 1, got 0"),
    ("`--prefix-file` missing", lambda ws: ["generate", "--prefix-file", str(ws.tmp / "nope.txt"), "--run", str(ws.run)],
     "cannot read prefix file"),
    ("`--prefix-file` a directory", lambda ws: ["generate", "--prefix-file", str(ws.tmp), "--run", str(ws.run)],
     "cannot read prefix file"),
    ("`--prefix-file` not UTF-8",
     lambda ws: ["generate", "--prefix-file", str(ws.file("p-latin1.txt", "caf\xe9".encode("latin-1"))), "--run",
                 str(ws.run)], "is not valid UTF-8: byte 0xe9 at offset 3"),
    ("both PREFIX and `--prefix-file`", lambda ws: _generate(ws, "--prefix-file", str(ws.corpus)),
     "give a PREFIX or --prefix-file FILE, not both"),
    ("neither PREFIX nor `--prefix-file`", lambda ws: ["generate", "--run", str(ws.run)],
     "give a PREFIX to continue, or --prefix-file FILE (- for stdin)"),
    ("`generate -i` with a PREFIX", lambda ws: _generate(ws, "-i"), "-i reads its prefixes from stdin"),
    ("text to evaluate with unknown characters",
     lambda ws: ["eval", "--run", str(ws.run), "--data", str(ws.file("e.txt", "naïve".encode()))],
     "characters not in the vocabulary: 'ï'"),
    ("text to evaluate that is not UTF-8",
     lambda ws: ["eval", "--run", str(ws.run), "--data", str(ws.file("e-latin1.txt", "caf\xe9".encode("latin-1")))],
     "is not valid utf-8: byte 0xe9 at offset 3; give its --encoding, or --errors replace (eval reads it with the "
     "run's data.encoding and data.errors)"),
    ("`eval --task addition` without `--data`", lambda ws: ["eval", "--task", "addition", "--run", str(ws.run)],
     "--task addition needs --data FILE"),
    ("`eval --task addition` on lines that are not a+b=c",
     lambda ws: ["eval", "--task", "addition", "--run", str(ws.run), "--data", str(ws.corpus)],
     "not an addition line (a+b=c)"),
    ("`eval --task addition` on a file that is not UTF-8",
     lambda ws: ["eval", "--task", "addition", "--run", str(ws.run), "--data",
                 str(ws.file("add-latin1.txt", "1+1=2\xe9".encode("latin-1")))],
     "is not valid utf-8: byte 0xe9 at offset 5; convert it to UTF-8"),
    ("`data addition --base 16`", lambda ws: ["data", "addition", "--base", "16", "-o", str(ws.tmp / "a.txt")],
     "--base must be between 2 and 10"),
    ("`data addition --mixed --digits 16`",
     lambda ws: ["data", "addition", "--mixed", "--digits", "16", "-o", str(ws.tmp / "a.txt")],
     "--mixed takes numbers below 2**53: --digits at most 15 in base 10"),
    ("`data addition --seed -1`", lambda ws: ["data", "addition", "--seed", "-1", "-o", str(ws.tmp / "a.txt")],
     "--seed must not be negative, got -1"),
    ("`data addition` with more lines than memory holds",
     lambda ws: ["data", "addition", "--count", "100000000000", "-o", str(ws.tmp / "a.txt")],
     "--count 100,000,000,000 is too many: the lines are built in memory, and with --digits 8 at most 10,869,565"),
    ("`data addition --digits` of a trillion",
     lambda ws: ["data", "addition", "--digits", "1000000000000", "-o", str(ws.tmp / "a.txt")],
     "--digits 1000000000000 in base 10 is too large (at most 18)"),
    ("`export` of a run that has not finished an epoch",
     lambda ws: ["export", "--run", str(ws.damaged_run("unfinished", _unfinished)), "-o", str(ws.tmp / "e"),
                 "--format", "mxnet"], "has no params-best.params: no epoch of it has been scored yet"),
    ("`export` onto an existing output without `--force`",
     lambda ws: ["export", "--run", str(ws.run), "-o", str(ws.file("taken", b"")), "--format", "mxnet"],
     "already exists: pass --force to replace it"),
    ("`export --format onnx` without the onnx package",
     lambda ws: ["export", "--run", str(ws.run), "-o", str(ws.tmp / "e"), "--format", "onnx"],
     'needs the onnx package: pip install "charlm[onnx]"'),
    ("`export` of a word-level run",
     lambda ws: ["export", "--run", str(ws.damaged_run("words", _word_level)), "-o", str(ws.tmp / "e"),
                 "--format", "mxnet"], "is a word-level run: --format mxnet takes character-level runs"),
    ("`--gpu` with no GPU visible", lambda ws: _train(ws, "--gpu"), "--gpu: MXNet sees no GPU"),
    ("`--gpus` with no GPU visible", lambda ws: _train(ws, "--gpus", "0,1"), "--gpus: MXNet sees no GPU"),
    ("`--ctx` that is not a device list", lambda ws: _train(ws, "--ctx", "cpu0"),
     "--ctx 'cpu0': expected a comma-separated device list like cpu:0,cpu:1"),
    ("`--ctx` together with `--gpu`", lambda ws: _train(ws, "--ctx", "cpu:0,cpu:1", "--gpu"), "give only one of them"),
    ("batch that does not split over the devices", lambda ws: _train(ws, "--ctx", "cpu:0,cpu:1,cpu:2"),
     "data.batch_size 2 does not split evenly over 3 devices"),
    ("unknown kvstore", lambda ws: _train(ws, "--kvstore", "nccl"), "Invalid value for '--kvstore'"),
    ("dist kvstore without a cluster", lambda ws: _train(ws, "--kvstore", "dist_sync"),
     "--kvstore dist_sync needs a cluster"),
    ("`--kvstore dist_async` with a decaying learning rate", lambda ws: _train(ws, "--kvstore", "dist_async"),
     "pass --lr-decay 1"),
    ("`--on-divergence rollback` with a dist kvstore",
     lambda ws: _train(ws, "--kvstore", "dist_sync", "--on-divergence", "rollback"), "use --on-divergence stop"),
    ("a launcher's worker with `--kvstore local`", lambda ws: _train(ws), "pass --kvstore dist_sync or dist_async"),
    ("`--resume` with a dist kvstore", lambda ws: ["train", "--resume", str(ws.run), "--kvstore", "dist_sync"],
     "--resume continues a run in one process"),
    ("`launch-local` without a command", lambda ws: ["launch-local", "-n", "2"], "give the workers' charlm command"),
    ("output directory not writable", lambda ws: _train(ws, "--runs-dir", str(ws.corpus / "runs")),
     "cannot create a run directory"),
    ("disk full while saving", lambda ws: _train(ws, "--name", "full"), "No space left on device"),
    ("disk full while writing the lock, on `--resume`",
     lambda ws: _resume(ws, "fulllock", lambda run: None),
     ".lock: No space left on device"),
    ("`.lock` a symbolic link to another file, on `--resume`",
     lambda ws: _resume(ws, "linkedlock", _lock_linked_to(ws.corpus)),
     ".lock is a symbolic link: charlm writes only regular files in a run directory"),
    ("`state.json` missing from a run with checkpoints, on `--resume`",
     lambda ws: _resume(ws, "nostate", _no_state),
     "state.json is missing, but the run has metrics.jsonl, params-best.params, last-* checkpoints"),
    ("`state.json` without an epoch, on `--resume`",
     lambda ws: _resume(ws, "noepoch", _state_without_epoch),
     "state.json has no epoch, but the run has"),
    ("`state.json` that names no last checkpoint while one exists, on `--resume`",
     lambda ws: _resume(ws, "nolast", _state_only({"epoch": 0})),
     "state.json names no last checkpoint, but the run has last-e1-s0"),
    ("`state.json` behind `metrics.jsonl`, on `--resume`",
     lambda ws: _resume(ws, "behind", _state_with("epoch", -1)),
     "has records of epoch 1, past the checkpoint"),
    ("a path as the last checkpoint's tag in `state.json`, on `--resume`",
     lambda ws: _resume(ws, "tagpath", _state_with("last", "a/../../x")),
     "state.json is damaged (last is 'a/../../x', not a checkpoint tag such as e3-s0)"),
    ("a metrics record whose `val_ppl` is a string, on `plot`",
     lambda ws: ["plot", str(ws.damaged_run("strppl", _metrics_value_a_string)), "-o", str(ws.tmp / "strppl.png")],
     "metrics.jsonl is damaged (line 1 is not an epoch's record)"),
    ("a metrics line that is not JSON, before others, on `--resume`",
     lambda ws: _resume(ws, "notjson", _metrics_line_not_json),
     "metrics.jsonl is damaged (line 1 is not an epoch's record)"),
    *[(f"`{key}: null` in a run's config.yaml, on `{command[0]}`",
       lambda ws, key=key, command=command: [*command, "--run" if command[0] != "train" else "--resume",
                                             str(ws.damaged_run(f"null-{key}", _null_in_config(key)))],
       f"config.yaml: {section}.{key} is null; a run's config.yaml holds every setting")
      for section, key, command in (("model", "hidden_size", ["generate", "the"]), ("train", "lr", ["train"]),
                                    ("train", "epochs", ["eval"]))],
    ("a device as `--data`", lambda ws: _train(ws, "--data", "/dev/zero"),
     "data path is not a regular file (a device, FIFO or socket): /dev/zero"),
    ("a FIFO as `--data`", lambda ws: _train(ws, "--data", str(_fifo(ws))), "data path is not a regular file"),
    ("a FIFO as a config file", lambda ws: _train(ws, "-c", str(_fifo(ws))),
     "fifo: not a regular file (a device, FIFO or socket)"),
    ("a corpus too large for memory", lambda ws: _train(ws), "is too large to read into this machine's memory"),
    ("memory running out anywhere else", lambda ws: _train(ws),
     "out of memory: Unable to allocate 8.00 GiB for an array"),
    ("`export -o .`", lambda ws: ["export", "--run", str(ws.run), "-o", ".", "--format", "mxnet", "--force"],
     "-o .: give a new directory's name"),
    ("`export -o /`", lambda ws: ["export", "--run", str(ws.run), "-o", "/", "--format", "mxnet", "--force"],
     "-o /: give a new directory's name"),
    ("`export --force` onto a directory that is not an export",
     lambda ws: ["export", "--run", str(ws.run), "-o", str(ws.tmp / "runs"), "--format", "mxnet", "--force"],
     "holds files but no charlm-export.json: --force replaces only an earlier export or an empty directory"),
    ("a sweep value of YAML aliases nested in one another (\"billion laughs\")",
     lambda ws: _sweep(ws, "laughs.yaml", LAUGHS, "--dry-run"),
     "laughs.yaml: the sweep file expands to more than 100,000 values or nests too deep"),
    ("a sweep file named `..yaml`", lambda ws: _sweep(ws, "..yaml", ONE_POINT, "--dry-run"),
     "a sweep file's name (without .yaml) names its directory in the runs directory: give it a plain name, not '.'"),
    ("`early_terminate.strict` in a sweep file",
     lambda ws: _sweep(ws, "strict.yaml", "early_terminate: {type: hyperband, min_iter: 1, strict: true}\n"
                       + ONE_POINT, "--dry-run"),
     "early_terminate: unknown key 'strict'; valid keys: eta, max_iter, min_iter, s, type"),
    ("a received sweep directory whose `logs` is a symbolic link",
     lambda ws: _sweep(ws, "logs.yaml", ONE_POINT, received=lambda d: (d / "logs").symlink_to(ws.tmp)),
     "logs is not a directory (a symbolic link?): charlm writes its logs only into a real directory"),
    ("a received sweep directory whose `study.db` is a symbolic link",
     lambda ws: _sweep(ws, "db.yaml", "early_terminate: {type: hyperband, min_iter: 1}\n" + ONE_POINT,
                       received=lambda d: (d / "study.db").symlink_to(ws.corpus)),
     "study.db is not a regular file (a symbolic link?): charlm opens only a real study.db in a sweep directory"),
    ("`--storage` a server that refuses the connection",
     lambda ws: _sweep(ws, "refused.yaml", ONE_POINT, "--dry-run", "--storage",
                       "postgresql+psycopg2://charlm@127.0.0.1:1/none"),
     "cannot open the study storage postgresql+psycopg2://charlm@127.0.0.1:1/none: connection to server at"),
    ("`--storage` a file that is not a database",
     lambda ws: _sweep(ws, "text.yaml", ONE_POINT, "--storage", f"sqlite:///{ws.corpus}"),
     "corpus.txt: file is not a database"),
    ("`export --force` onto a file",
     lambda ws: ["export", "--run", str(ws.run), "-o", str(ws.corpus), "--format", "mxnet", "--force"],
     "is not a directory: --force replaces only an earlier export or an empty directory"),
]
# Cases that need the machine to misbehave, or the environment of a cluster's worker.
PATCHES = {"disk full while saving": _disk_full, "dist kvstore without a cluster": _no_cluster,
           "disk full while writing the lock, on `--resume`": full_disk_for(".lock"),
           "a corpus too large for memory": _corpus_too_large, "memory running out anywhere else": _out_of_memory,
           "run directory this user may not write in, on `--resume`": _unlockable_run,
           "data file this user may not read": _unreadable_data,
           "`export --format onnx` without the onnx package": _no_onnx,
           "`--tensorboard` without tensorboardX": _no_tensorboardx,
           **dict.fromkeys(["`--kvstore dist_async` with a decaying learning rate",
                            "`--on-divergence rollback` with a dist kvstore",
                            "`--lr-schedule cosine` with `--kvstore dist_async`",
                            "a launcher's worker with `--kvstore local`"], _worker_env)}


def invoke(ws, what, args):
    """Run one case's command; return the click result."""
    with PATCHES.get(what, contextlib.nullcontext)():
        return CliRunner().invoke(main, args(ws), prog_name="charlm")
