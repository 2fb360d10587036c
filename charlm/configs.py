"""Settings: dataclass defaults < YAML files < flags the user typed < --set, one name per setting:
`section.name` in YAML, `--name-with-dashes` on the command line."""
import contextlib
import dataclasses
import math
import re
import typing
from dataclasses import dataclass, field

import yaml

from .errors import CharlmError
from .text import read_utf8

CELLS = ("scratch-rnn", "scratch-lstm", "scratch-gru", "rnn", "lstm", "gru")
SCRATCH_CELLS = CELLS[:3]  # no embedding, no stacking, no dropout
# smaller rates change no float32 weight; this one keeps Adam's bias-corrected rate above MXNet's floor (1.2e-38)
MIN_LR = 1e-30
AUTO = " (the recipe chooses it unless set; the default is the fixed setting)"


def _auto(default, help, **meta):
    """A setting the recipe chooses unless given; `default` is its fixed setting (configs/fixed.yaml), which
    word-level and lines-mode runs get."""
    return _opt(default, help + AUTO, auto=True, **meta)


def _opt(default, help, **meta):
    meta = {"help": help, **meta}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=meta)
    return field(default=default, metadata=meta)


class _Section:
    """A config section that records in `given` the settings set on it (by a layer, a flag or an attribute), or
    made unlike their defaults: the recipe fills the others. None given to a recipe setting unsets it."""

    def __post_init__(self):
        object.__setattr__(self, "given", {f.name for f in dataclasses.fields(self)
                                           if getattr(self, f.name) != _default(f)})

    def __setattr__(self, name, value):
        f = next((f for f in dataclasses.fields(self) if f.name == name), None)
        if "given" in self.__dict__ and f is not None:
            if value is None and f.metadata.get("auto"):
                value = _default(f)
                self.given.discard(name)
            else:
                self.given.add(name)
        object.__setattr__(self, name, value)


def _default(f):
    return f.default_factory() if f.default is dataclasses.MISSING else f.default


@dataclass
class DataConfig(_Section):
    path: typing.Optional[str] = _opt(None, "UTF-8 text file to train on (default: the bundled Time Machine)",
                                      flag="data")
    valid_path: typing.Optional[str] = _opt(None, "separate validation text (then val_frac is not used)",
                                            flag="valid-data")
    test_path: typing.Optional[str] = _opt(None, "test text, scored with the best parameters after training",
                                           flag="test-data")
    level: str = _opt("char", "tokens: characters, or whitespace-separated words", choices=("char", "word"))
    min_freq: int = _opt(1, "word level: words seen fewer times read as <unk>")
    max_vocab: int = _auto(0, "word level: at most this many tokens, <unk> and <eos> included (0 = no cap)")
    mode: str = _opt("stream", "the text as one stream, or each line its own padded sequence",
                     choices=("stream", "lines"))
    buckets: typing.List[int] = _opt([], "lines mode: padded lengths to group lines by ([] = chosen from the "
                                         "line lengths); longer lines are split", flag=None)
    encoding: str = _opt("utf-8", "text encoding of the data file")
    errors: str = _opt("strict", "bytes that do not decode: an error, or replace them with U+FFFD, or drop them",
                       choices=("strict", "replace", "ignore"))
    lowercase: typing.Optional[bool] = _opt(None, "lowercase the text, as the tutorial does (null = only the "
                                                  "bundled book; a run's config.yaml records what was chosen)")
    strip_newlines: bool = _opt(False, "delete newlines, as the tutorial does")
    letters_only: bool = _opt(False, "turn every run of non-letters into one space, as d2l does")
    max_chars: int = _opt(0, "keep only the first N characters after normalising (0 = all)")
    val_frac: float = _opt(0.1, "fraction of the corpus held out as the validation tail")
    iterator: str = _opt("sequential", "stream mode batching: random windows or sequential streams",
                         choices=("random", "sequential"))
    seq_len: int = _auto(32, "time steps per batch (T)")
    batch_size: int = _auto(16, "sequences per batch (N)")


@dataclass
class ModelConfig(_Section):
    cell: str = _auto("lstm", "recurrent cell", choices=CELLS)
    embed_size: int = _auto(64, "embedding size for Gluon cells (0 = one-hot input)")
    hidden_size: int = _auto(256, "hidden units per layer")
    num_layers: int = _auto(2, "stacked layers (Gluon cells)")
    dropout: float = _auto(0.5, "dropout on embeddings, between layers and on outputs (Gluon cells)")
    variational_dropout: bool = _auto(False, "one dropout mask for every time step of a batch on the embeddings "
                                             "and outputs (variational dropout)")
    tie_weights: bool = _auto(False, "share the embedding matrix with the output layer (needs embed_size = "
                                     "hidden_size)")
    weight_drop: float = _auto(0.0, "dropout on the hidden-to-hidden weights, one mask per batch (DropConnect, "
                                    "Gluon cells)")


