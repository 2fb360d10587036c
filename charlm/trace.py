"""A model's numbers on a text, read as one stream from a zero state: each token's log-probability, the top-k
guesses before it and every unit's activations, computed in NumPy from the weights in one layout for all cells
(the web page runs the same arithmetic in JavaScript)."""
import dataclasses
import math
import re

import numpy as np

from .errors import CharlmError

# What each cell shows per layer: the hidden state, and for an LSTM tanh of its cell state and its gates.
KINDS = {"rnn": ("h",), "lstm": ("h", "c", "i", "f", "o"), "gru": ("h", "r", "z")}
MAX_TOKENS = 1000  # a report's default cap: the page holds every unit's activation at every token


def weights(model):
    """A built model's weights as float32 arrays: {"cell", "embedding" (V, E) or None, "layers": [{"wx" (in, G*H),
    "bx", "wh" (H, G*H), "bh"}], "wy" (H, V), "by" (V,)}, gates in MXNet's order (i f g o; r z n)."""
    from .model import RNNLM

    def np32(a):
        return a.asnumpy().astype(np.float32)

    if isinstance(model, RNNLM):
        from .engine import nd

        w = {k: np32(v) for k, v in model.rnn.unpack(nd, model.rnn.parameters.data()).items()}
        layers = [{"wx": w[f"l{n}_i2h_weight"].T, "bx": w[f"l{n}_i2h_bias"], "wh": w[f"l{n}_h2h_weight"].T,
                   "bh": w[f"l{n}_h2h_bias"]} for n in range(model.rnn.num_layers)]
        return {"cell": model.cell, "embedding": np32(model.embedding.weight.data()) if model.embedding else None,
                "layers": layers, "wy": np32(model.decoder.weight.data()).T, "by": np32(model.decoder.bias.data())}
    p = {name.removeprefix(model.prefix): np32(v.data()) for name, v in model.collect_params().items()}
    cell, H = model.cell.removeprefix("scratch-"), model.hidden_size
    bh = np.zeros_like(p["b_h"])
    if cell == "gru":
        bh[2 * H:] = p["b_hn"]  # the reset gate scales H·Whn + bhn, as the fused GRU does
    layer = {"wx": p["W_xh"], "bx": p["b_h"], "wh": p["W_hh"], "bh": bh}
    return {"cell": cell, "embedding": None, "layers": [layer], "wy": p["W_hq"], "by": p["b_q"]}


def _sigmoid(x):
    return 0.5 + 0.5 * np.tanh(0.5 * x)  # the logistic function, without exp's overflow at large -x


def _layer(cell, layer, x):
    """One layer over the whole text: x (T, G*H), its input projection, -> h (T, H) and {kind: (T, H)}."""
    H = layer["wh"].shape[0]
    h, c = np.zeros(H, np.float32), np.zeros(H, np.float32)
    shown = {kind: np.empty((len(x), H), np.float32) for kind in KINDS[cell]}
    for t, z in enumerate(x):
        hz = h @ layer["wh"] + layer["bh"]
        if cell == "rnn":
            h = np.tanh(z + hz)
        elif cell == "lstm":
            a = z + hz
            i, f, o = _sigmoid(a[:H]), _sigmoid(a[H:2 * H]), _sigmoid(a[3 * H:])
            c = f * c + i * np.tanh(a[2 * H:3 * H])
            h = o * np.tanh(c)
            shown["c"][t], shown["i"][t], shown["f"][t], shown["o"][t] = np.tanh(c), i, f, o
        else:
            r, u = _sigmoid(z[:H] + hz[:H]), _sigmoid(z[H:2 * H] + hz[H:2 * H])
            h = (1 - u) * np.tanh(z[2 * H:] + r * hz[2 * H:]) + u * h
            shown["r"][t], shown["z"][t] = r, u
        shown["h"][t] = h
    return shown["h"], shown


def forward(w, ids):
    """Logits (T, V) after each of ids (T,) read from a zero state, and {"l0.h": (T, H), ...} the activations."""
    ids = np.asarray(ids, dtype=np.int64)
    acts, h = {}, None
    for n, layer in enumerate(w["layers"]):
        if n:
            x = h @ layer["wx"] + layer["bx"]
        else:  # one-hot input: the projection is a row of wx; an embedding's is that row times wx
            x = (layer["wx"][ids] if w["embedding"] is None else w["embedding"][ids] @ layer["wx"]) + layer["bx"]
        h, shown = _layer(w["cell"], layer, x)
        acts.update({f"l{n}.{kind}": a for kind, a in shown.items()})
    return h @ w["wy"] + w["by"], acts


