"""Continuing a prefix: greedy (the tutorial's predict), or sampling with temperature, top-k and top-p; one
continuation or a batch of them, streamed, each ending before its first stop sequence. Also the generation
interface (`step`, `greedy`) every model offers, and the graphs behind it."""
import itertools

import numpy as np

from .engine import mx, nd
from .errors import CharlmError
from .text import normalise

GREEDY_STEPS = 32  # tokens per call of the greedy block, and per streamed piece


def greedy_steps(F, logits, cells, advance, steps):
    """`steps` greedy steps after logits (1, N, V) in one graph: ids (steps, N), the last logits (1, N, V), cells."""
    chosen, logits = [], F.squeeze(logits, axis=0)
    for _ in range(steps):
        chosen.append(F.argmax(logits, axis=-1))  # (N,)
        logits, cells = advance(chosen[-1], cells)
    return F.stack(*chosen, axis=0), logits.expand_dims(axis=0), cells


class Blocks:
    """Blocks made on first use, one per key, hybridized alike; not children (saved twice) nor a dict (Gluon warns)."""

    def __init__(self, make, **hybrid):
        self.make, self.hybrid, self.made = make, hybrid, {}

    def __getitem__(self, key):
        if key not in self.made:
            self.made[key] = self.make(key)
            self.made[key].hybridize(**self.hybrid)
        return self.made[key]

    def hybridize(self, active=True, **kwargs):
        """Hybridize (or not) the blocks made and to be made, as HybridBlock.hybridize does a block."""
        self.hybrid = {"active": active, **kwargs}
        for block in self.made.values():
            block.hybridize(**self.hybrid)


class Generation:
    """Generation through a model's `generation` Blocks: key 0 runs one step from ids, key k > 0 k greedy steps."""

    def step(self, ids, state):
        """One step from ids (1, N): logits (1, N, V) and the new state."""
        return self.generation[0](ids, state)

    def greedy(self, logits, state, steps):
        """`steps` greedy steps after logits (1, N, V): ids (steps, N), the last logits (1, N, V) and state."""
        return self.generation[steps](logits, state)


def encode_prefix(prefix, vocab, data_cfg):
    """Normalise and encode a prefix, after the line-start token in lines mode (where an empty prefix starts a
    new line); out-of-vocabulary characters, and an empty prefix in stream mode, are errors."""
    prefix = normalise(prefix, data_cfg)
    unknown = vocab.unknown(prefix)
    if unknown:
        raise CharlmError(f"prefix characters not in the model's vocabulary: {''.join(unknown)!r}")
    ids = vocab.encode(prefix)
    if data_cfg.mode == "lines":
        return np.concatenate([[vocab.bos], ids]).astype(ids.dtype)
    if not len(ids):
        raise CharlmError(f"the prefix is empty: give at least one {'word' if vocab.level == 'word' else 'character'}"
                          f" to continue")
    return ids


def check(length, temperature=None, top_k=None, top_p=None, stop=(), num_samples=1, vocab_size=None):
    """Check the generation settings; the stop sequences as a list (a str is one sequence)."""
    if length < 1:
        raise CharlmError(f"--length must be at least 1, got {length}")
    if temperature is not None and not temperature > 0:  # not <= 0: NaN is neither
        raise CharlmError(f"--temperature must be positive, got {temperature}")
    if top_k is not None and not 1 <= top_k <= vocab_size:
        raise CharlmError(f"--top-k must be between 1 and the vocabulary size {vocab_size}, got {top_k}")
    if top_p is not None and not 0 < top_p <= 1:
        raise CharlmError(f"--top-p must be in (0, 1], got {top_p}")
    if not isinstance(num_samples, int) or num_samples < 1:
        raise CharlmError(f"--num-samples must be at least 1, got {num_samples}")
    stops = [stop] if isinstance(stop, str) else list(stop)
    for s in stops:
        if not isinstance(s, str) or not s:
            raise CharlmError(f"--stop must be non-empty text, got {s!r}")
    return stops


def probabilities(logits, temperature=None, top_k=None, top_p=None):
    """The sampling distribution (N, V): tempered softmax over the top_k, then over the nucleus of mass top_p."""
    if top_k is not None:
        kth = nd.topk(logits, k=top_k, ret_typ="value")[:, -1:]  # (N, 1), the k-th largest
        logits = nd.where(nd.broadcast_greater_equal(logits, kth), logits, nd.zeros_like(logits) - 1e30)
    probs = nd.softmax(logits / (temperature or 1.0), axis=-1)
    return probs if top_p is None or top_p >= 1 else _nucleus(probs, top_p)


def _nucleus(probs, top_p):
    """probs (N, V) cut to each row's smallest set of likeliest tokens holding at least top_p, renormalised."""
    ranked = nd.sort(probs, axis=-1, is_ascend=False)
    # A token is in the smallest such set when the tokens likelier than it hold less than top_p.
    size = nd.sum((nd.cumsum(ranked, axis=1) - ranked) < top_p, axis=-1, keepdims=True)  # (N, 1)
    rank = nd.argsort(nd.argsort(-probs, axis=-1), axis=-1)  # (N, V): each token's place, 0 the likeliest
    kept = probs * nd.broadcast_lesser(rank, size)
    return nd.broadcast_div(kept, nd.sum(kept, axis=-1, keepdims=True))


