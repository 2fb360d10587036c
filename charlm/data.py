"""Text corpora as compact integer arrays: character vocabulary, train/validation split,
and the two batch iterators (random windows and sequential streams), all yielding (T, N)."""
import codecs
import json
from importlib import resources
from pathlib import Path

import numpy as np

from .errors import CharlmError

def corpus_path(path):
    """Resolve a data.path setting to a file; None (or empty) means the bundled Time Machine."""
    if not path:
        return Path(str(resources.files("charlm").joinpath("corpora", "timemachine.txt")))
    return Path(path).expanduser()


def read_text(path, lowercase=False, strip_newlines=False, max_chars=0, encoding="utf-8", errors="strict"):
    """Read a text file and apply the tutorial's normalisations, in its order."""
    path = corpus_path(path)
    if not path.exists():
        raise CharlmError(f"data file not found: {path}")
    if path.is_dir():
        raise CharlmError(f"data path is a directory, not a text file: {path}")
    try:
        codec = codecs.lookup(encoding).name
    except LookupError:
        raise CharlmError(f"unknown text encoding {encoding!r}") from None
    raw = path.read_bytes()
    # UTF-8 text never holds NUL; the first megabyte is enough to tell a binary file.
    if codec == "utf-8" and b"\x00" in raw[:1 << 20]:
        raise CharlmError(f"{path} looks like a binary file (it contains NUL bytes), not UTF-8 text")
    try:
        text = raw.decode(codec, errors)
    except UnicodeDecodeError as e:
        raise CharlmError(f"{path} is not valid {encoding}: byte 0x{raw[e.start]:02x} at offset {e.start}; "
                          f"give its --encoding, or --errors replace") from None
    text = text.replace("\r\n", "\n")
    if lowercase:
        text = text.lower()
    if strip_newlines:
        text = text.replace("\n", "")
    if max_chars:
        text = text[:max_chars]
    if not text:
        raise CharlmError(f"{path} holds no text")
    return text


def text_of(d, path=None):
    """The text a DataConfig describes, or all of another file read and normalised the same way."""
    return read_text(path or d.path, d.lowercase, d.strip_newlines, 0 if path else d.max_chars, d.encoding, d.errors)


def _codepoints(text):
    return np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)


class Vocab:
    """A sorted character vocabulary: ids are positions in the sorted list of distinct characters."""

    def __init__(self, chars):
        self.chars = list(chars)
        self.index = {c: i for i, c in enumerate(self.chars)}
        self._points = _codepoints("".join(self.chars))
        # The smallest unsigned type that holds every id keeps big corpora compact.
        self.dtype = np.uint8 if len(self.chars) <= 2**8 else np.uint16 if len(self.chars) <= 2**16 else np.uint32

    @classmethod
    def build(cls, text):
        """The vocabulary of every distinct character in text."""
        return cls(np.unique(_codepoints(text)).view("<U1") if text else [])

    def __len__(self):
        return len(self.chars)

    def unknown(self, text):
        """Characters of text that are not in the vocabulary, sorted."""
        return sorted(set(text) - set(self.index))

    def encode(self, text):
        """Text to an integer array of ids; a CharlmError names unknown characters."""
        points = _codepoints(text)
        ids = np.searchsorted(self._points, points)
        ok = ids < len(self._points)
        ok[ok] = self._points[ids[ok]] == points[ok]
        if not ok.all():
            missing = "".join(self.unknown(text))
            raise CharlmError(f"characters not in the vocabulary: {missing!r}")
        return ids.astype(self.dtype)

    def decode(self, ids):
        """Integer ids back to text."""
        return "".join(self.chars[int(i)] for i in ids)

    def to_json(self):
        """The vocabulary as a JSON string (a list of characters)."""
        return json.dumps({"chars": self.chars}, ensure_ascii=False)

    @classmethod
    def from_json(cls, text):
        """Inverse of to_json."""
        return cls(json.loads(text)["chars"])


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
    """A random start offset below seq_len that keeps the number of full batches at n // (N*T).

    Both iterators need N*T positions per batch out of the n that have a next character."""
    num_batches = n // (batch_size * seq_len)
    slack = n - num_batches * batch_size * seq_len
    return int(rng.integers(0, min(seq_len - 1, slack) + 1)), num_batches


class RandomBatches:
    """The tutorial's sampler: non-overlapping windows in shuffled order from a random offset.

    The hidden state is reset for every batch, since neighbouring rows are unrelated."""

    carries_state = False

    def __init__(self, ids, batch_size, seq_len, rng):
        check_trainable(len(ids), batch_size, seq_len)
        self.ids, self.seq_len = ids, seq_len
        offset, self.num_batches = _offset(len(ids) - 1, batch_size, seq_len, rng)
        starts = offset + seq_len * rng.permutation(self.num_batches * batch_size)
        self.starts = starts.reshape(self.num_batches, batch_size)

    def __len__(self):
        return self.num_batches

    def __iter__(self):
        steps = np.arange(self.seq_len)[:, None]
        for row in self.starts:
            pos = steps + row  # (T, N)
            yield self.ids[pos], self.ids[pos + 1]


class SequentialBatches:
    """The corpus cut into batch_size parallel streams read in consecutive seq_len windows.

    Row n of one batch continues row n of the previous batch, so the hidden state is carried."""

    carries_state = True

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

    def __iter__(self):
        for i in range(self.num_batches):
            t = slice(i * self.seq_len, (i + 1) * self.seq_len)
            yield self.x[t], self.y[t]


ITERATORS = {"random": RandomBatches, "sequential": SequentialBatches}


def eval_batches(ids, batch_size, seq_len):
    """Sequential streams over all of ids (the last window may be shorter), for evaluation."""
    if len(ids) < 2:
        raise CharlmError(f"text to evaluate has {len(ids)} characters; need at least 2")
    return SequentialBatches(ids, min(batch_size, len(ids) - 1), seq_len, offset=0, partial=True)