@dataclass
class TrainConfig(_Section):
    optimizer: str = _opt("adam", "optimizer", choices=("sgd", "adam"))
    lr: float = _auto(3e-3, "learning rate")
    lr_decay: float = _opt(0.93, "multiply the learning rate by this after each epoch (1 = constant)")
    plateau_factor: float = _opt(1.0, "multiply the learning rate by this after an epoch that did not improve "
                                      "the validation loss (1 = off)")
    grad_clip: float = _opt(1.0, "rescale gradients whose global L2 norm exceeds this (0 = off)")
    loss_reduction: str = _opt("mean", "loss the gradient is taken of: mean or sum over the batch's tokens",
                               choices=("mean", "sum"))
    epochs: int = _auto(20, "passes over the training text at most")
    time_limit: typing.Optional[str] = _opt(None, "stop once training has taken this long, earlier sessions "
                                                  "included: 90s, 30m, 2h or seconds (null: the recipe's budget "
                                                  "for the text, or no limit when epochs is set)",
                                                  metavar="DURATION")
    lr_schedule: str = _auto("exp", "exp: lr_decay after each epoch; cosine: from lr to 0 per update over the "
                                    "time limit or the epochs, whichever ends the run first; constant: lr "
                                    "throughout, for a run whose average (ema) does the annealing",
                             choices=("exp", "cosine", "constant"))
    warmup: int = _auto(0, "raise the learning rate linearly from 0 over the first N updates (0 = off)")
    patience: int = _auto(0, "stop after N epochs that lower neither the validation loss of the weights nor that "
                                "of their average (0 = off)")
    weight_decay: float = _auto(0.0, "weight decay: decoupled (AdamW) for adam, L2 for sgd (0 = off)")
    ema: float = _auto(0.0, "keep a moving average of the weights with this decay, e.g. 0.999, and save it as the "
                            "best model when its validation loss is lower (0 = off)")
    tensorboard: typing.Optional[str] = _opt(None, "write epoch metrics and samples as TensorBoard events "
                                                   "into DIR/<run name> (needs tensorboardX; null = off)",
                                                   metavar="DIR")
    seed: int = _opt(0, "random seed for initialisation, dropout and batch order")
    init_from: typing.Optional[str] = _opt(None, "start from the best parameters and the vocabulary of this run "
                                                 "directory instead of random weights (fine-tuning)")
    checkpoint_every: int = _opt(0, "also checkpoint every N batches within an epoch, for long epochs (0 = only "
                                    "at the end of each epoch)")
    on_divergence: str = _opt("stop", "on a NaN/inf loss or gradient: stop, or rollback to the last checkpoint "
                                      "with half the learning rate (at most 3 times)", choices=("stop", "rollback"))
    sample_every: int = _opt(5, "print greedy samples every N epochs (0 = never)")
    sample_length: int = _opt(100, "characters per sample")
    sample_prefixes: typing.List[str] = _opt([], "prefixes to sample from ([]: the first 16 characters, or 4 "
                                                 "words, of the validation text; a new line in lines mode)",
                                             flag=None)


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


SECTIONS = {f.name: f.default_factory for f in dataclasses.fields(Config)}


def keys():
    """Every setting as (section, dataclass field)."""
    return [(s, f) for s, cls in SECTIONS.items() for f in dataclasses.fields(cls)]


def flag_name(f):
    """The command-line flag of a field (without dashes), or None when it has none."""
    flag = f.metadata.get("flag", f.name)
    return flag and flag.replace("_", "-")