def _start(model, prefix_ids, ctx, num_samples):
    """The logits (1, N, V) and state after the prefix, read once in one call and copied for each sample."""
    logits, state = model(nd.array(prefix_ids, ctx=ctx).reshape((-1, 1)), model.begin_state(1, ctx))
    logits = logits[-1:]
    if num_samples == 1:
        return logits, state
    return (nd.repeat(logits, num_samples, axis=1),
            [nd.repeat(s, num_samples, axis=model.state_batch_axis) for s in state])


def id_blocks(model, prefix_ids, length, ctx, sampling, num_samples):
    """The continuations' ids in blocks of up to GREEDY_STEPS, on the device, each queued when asked for."""
    logits, state = _start(model, prefix_ids, ctx, num_samples)
    for start in range(0, length, GREEDY_STEPS):
        n = min(GREEDY_STEPS, length - start)
        if sampling is None:
            ids, logits, state = model.greedy(logits, state, GREEDY_STEPS)  # the last block may run past length
        else:
            chosen = []  # kept on the device: no host sync per token
            for i in range(start, start + n):
                chosen.append(nd.sample_multinomial(probabilities(logits[-1], *sampling)).astype("float32"))
                if i + 1 < length:
                    logits, state = model.step(chosen[-1].reshape((1, -1)), state)
            ids = nd.stack(*chosen, axis=0)
        yield ids[:n]


class _Cut:
    """One continuation's text, decoded block by block and given out up to its first stop sequence: the last
    characters that could begin one are held back until the next block shows whether they do."""

    def __init__(self, vocab, prefix_ids, stop):
        self.vocab, self.stop = vocab, stop
        self.hold = max(map(len, stop), default=1) - 1
        self.last = [i for i in prefix_ids if i != vocab.bos][-1:]
        self.text, self.sent, self.stopped = "", 0, False

    def add(self, ids):
        """The text to give out after this block of ids."""
        if self.stopped:
            return ""
        # A word's spacing depends on the token before it (the last one with text: <bos> has none), so each
        # block is decoded after that token and the pieces join to the text of all ids decoded at once.
        self.text += self.vocab.decode(self.last + ids)[len(self.vocab.decode(self.last)):]
        self.last = [i for i in ids if i != self.vocab.bos][-1:] or self.last
        # No stop sequence starts before `sent`: one that did would lie in text already searched.
        found = [at for at in (self.text.find(s, self.sent) for s in self.stop) if at >= 0]
        self.stopped = bool(found)
        return self._give(min(found) if found else max(self.sent, len(self.text) - self.hold))

    def rest(self):
        """The text held back, once no block follows."""
        return "" if self.stopped else self._give(len(self.text))

    def _give(self, end):
        piece, self.sent = self.text[self.sent:end], end
        return piece


def stream(model, vocab, prefix_ids, length, ctx, temperature=None, top_k=None, seed=None, *, top_p=None, stop=(),
           num_samples=1):
    """Lists of num_samples pieces of text as they are made: the prefix, then each block of the `length`
    generated tokens, each continuation ending before its first stop sequence ("" from then on)."""
    if seed is not None:
        mx.random.seed(seed)
    sampling = None if temperature is None and top_k is None and top_p is None else (temperature, top_k, top_p)
    cuts = [_Cut(vocab, prefix_ids, stop) for _ in range(num_samples)]
    yield [vocab.decode(prefix_ids)] * num_samples
    # Each block is fetched once the next one is queued (pairwise pulls one ahead): the device need not wait.
    blocks = id_blocks(model, prefix_ids, length, ctx, sampling, num_samples)
    for block, _ in itertools.pairwise(itertools.chain(blocks, [None])):
        yield [cut.add(ids) for cut, ids in zip(cuts, block.asnumpy().astype(int).T.tolist())]
        if all(cut.stopped for cut in cuts):
            return  # no more blocks computed than the one queued
    rest = [cut.rest() for cut in cuts]
    if any(rest):
        yield rest


def complete(model, vocab, prefix_ids, length, ctx, temperature=None, top_k=None, seed=None, **options):
    """The prefix followed by `length` generated tokens (or fewer, up to a stop sequence), as text."""
    return "".join(pieces[0] for pieces in stream(model, vocab, prefix_ids, length, ctx, temperature, top_k, seed,
                                                  **options))


SAMPLE_PREFIX = {"char": 16, "word": 4}  # tokens of the validation text that epoch samples continue


def sample_prefixes(cfg, vocab, ids):
    """The configured prefixes, or else the first few tokens of ids (a new line in lines mode)."""
    if cfg.train.sample_prefixes:
        return cfg.train.sample_prefixes
    if cfg.data.mode == "lines":
        return [""]
    return [vocab.decode(ids[:SAMPLE_PREFIX[cfg.data.level]])]


def samples(model, vocab, cfg, ids, ctx):
    """Greedy continuations, as training prints them, of the sample prefixes that the vocabulary can encode."""
    texts = []
    for prefix in sample_prefixes(cfg, vocab, ids):
        try:
            encoded = encode_prefix(prefix, vocab, cfg.data)
        except CharlmError:
            continue  # the default prefixes are English; another corpus may lack their characters
        texts.append(complete(model, vocab, encoded, cfg.train.sample_length, ctx))
    return texts
