"""Continuing a prefix: greedy (the tutorial's predict), or sampling with temperature and top-k; streamed."""
import itertools

import numpy as np

from .engine import mx, nd
from .errors import CharlmError
from .text import normalise

GREEDY_STEPS = 32  # tokens per call of the greedy block, and per streamed piece


def encode_prefix(prefix, vocab, data_cfg):
    """Normalise and encode a prefix (after the line-start token in lines mode); empty or out-of-vocabulary
    prefixes are errors."""
    prefix = normalise(prefix, data_cfg)
    unknown = vocab.unknown(prefix)
    if unknown:
        raise CharlmError(f"prefix characters not in the model's vocabulary: {''.join(unknown)!r}")
    ids = vocab.encode(prefix)
    if not len(ids):
        raise CharlmError(f"the prefix is empty: give at least one {'word' if vocab.level == 'word' else 'character'}"
                          f" to continue")
    return np.concatenate([[vocab.bos], ids]).astype(ids.dtype) if data_cfg.mode == "lines" else ids


def _choose(logits, temperature, top_k):
    """Next ids (1,) drawn from logits (1, V) through the tempered, top-k-cut softmax."""
    if top_k is not None:
        kth = nd.topk(logits, k=top_k, ret_typ="value")[:, -1:]  # (1, 1), the k-th largest
        logits = nd.where(nd.broadcast_greater_equal(logits, kth), logits, nd.zeros_like(logits) - 1e30)
    probs = nd.softmax(logits / (temperature or 1.0), axis=-1)
    return nd.sample_multinomial(probs).astype("float32")


def _blocks(model, prefix_ids, length, ctx, temperature, top_k):
    """The continuation's ids in blocks of up to GREEDY_STEPS, left on the device, each one queued when asked for."""
    logits, state = model(nd.array(prefix_ids, ctx=ctx).reshape((-1, 1)), model.begin_state(1, ctx))  # in one call
    logits = logits[-1:]  # (1, 1, V)
    for start in range(0, length, GREEDY_STEPS):
        n = min(GREEDY_STEPS, length - start)
        if temperature is None and top_k is None:
            ids, logits, state = model.greedy(logits, state, GREEDY_STEPS)  # the last block may run past length
        else:
            chosen = []  # kept on the device: no host sync per character
            for i in range(start, start + n):
                chosen.append(_choose(logits[-1], temperature, top_k))
                if i + 1 < length:
                    logits, state = model.step(chosen[-1].reshape((1, 1)), state)
            ids = nd.concat(*chosen, dim=0)
        yield ids.reshape((-1,))[:n]


def stream(model, vocab, prefix_ids, length, ctx, temperature=None, top_k=None, seed=None):
    """The text of the prefix, then of each block of the `length` generated tokens, as they are made."""
    if seed is not None:
        mx.random.seed(seed)
    # Each block is fetched once the next one is queued (pairwise pulls one ahead): the device need not wait.
    queued = itertools.pairwise(itertools.chain(_blocks(model, prefix_ids, length, ctx, temperature, top_k), [None]))
    # A word's spacing depends on the token before it (the last one with text: <bos> has none), so each
    # block is decoded after that token and the pieces join to the text of all ids decoded at once.
    last = []
    for ids in itertools.chain([list(prefix_ids)], (block.asnumpy().astype(int).tolist() for block, _ in queued)):
        yield vocab.decode(last + ids)[len(vocab.decode(last)):]
        last = [i for i in ids if i != vocab.bos][-1:] or last


def complete(model, vocab, prefix_ids, length, ctx, temperature=None, top_k=None, seed=None):
    """The prefix followed by `length` generated tokens, as text."""
    return "".join(stream(model, vocab, prefix_ids, length, ctx, temperature, top_k, seed))