def _check_type(key, f, value):
    """Return value converted to the field's type, or raise a CharlmError naming the key."""
    kind = f.type
    if kind in (float, typing.Optional[float]) and isinstance(value, str):
        with contextlib.suppress(ValueError):
            value = float(value)  # PyYAML reads 1e-4 (no dot) as a string
    ok = {
        bool: isinstance(value, bool),
        int: isinstance(value, int) and not isinstance(value, bool),
        float: isinstance(value, (int, float)) and not isinstance(value, bool),
        str: isinstance(value, str),
        typing.Optional[str]: value is None or isinstance(value, str),
        typing.Optional[bool]: value is None or isinstance(value, bool),
        typing.Optional[int]: value is None or isinstance(value, int) and not isinstance(value, bool),
        typing.Optional[float]: value is None or isinstance(value, (int, float)) and not isinstance(value, bool),
        typing.List[str]: isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value),
        typing.List[int]: isinstance(value, (list, tuple)) and all(isinstance(v, int) and not isinstance(v, bool)
                                                                   for v in value),
    }[kind]
    if not ok:
        plain = typing.get_args(kind)[0] if typing.get_origin(kind) is typing.Union else kind  # Optional[int]: int
        name = plain.__name__ if isinstance(plain, type) else str(kind).replace("typing.", "")
        raise CharlmError(f"{key}: expected {name}, got {value!r}")
    if "choices" in f.metadata and value is not None and value not in f.metadata["choices"]:
        raise CharlmError(f"{key}: {value!r} is not one of {', '.join(f.metadata['choices'])}")
    if kind in (float, typing.Optional[float]) and value is not None:
        return float(value)
    return list(value) if kind in (typing.List[str], typing.List[int]) else value


def _set(cfg, section, name, value, where):
    fields = {f.name: f for f in dataclasses.fields(SECTIONS[section])}
    if name not in fields:
        raise CharlmError(f"{where}unknown key {section}.{name}; valid keys in {section}: {', '.join(fields)}")
    if value is None and fields[name].metadata.get("auto"):  # null: left to the recipe
        setattr(getattr(cfg, section), name, None)
        return
    setattr(getattr(cfg, section), name, _check_type(f"{where}{section}.{name}", fields[name], value))


def _key_lines(text):
    """1-based line of each `section` and `section.key` in a YAML mapping of mappings."""
    lines, root = {}, yaml.compose(text)
    if isinstance(root, yaml.MappingNode):
        for key, value in root.value:
            lines[key.value] = key.start_mark.line + 1
            if isinstance(value, yaml.MappingNode):
                lines.update({(key.value, k.value): k.start_mark.line + 1 for k, _ in value.value})
    return lines


def read_yaml(path, what):
    """(document, text) of a YAML file; unreadable, not UTF-8 or malformed, a one-line error (what: its kind)."""
    text = read_utf8(path, what)
    try:
        return yaml.safe_load(text), text
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise CharlmError(f"{path}:{where} malformed YAML: {getattr(e, 'problem', None) or e}") from None
    except RecursionError:  # PyYAML composes nodes recursively
        raise CharlmError(f"{path}: YAML nested too deeply to be a {what.strip() or 'settings file'}") from None


def apply_yaml(cfg, path):
    """Apply the settings of one YAML file to cfg; unknown keys and wrong types are errors."""
    doc, text = read_yaml(path, "config ")
    lines = _key_lines(text)
    if doc is None:
        return cfg
    if not isinstance(doc, dict):
        raise CharlmError(f"{path}: expected sections {', '.join(SECTIONS)}, got {type(doc).__name__}")
    for section, values in doc.items():
        where = f"{path}:{lines.get(section, '?')}: "
        if section not in SECTIONS:
            raise CharlmError(f"{where}unknown section {section!r}; valid sections: {', '.join(SECTIONS)}")
        if not isinstance(values, dict):
            raise CharlmError(f"{where}section {section} must be a mapping of keys to values")
        for name, value in values.items():
            _set(cfg, section, name, value, f"{path}:{lines.get((section, name), '?')}: ")
    return cfg


def set_arg(key, value):
    """`section.key=value` for --set, the value written as YAML (parse_set reads it back)."""
    return f"{key}={yaml.safe_dump(value, default_flow_style=True).strip().removesuffix('...').strip()}"


def parse_set(assignment):
    """`section.key=value` to ((section, key), value), the value parsed as YAML."""
    key, eq, text = assignment.partition("=")
    section, dot, name = key.strip().partition(".")
    if not (eq and dot and section and name):
        raise CharlmError(f"--set expects section.key=value, got {assignment!r}")
    if section not in SECTIONS:
        raise CharlmError(f"--set {assignment}: unknown section {section!r}; valid sections: {', '.join(SECTIONS)}")
    try:
        return (section, name), yaml.safe_load(text)
    except (yaml.YAMLError, RecursionError):
        raise CharlmError(f"--set {assignment}: the value is not valid YAML") from None


def resolve(files=(), flags=None, sets=(), check=True):
    """Defaults < each YAML file in order < flags {(section, name): value} < `--set section.key=value`s; checked
    unless check is false (for a caller that checks it once itself, as charlm.train does)."""
    cfg = Config()
    for path in files:
        apply_yaml(cfg, path)
    for (section, name), value in (flags or {}).items():
        _set(cfg, section, name, value, "")
    for assignment in sets:
        (section, name), value = parse_set(assignment)
        _set(cfg, section, name, value, "--set ")
    if check:
        validate(cfg)
    return cfg


