"""The automatic recipe: the model and training settings no layer of the config set, chosen from the text's size
and the time budget by rules measured on two cores (docs/recipes.md); the settings a user gives are kept."""
import copy
import math

import numpy as np

from . import configs, data
from .text import check_file, corpus_path, normalised_chunks

# What a run gets for the settings it leaves unset where the recipe does not choose (lines mode):
# their defaults in charlm/configs.py.
FIXED = {f"{section}.{f.name}": f.default for section, f in configs.keys() if f.metadata.get("auto")}
BUDGET_CHARS, BUDGET = 180_000, 300.0  # a text this long gets this default budget; the budget grows as its root
MIN_BUDGET, MAX_BUDGET = 60.0, 4 * 3600.0
# Tokens per second of a 2-layer LSTM (embedding 64, batches of 32 x 64, 80-character vocabulary), by hidden size,
# training on two cores (`python scripts/recipes.py speed`).
SPEED = {128: 96.3e3, 256: 34.5e3, 384: 17.0e3, 512: 10.2e3, 768: 4.9e3, 1024: 2.7e3}
# The largest model that trains on at least TOKENS_PER_PARAM characters per weight in the budget and has at
# most MAX_PARAMS weights per character of the text.
TOKENS_PER_PARAM = 2.5
MAX_PARAMS = 8.0
BATCHES = 300  # a short text gets batches small enough for this many per pass: more, noisier updates
REFERENCE = 256  # the hidden size whose speed on this machine is measured, unless one is given
TIMED = {"model.hidden_size", "model.dropout", "model.weight_drop", "train.weight_decay", "train.warmup",
         "train.ema", "train.lr_schedule"}  # by the speed
# Exposure: the passes over the text times the weights per training token, how much a model can learn the text
# by heart. Dropout 0.4 at EXPOSURE, 0.1 more for each doubling; weight decay from DECAY, weight drop from BY_HEART.
EXPOSURE, DECAY, BY_HEART = 42, 32, 64
AVERAGE = 0.99999  # the average's decay at most: a float32 average keeps smaller steps only roughly
# Under the average, a constant learning rate below ANNEAL passes (the weights keep learning to the budget's end,
# where a cosine would have slowed them), a cosine from there (a text read this often needs its rate annealed).
ANNEAL = 50
WORD_VOCAB = 10_000  # a word-level text's vocabulary at most, as Penn Treebank's: words past it are rare


def _set(cfg, key, value):
    section, name = key.split(".")
    setattr(getattr(cfg, section), name, value)


def set_fixed(cfg, key):
    """Set one of cfg's recipe settings to its fixed value: the recipe then leaves it."""
    _set(cfg, key, FIXED[key])


def fixed(cfg):
    """Set cfg's unset settings to FIXED, the values that need no text; return cfg."""
    for key in configs.unset(cfg):
        set_fixed(cfg, key)
    return cfg


def text_size(d):
    """(characters, training characters, distinct characters) of the text a DataConfig describes, read once."""
    chars, seen = 0, set()
    for chunk in normalised_chunks(check_file(corpus_path(d.path)), d, d.max_chars):
        chars += len(chunk)
        seen.update(chunk)
    return chars, chars if d.valid_path else int(chars * (1 - d.val_frac)), len(seen)


def size_of(d, ids):
    """text_size's (characters, training characters, distinct characters) of a character stream read as ids."""
    chars = len(ids)
    return chars, chars if d.valid_path else int(chars * (1 - d.val_frac)), int(np.count_nonzero(np.bincount(ids)))


def default_budget(chars):
    """The time budget of a text of `chars` characters when none is given: 5 minutes for the Time Machine,
    growing as the square root of the length, in whole half-minutes."""
    seconds = BUDGET * math.sqrt(chars / BUDGET_CHARS)
    return min(max(round(seconds / 30) * 30, MIN_BUDGET), MAX_BUDGET)


def parameters(hidden, layers, vocab, embed=64, tied=False):
    """Weights of an LSTM language model: embedding (none of its own when tied to the output layer), layers (two
    bias vectors each, as MXNet's) and output."""
    lstm = 4 * hidden * (embed + hidden + 2) + (layers - 1) * 4 * hidden * (2 * hidden + 2)
    return (0 if tied else vocab * embed) + lstm + (hidden + 1) * vocab