def log_softmax(logits):
    """log_softmax over the last axis, in float64."""
    z = logits.astype(np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


@dataclasses.dataclass
class Trace:
    """A model's numbers on a text of T tokens; position 0 has no prediction (NaN and -1)."""
    tokens: list  # each token's text as the page shows it
    ids: np.ndarray  # (T,)
    logprob: np.ndarray  # (T,) natural log-probability of each token given the tokens before it
    top_ids: np.ndarray  # (T, k) the k likeliest tokens at each position, before it is read, likeliest first
    top_logprob: np.ndarray  # (T, k)
    activations: dict  # {"l0.h": (T, H) float32, ...}: each unit after reading each token
    capped: int = 0  # tokens of the text left out after max_tokens
    skipped: str = ""  # characters outside the vocabulary that were dropped

    @property
    def count(self):
        """Tokens scored: all but the first."""
        return len(self.ids) - 1

    @property
    def surprisal(self):
        """(T,) bits of each token, NaN for the first."""
        return -self.logprob / math.log(2)

    @property
    def mean_bits(self):
        """Mean bits per scored token."""
        return float(np.mean(self.surprisal[1:]))

    @property
    def perplexity(self):
        """exp of the mean NLL per scored token."""
        return float(np.exp(-np.mean(self.logprob[1:])))

    def units(self):
        """[(layer, kind, H)] of the activations, in order."""
        return [(int(name[1:].split(".")[0]), name.split(".")[1], a.shape[1]) for name, a in self.activations.items()]


def tokens_of(vocab, ids):
    """Each token's text as it reads in the decoded text (a word with the space before it)."""
    # A word's spacing depends on the token before it with text (<bos> has none), as generate's pieces do.
    out, last = [], []
    for i in ids:
        out.append(vocab.decode(last + [i])[len(vocab.decode(last)):])
        last = [i] if i != vocab.bos else last
    return out


def encode(text, vocab, data_cfg, skip_unknown=False):
    """(ids, skipped characters) of text normalised as the run's training text; unknown characters are an error
    naming them, or with skip_unknown dropped."""
    from .text import normalise

    text = normalise(text.replace("\r\n", "\n"), data_cfg)
    unknown = "".join(vocab.unknown(text))
    if unknown and not skip_unknown:
        raise CharlmError(f"characters not in the model's vocabulary: {unknown!r} (--skip-unknown drops them)")
    if unknown:
        text = "".join(ch for ch in text if ch not in set(unknown))
    ids = vocab.encode(text).astype(np.int64)
    if data_cfg.mode == "lines" and vocab.bos is not None:
        ids = np.concatenate([[vocab.bos], ids])
    return ids, unknown


def trace(w, vocab, ids, top_k=5, max_tokens=None):
    """The Trace of ids (already encoded) under weights w, its first max_tokens tokens."""
    if len(ids) < 2:
        raise CharlmError(f"the text has {len(ids)} token{'s' * (len(ids) != 1)}: give at least two to score")
    capped = max(0, len(ids) - max_tokens) if max_tokens else 0
    ids = np.asarray(ids[:len(ids) - capped], dtype=np.int64)
    logits, acts = forward(w, ids)
    lp = log_softmax(logits[:-1])  # (T-1, V): the predictions for positions 1..T-1
    k = min(top_k, lp.shape[1])
    top = np.argsort(-lp, axis=1, kind="stable")[:, :k]
    top_ids = np.vstack([np.full((1, k), -1), top])
    top_lp = np.vstack([np.full((1, k), np.nan), np.take_along_axis(lp, top, axis=1)])
    logprob = np.concatenate([[np.nan], lp[np.arange(len(ids) - 1), ids[1:]]])
    return Trace(tokens_of(vocab, ids), ids, logprob, top_ids, top_lp, acts, capped)


def compile_pattern(pattern, literal=False):
    """The regular expression of a unit search's pattern: the pattern itself, or its characters taken literally
    when literal or when it is not a regular expression (as `(` is); the page's view.js applies the same rule."""
    if not literal:
        try:
            return re.compile(pattern)
        except re.error:
            pass
    return re.compile(re.escape(pattern))


def inside(tokens, pattern, literal=False):
    """(T,) 1.0 where a token's text lies in a match of pattern (compile_pattern's rule) in the joined text."""
    regex = compile_pattern(pattern, literal)
    text = "".join(tokens)
    marked = np.zeros(len(text) + 1, dtype=bool)
    for m in regex.finditer(text):
        marked[m.start():m.end()] = True
    starts = np.cumsum([0] + [len(t) for t in tokens])
    return np.array([marked[a:b].any() for a, b in zip(starts[:-1], starts[1:])], dtype=np.float64)


def correlations(activations, target):
    """{name: (H,) Pearson correlation of each unit with target (T,)}; a constant unit scores 0."""
    t = target - target.mean()
    out = {}
    for name, a in activations.items():
        a = a.astype(np.float64) - a.mean(axis=0)
        denom = np.sqrt((a * a).sum(axis=0) * (t * t).sum())
        out[name] = np.where(denom > 0, (a * t[:, None]).sum(axis=0) / np.where(denom > 0, denom, 1), 0.0)
    return out


def find_units(tr, pattern, top=10, literal=False):
    """The `top` units whose activation follows "inside a match of pattern" best: [(name, unit, correlation)],
    ranked by |correlation|. pattern is a regular expression, or plain characters if literal or if it does not
    compile as one."""
    target = inside(tr.tokens, pattern, literal)
    if target.min() == target.max():
        raise CharlmError(f"pattern {pattern!r} matches {'every' if target[0] else 'no'} token of the text: "
                          f"nothing to correlate")
    scores = [(name, unit, float(r)) for name, rs in correlations(tr.activations, target).items()
              for unit, r in enumerate(rs)]
    return sorted(scores, key=lambda s: -abs(s[2]))[:top]
