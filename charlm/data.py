"""Corpora as compact integer arrays of characters or words, the train/validation split, and the two stream
batch iterators (random windows and sequential streams), all yielding (T, N)."""
import numpy as np

from . import lines
from .errors import CharlmError
from .text import CHUNK, check_file, corpus_path, normalised_chunks, read_text  # noqa: F401 (offered as data.read_text)
from .vocab import BOS, EOS, Vocab, WordVocab, build_vocab, codepoints, id_dtype

UNICODE = 0x110000  # code points


def corpus_of(d, path=None, vocab=None):
    """(vocab, ids) of the text a DataConfig describes, or of all of another file; lines mode adds BOS and EOS."""
    lines, max_chars = d.mode == "lines", 0 if path else d.max_chars
    path = check_file(corpus_path(path or d.path))
    try:
        if d.level == "word":
            return load_words(d, path, max_chars, vocab, bos=lines)
        return load_corpus(d, path, max_chars, vocab, BOS + EOS if lines else "")
    except MemoryError:
        raise CharlmError(f"{path} is too large to read into this machine's memory: give --max-chars N to train "
                          f"on its first N characters") from None


def load_corpus(d, path, max_chars, vocab=None, extra=""):
    """Read a text file once into (vocab, ids): the text's own vocabulary plus extra's, or the one given."""
    # Ids are assigned by first appearance, then renumbered in sorted order at the end: one pass.
    lut = np.full(UNICODE, -1, dtype=np.int64)
    seen = list(vocab.points) if vocab is not None else list(dict.fromkeys(codepoints(extra)))
    lut[seen] = np.arange(len(seen))
    # A character per byte at most, except where lowercasing expands one (İ -> i̇ in one-byte codepages).
    ids, n, unknown = np.empty(path.stat().st_size, dtype=np.uint8 if vocab is None else vocab.dtype), 0, set()
    for text in normalised_chunks(path, d, max_chars):
        points = codepoints(text)
        chunk = lut[points]
        new = np.unique(points[chunk < 0])
        if len(new) and vocab is not None:
            unknown.update(new.view("<U1"))
            continue
        if len(new):
            lut[new], seen = np.arange(len(seen), len(seen) + len(new)), seen + list(new)
            chunk = lut[points]
        if len(seen) > np.iinfo(ids.dtype).max + 1:
            ids = ids.astype(id_dtype(len(seen)))
        if n + len(chunk) > len(ids):
            ids = np.concatenate([ids, np.empty(max(len(chunk), len(ids) // 8), dtype=ids.dtype)])
        ids[n:n + len(chunk)] = chunk
        n += len(chunk)
    if unknown:
        raise CharlmError(f"characters not in the vocabulary: {''.join(sorted(unknown))!r}")
    if n == 0:
        raise CharlmError(f"{path} holds no text")
    if vocab is not None:
        return vocab, ids[:n]
    seen = np.array(seen, dtype=np.uint32)
    rank = np.empty(len(seen), dtype=np.int64)
    rank[np.argsort(seen)] = np.arange(len(seen))
    ids = ids[:n]
    for start in range(0, n, CHUNK):  # renumber in place, a slice at a time
        ids[start:start + CHUNK] = rank[ids[start:start + CHUNK]]
    return Vocab(np.sort(seen).view("<U1")), ids


def _lines(d, path, max_chars):
    """The normalised text of path in pieces that end at line ends (the last piece may not)."""
    held = ""
    for text in normalised_chunks(path, d, max_chars):
        text = held + text
        cut = text.rfind("\n") + 1
        held = text[cut:]
        if cut:
            yield text[:cut]
    if held:
        yield held


def load_words(d, path, max_chars, vocab=None, bos=False):
    """(vocab, ids) of a word-level text; the vocabulary is built from it (within d.max_chars) unless given."""
    vocab = vocab or build_vocab(_lines(d, path, d.max_chars), d.min_freq, d.max_vocab, bos)
    pieces = [vocab.encode(piece) for piece in _lines(d, path, max_chars)]
    ids = np.concatenate(pieces) if pieces else np.empty(0, dtype=vocab.dtype)
    if not len(ids):
        raise CharlmError(f"{path} holds no words")
    return vocab, ids


def capped(vocab, ids, max_vocab):
    """(vocab, ids) of a word-level text with the vocabulary cut to its first max_vocab tokens (0: as it is): the
    specials and the most frequent words; the words past them read as <unk>."""
    if not max_vocab or len(vocab) <= max_vocab:
        return vocab, ids
    return WordVocab(vocab.tokens[:max_vocab]), np.where(ids < max_vocab, ids, vocab.unk).astype(ids.dtype)


def split(ids, val_frac):
    """Split ids into a training head and a contiguous validation tail of val_frac of the corpus."""
    n_val = int(len(ids) * val_frac)
    return ids[: len(ids) - n_val], ids[len(ids) - n_val:]


def check_trainable(n_chars, batch_size, seq_len):
    """Raise a CharlmError when n_chars cannot fill one (seq_len, batch_size) batch."""
    need = batch_size * seq_len + 1
    if n_chars < need:
        raise CharlmError(
            f"training text has {n_chars} characters; batch_size {batch_size} x seq_len {seq_len} "
            f"needs at least {need}: use a longer file or smaller --batch-size/--seq-len")


def _offset(n, batch_size, seq_len, rng):
    """A random offset below seq_len that keeps all n // (N*T) full batches of n positions, and that count."""
    num_batches = n // (batch_size * seq_len)
    slack = n - num_batches * batch_size * seq_len
    return int(rng.integers(0, min(seq_len - 1, slack) + 1)), num_batches


class RandomBatches:
    """The tutorial's sampler: non-overlapping windows in shuffled order (unrelated rows: no state carried)."""

    carries_state, padded = False, False

    def __init__(self, ids, batch_size, seq_len, rng):
        check_trainable(len(ids), batch_size, seq_len)
        self.ids, self.seq_len = ids, seq_len
        offset, self.num_batches = _offset(len(ids) - 1, batch_size, seq_len, rng)
        starts = offset + seq_len * rng.permutation(self.num_batches * batch_size)
        self.starts = starts.reshape(self.num_batches, batch_size)

    def __len__(self):
        return self.num_batches

    def __getitem__(self, i):
        """Batch i as (X, Y), each (T, N)."""
        if not 0 <= i < self.num_batches:
            raise IndexError(i)
        pos = np.arange(self.seq_len)[:, None] + self.starts[i]
        return self.ids[pos], self.ids[pos + 1]


class SequentialBatches:
    """The corpus as batch_size parallel streams in consecutive seq_len windows, so the state is carried."""

    carries_state, padded = True, False

    def __init__(self, ids, batch_size, seq_len, rng=None, offset=None, partial=False):
        n = len(ids) - 1
        if offset is None:
            check_trainable(len(ids), batch_size, seq_len)
            offset, _ = _offset(n, batch_size, seq_len, rng)
        length = (n - offset) // batch_size
        streams = ids[offset: offset + batch_size * length + 1]
        self.x = streams[:-1].reshape(batch_size, length).T  # (L, N)
        self.y = streams[1:].reshape(batch_size, length).T
        self.seq_len = seq_len
        self.num_batches = -(-length // seq_len) if partial else length // seq_len

    def __len__(self):
        return self.num_batches

    def __getitem__(self, i):
        """Batch i as (X, Y), each (T, N); the last may be shorter when partial."""
        if not 0 <= i < self.num_batches:
            raise IndexError(i)
        t = slice(i * self.seq_len, (i + 1) * self.seq_len)
        return self.x[t], self.y[t]


ITERATORS = {"random": RandomBatches, "sequential": SequentialBatches}


def eval_batches(ids, batch_size, seq_len):
    """Sequential streams over all of ids (the last window may be shorter), for evaluation."""
    if len(ids) < 2:
        raise CharlmError(f"text to evaluate has {len(ids)} characters; need at least 2")
    return SequentialBatches(ids, min(batch_size, len(ids) - 1), seq_len, offset=0, partial=True)


def split_corpus(cfg, vocab, ids):
    """(training, validation) ids: the last val_frac of the text, at a line end in lines mode."""
    if cfg.data.mode == "lines":
        return lines.split(ids, cfg.data.val_frac, vocab.eos)
    return split(ids, cfg.data.val_frac)


def batches(cfg, vocab, ids, rng=None):
    """The batches of ids as cfg.data says: an epoch's order drawn from rng, or evaluation's fixed order."""
    d = cfg.data
    if d.mode == "lines":
        return lines.LineBatches(ids, vocab.bos, vocab.eos, d.batch_size, d.buckets, rng)
    if rng is None:
        return eval_batches(ids, d.batch_size, d.seq_len)
    return ITERATORS[d.iterator](ids, d.batch_size, d.seq_len, rng)