def word_vocab(ids, seen=2, specials=2):
    """The vocabulary the recipe gives a word-level text read as ids (specials first, then words by falling
    frequency): the specials and the words seen at least `seen` times, at most WORD_VOCAB tokens; 0 (no cap)
    when no word is."""
    counts = np.bincount(ids)
    size = min(WORD_VOCAB, len(counts), specials + int(np.count_nonzero(counts[specials:] >= seen)))
    return size if size > specials else 0


def speed(hidden, vocab, layers=2, embed=64, scale=1.0, tied=False):
    """Training tokens per second of an LSTM: SPEED's nearest size, scaled by the weights (work) per token and
    by this machine's speed relative to SPEED's (scale)."""
    near = min(SPEED, key=lambda h: abs(h - hidden))
    return scale * SPEED[near] * parameters(near, 2, 80) / parameters(hidden, layers, vocab, embed, tied)


def _batches(tokens, devices):
    """(seq_len, batch_size): 64 x 32, halved in turn (to 16 x 8 at least) until a pass is BATCHES batches; the
    batch a multiple of the devices."""
    seq_len, batch = 64, 32
    while BATCHES * batch * seq_len > tokens and (batch > 8 or seq_len > 16):
        if batch > 8 and (2 * batch >= seq_len or seq_len == 16):
            batch //= 2
        else:
            seq_len //= 2
    return seq_len, max(devices, batch - batch % devices)