def validate(cfg):
    """Raise a CharlmError for values no run can use."""
    for least, keys in ((1, "data.seq_len data.batch_size model.hidden_size model.num_layers train.epochs "
                            "train.sample_length data.min_freq"),
                        (0, "data.max_chars model.embed_size train.grad_clip train.sample_every "
                            "train.checkpoint_every data.max_vocab train.seed train.warmup train.patience "
                            "train.weight_decay")):
        for key in keys.split():
            section, name = key.split(".")
            value = getattr(getattr(cfg, section), name)
            if not value >= least:  # not < least: NaN is neither
                raise CharlmError(f"{key} must {'be at least 1' if least else 'not be negative'}, got {value}")
    if not 0 <= cfg.data.val_frac < 1:
        raise CharlmError(f"data.val_frac must be in [0, 1), got {cfg.data.val_frac}")
    for name in ("dropout", "weight_drop"):
        value = getattr(cfg.model, name)
        if not 0 <= value < 1:
            raise CharlmError(f"model.{name} must be in [0, 1), got {value}")
    if not MIN_LR <= cfg.train.lr < math.inf:
        raise CharlmError(f"train.lr must be a number of at least {MIN_LR:g} (smaller ones change no float32 "
                          f"weight), got {cfg.train.lr}")
    for name in ("lr_decay", "plateau_factor"):
        if not 0 < getattr(cfg.train, name) <= 1:
            raise CharlmError(f"train.{name} must be in (0, 1], got {getattr(cfg.train, name)}")
    _validate_controls(cfg)
    buckets = cfg.data.buckets
    if buckets and (min(buckets) < 1 or buckets != sorted(set(buckets))):
        raise CharlmError(f"data.buckets must be increasing positive lengths, got {buckets}")
    if 0 < cfg.data.max_vocab < 3:
        raise CharlmError(f"data.max_vocab must be 0 (no cap) or at least 3 (<unk>, <eos> and a word), "
                          f"got {cfg.data.max_vocab}")
    m = cfg.model
    if m.tie_weights and not {"model.cell", "model.embed_size", "model.hidden_size"} & set(unset(cfg)) and (
            m.cell in SCRATCH_CELLS or m.embed_size != m.hidden_size):
        raise CharlmError(f"model.tie_weights needs a Gluon cell (rnn, lstm, gru) with embed_size = hidden_size, "
                          f"got {m.cell} with embed_size {m.embed_size} and hidden_size {m.hidden_size}")


def _validate_controls(cfg):
    """The training controls' checks beyond a sign."""
    t = cfg.train
    if t.time_limit is not None:
        duration(t.time_limit)
    if not 0 <= t.ema < 1:
        raise CharlmError(f"train.ema must be in [0, 1) (0 = off), got {t.ema}")
    if t.ema and not (cfg.data.val_frac or cfg.data.valid_path):
        raise CharlmError("train.ema picks the average or the weights by validation loss: give --val-frac or "
                          "--valid-data")
    if not t.weight_decay < math.inf:
        raise CharlmError(f"train.weight_decay must be finite, got {t.weight_decay}")


def duration(text):
    """The seconds of a time limit: 90s, 30m, 2h, or a plain number of seconds."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([smh]?)\s*", text)
    if not match or not float(match[1]) > 0:
        raise CharlmError(f"train.time_limit must be a positive duration such as 90s, 30m, 2h or 600 (seconds), "
                          f"got {text!r}")
    return float(match[1]) * {"": 1, "s": 1, "m": 60, "h": 3600}[match[2]]


def unset(cfg):
    """The keys left to the recipe (none of the layers set them), as "section.name"."""
    return [f"{section}.{f.name}" for section, f in keys() if f.metadata.get("auto")
            and f.name not in getattr(cfg, section).given]


def flat(cfg):
    """The config as {"section.name": value}."""
    return {f"{s}.{k}": v for s, section in dataclasses.asdict(cfg).items() for k, v in section.items()}


def differing(rows, keys=None):
    """The keys (those given, or the first row's, in order) whose values differ between rows (dicts)."""
    keys = list(rows[0]) if keys is None else keys
    return [k for k in keys if len({repr(r.get(k)) for r in rows}) > 1]


def to_yaml(cfg):
    """The config as YAML text that apply_yaml reads back to the same config."""
    return yaml.safe_dump(dataclasses.asdict(cfg), sort_keys=False, allow_unicode=True)