def choose(tokens, vocab, seconds, given=None, validated=True, devices=1, scale=None, level="char",
           optimizer="adam", chars=None):
    """({key: value}, why) of the recipe for a text of `tokens` training tokens (characters or words; `chars`
    training characters, when words), a budget in seconds, the settings already given and this machine's
    measured speed relative to SPEED's (scale; None: SPEED's)."""
    measured, scale = scale is not None, scale or 1.0
    given, chars = given or {}, chars or tokens
    # a word model's embedding, when tied, is its output layer: counted once; a character model's is small
    tie = level == "word" and given.get("model.tie_weights", True)
    layers = given.get("model.num_layers", 2)
    weights = {h: parameters(h, 2, vocab, h, tie) if level == "word" else parameters(h, 2, vocab) for h in SPEED}
    # the size rules count characters read and characters of text, words or not: a word holds several
    fits = [h for h in SPEED if speed(h, vocab, 2, h if level == "word" else 64, scale, tie) * seconds * chars / tokens
            >= TOKENS_PER_PARAM * weights[h] and weights[h] <= MAX_PARAMS * chars]
    hidden = given.get("model.hidden_size", max(fits, default=min(SPEED)))
    embed = given.get("model.embed_size", hidden)  # tied to the output layer, so as wide as the hidden one
    tied = tie and embed == hidden
    rate = speed(hidden, vocab, layers, embed, scale, tied)
    passes = rate * seconds / tokens
    passes = min(passes, given.get("train.epochs", passes))
    per_token = parameters(hidden, layers, vocab, embed, tied) / tokens
    exposure = passes * per_token
    seq_len, batch = _batches(tokens, devices)
    updates = passes * tokens / (given.get("data.batch_size", batch) * given.get("data.seq_len", seq_len))
    # an average over about the last third of the updates: a longer one keeps too much of the first weights, a
    # shorter one holds only weights that learn the text by heart; none without validation text
    ema = round(min(AVERAGE, 1 - 3 / updates), 6) if validated and updates >= 500 else 0.0
    settings = {
        "data.seq_len": seq_len, "data.batch_size": batch, "model.cell": "lstm", "model.embed_size": embed,
        "model.hidden_size": hidden, "model.num_layers": 2,
        "model.dropout": round(min(0.5, max(0.1, 0.4 + 0.1 * math.log2(max(exposure, 1e-9) / EXPOSURE))), 2),
        "model.variational_dropout": True,
        "model.tie_weights": embed == hidden and given.get("model.cell", "lstm") not in configs.SCRATCH_CELLS,
        "model.weight_drop": 0.2 if exposure >= BY_HEART else 0.0,
        "train.lr": 2e-3 if hidden >= 512 else 3e-3,
        "train.lr_schedule": "constant" if given.get("train.ema", ema) and passes < ANNEAL else "cosine",
        "train.warmup": int(min(100, updates // 20)), "train.epochs": 10_000, "train.patience": 10,
        "train.weight_decay": 0.1 if exposure >= DECAY and optimizer == "adam" else 0.0,  # AdamW's, not SGD's L2
        "train.ema": ema,
        "data.max_vocab": 0}  # fill caps a word-level vocabulary
    unit = "word" if level == "word" else "character"
    why = (f"{tokens / 1e3:,.0f}k training {unit}s, about {passes:,.0f} passes in the budget at "
           f"{rate / 1e3:.1f}k tokens/s ({'measured here' if measured else 'by the speed table'}; "
           f"{per_token:.1f} weights per {unit}, exposure {exposure:,.0f})")
    return settings, why


def fill(cfg, devices=1, measure=None, corpus=None):
    """Fill cfg's unset settings (the recipe's, or FIXED's in lines mode); what and why. measure(cfg, vocab_size)
    gives the tokens/s of a whole config on this machine; without it, the machine is taken to be as fast as
    SPEED's. corpus: the text as read, (vocab, ids), when it is (else it is read or counted from its file)."""
    unset = configs.unset(cfg)
    if not unset:
        return None
    t, d = cfg.train, cfg.data
    if d.mode != "stream":
        fixed(cfg)
        configs.validate(cfg)
        tokens = "words" if d.level == "word" else "characters"
        return f"fixed settings for {tokens} in lines mode (the recipe is for streams)"
    seen, cap = d.min_freq if "min_freq" in d.given else 2, 0
    if d.level == "word":
        read, ids = corpus or data.corpus_of(d)
        cap = word_vocab(ids, seen) if "data.max_vocab" in unset else 0
        vocab = cap or len(read)
        tokens = len(ids) if d.valid_path else int(len(ids) * (1 - d.val_frac))
        chars, train_chars, _ = text_size(d)  # its characters, a second pass over it
    else:
        chars, tokens, vocab = text_size(d) if corpus is None else size_of(d, corpus[1])
        train_chars = tokens
    tokens = max(tokens, 1)  # an empty text: the reader's error comes later, when training starts
    if t.time_limit is None and "train.epochs" in unset:
        t.time_limit = _duration_text(default_budget(chars))
        budget = f"{t.time_limit}, the default budget for {chars / 1e3:,.0f}k characters"
    else:
        budget = t.time_limit or f"{t.epochs} epochs"
    # given epochs and no limit: sized for the default budget
    seconds = configs.duration(t.time_limit) if t.time_limit else default_budget(chars)
    given = {key: getattr(getattr(cfg, key.split(".")[0]), key.split(".")[1]) for key in FIXED if key not in unset}
    validated, scale = bool(d.val_frac or d.valid_path), None
    if measure and TIMED & set(unset) and vocab:  # an empty text: nothing to measure with
        chosen = choose(tokens, vocab, seconds, {"model.hidden_size": REFERENCE, **given}, validated, devices,
                        level=d.level, optimizer=t.optimizer, chars=train_chars)[0]
        scale = _scale(cfg, {key: chosen[key] for key in unset}, vocab, measure)
    settings, why = choose(tokens, vocab, seconds, given, validated, devices, scale, d.level, t.optimizer,
                           max(train_chars, 1))
    for key in unset:
        _set(cfg, key, settings[key])
    if cap:
        d.max_vocab = cap
    configs.validate(cfg)
    m = cfg.model
    kept = {1: "every word", 2: "the words seen at least twice"}.get(seen, f"the words seen at least {seen} times")
    words = f", a vocabulary of {cap:,} ({kept}, at most {WORD_VOCAB:,})" if cap else ""
    regularised = (f", weight drop {m.weight_drop:g}" if m.weight_drop else "") + (
        f", weight decay {t.weight_decay:g}" if t.weight_decay else "")
    return (f"recipe: {m.cell} {m.num_layers} x {m.hidden_size}, dropout {m.dropout:g}{regularised}, "
            f"{d.batch_size} x {d.seq_len} batches, lr {t.lr:g} {t.lr_schedule} over {budget}{words} | {why}"
            + (f" | set by you: {', '.join(sorted(given))}" if given else ""))


def _scale(cfg, settings, vocab, measure):
    """This machine's speed relative to SPEED's: measured on cfg with these settings filled in."""
    probe = copy.deepcopy(cfg)
    for key, value in settings.items():
        _set(probe, key, value)
    m = probe.model
    tied = probe.data.level == "word" and m.tie_weights
    return measure(probe, vocab) / speed(m.hidden_size, vocab, m.num_layers, m.embed_size, tied=tied)


def _duration_text(seconds):
    """90 -> "90s", 300 -> "5m", 5400 -> "90m"."""
    return f"{seconds / 60:g}m" if seconds % 60 == 0 else f"{seconds:g}s"
