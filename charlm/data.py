"""Text corpora as compact integer arrays: character vocabulary, train/validation split,
and the two batch iterators (random windows and sequential streams), all yielding (T, N)."""
import codecs
import json
import re
from importlib import resources
from pathlib import Path

import numpy as np

from .errors import CharlmError

BOS, EOS = "\x02", "\n"  # in lines mode: ASCII start-of-text opens a line, the line break ends it
_NON_LETTERS = re.compile("[^A-Za-z]+")
CHUNK = 1 << 22  # bytes read per step: bounds the temporaries, whatever the size of the corpus
UNICODE = 0x110000  # code points
# train takes --encoding and --errors; eval has neither and reads text as its run was trained
DECODE_HINT = "give its --encoding, or --errors replace (eval reads it with the run's data.encoding and data.errors)"


def corpus_path(path):
    """Resolve a data.path setting to a file; None (or empty) means the bundled Time Machine."""
    if not path:
        return Path(str(resources.files("charlm").joinpath("corpora", "timemachine.txt")))
    return Path(path).expanduser()


def normalised_chunks(path, lowercase, strip_newlines, max_chars, encoding, errors, letters_only=False,
                      hint=DECODE_HINT):
    """The file's text, read once in CHUNK-byte steps, with the tutorial's normalisations in its order."""
    try:
        info = codecs.lookup(encoding)
    except LookupError:
        raise CharlmError(f"unknown text encoding {encoding!r}") from None
    if not info._is_text_encoding:  # rot13, base64, zlib...: codecs, but not from bytes to text
        raise CharlmError(f"{encoding!r} is not a text encoding; give one such as utf-8, latin-1 or cp1252")
    codec = info.name
    decoder, offset, held, left = codecs.getincrementaldecoder(codec)(errors), 0, "", max_chars or -1
    spaced = False
    try:
        f = open(path, "rb")
    except OSError as e:
        raise CharlmError(f"cannot read data file {path}: {e.strerror}") from None
    with f:
        while left:
            raw = f.read(CHUNK)
            # UTF-8 text never holds NUL; the first chunk is enough to tell a binary file.
            if offset == 0 and codec == "utf-8" and b"\x00" in raw:
                raise CharlmError(f"{path} looks like a binary file (it contains NUL bytes), not UTF-8 text")
            buffered = len(decoder.getstate()[0])  # bytes of a character split by the last chunk
            try:
                text = held + decoder.decode(raw, final=not raw)
            except UnicodeDecodeError as e:
                at = offset - buffered + e.start
                raise CharlmError(f"{path} is not valid {encoding}: byte 0x{e.object[e.start]:02x} at offset "
                                  f"{at}; {hint}") from None
            except UnicodeError as e:  # not about one byte: a UTF-16 file without its byte order mark
                raise CharlmError(f"{path} is not valid {encoding}: {e}; {hint}") from None
            offset += len(raw)
            held = text[-1:] if raw and text.endswith("\r") else ""  # "\r" + "\n" may straddle two chunks
            text = text[:len(text) - len(held)].replace("\r\n", "\n")
            if lowercase:
                text = text.lower()
            if strip_newlines:
                text = text.replace("\n", "")
            if letters_only:
                text = letters(text)
                if text.startswith(" ") and spaced:
                    text = text[1:]  # the run of non-letters began in the last chunk
                spaced = text.endswith(" ") or (spaced and not text)
            if left > 0:
                text, left = text[:left], left - min(left, len(text))
            if text:
                yield text
            if not raw:
                return


def check_file(path):
    """Return path if it is an existing file, else raise a CharlmError saying what it is."""
    try:
        if not path.exists():
            raise CharlmError(f"data file not found: {path}")
        if path.is_dir():
            raise CharlmError(f"data path is a directory, not a text file: {path}")
    except OSError as e:  # a directory on the way that cannot be searched
        raise CharlmError(f"cannot read data file {path}: {e.strerror}") from None
    return path


def read_text(path):
    """A whole UTF-8 text file, with the corpus reader's clear errors."""
    return "".join(normalised_chunks(check_file(path), False, False, 0, "utf-8", "strict",
                                     hint="convert it to UTF-8"))


def letters(text):
    """d2l's normalisation: every run of characters other than ASCII letters becomes one space."""
    return _NON_LETTERS.sub(" ", text)


def load_corpus(path, lowercase=False, strip_newlines=False, max_chars=0, encoding="utf-8", errors="strict",
                vocab=None, extra="", letters_only=False):
    """Read a text file once into (vocab, ids), ids in the smallest unsigned type; the vocabulary is the
    text's own (plus the characters of extra) unless one is given, in which case characters outside it
    are an error naming them."""
    path = check_file(corpus_path(path))
    # Ids are assigned by first appearance, then renumbered in sorted order at the end: one pass.
    lut = np.full(UNICODE, -1, dtype=np.int64)
    seen = list(vocab._points) if vocab is not None else list(dict.fromkeys(_codepoints(extra)))
    lut[seen] = np.arange(len(seen))
    # A character per byte at most, except where lowercasing expands one (İ -> i̇ in one-byte codepages).
    ids, n, unknown = np.empty(path.stat().st_size, dtype=np.uint8 if vocab is None else vocab.dtype), 0, set()
    for text in normalised_chunks(path, lowercase, strip_newlines, max_chars, encoding, errors, letters_only):
        points = _codepoints(text)
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


def corpus_of(d, path=None, vocab=None):
    """(vocab, ids) of the text a DataConfig describes, or of all of another file read the same way.

    In lines mode the vocabulary also holds the line-start and line-end tokens."""
    lines = d.mode == "lines"
    if d.level == "word":
        from . import words
        return words.load_words(d, path, vocab, bos=lines)
    return load_corpus(path or d.path, d.lowercase, d.strip_newlines, 0 if path else d.max_chars, d.encoding,
                       d.errors, vocab, BOS + EOS if lines else "", d.letters_only)


def vocab_from_json(text):
    """A character or word vocabulary from its to_json text."""
    doc = json.loads(text)
    if doc.get("level") == "word":
        from .words import WordVocab
        return WordVocab(doc["tokens"])
    return Vocab(doc["chars"])


def id_dtype(size):
    """The smallest unsigned type that holds ids 0 .. size - 1."""
    return np.uint8 if size <= 2**8 else np.uint16 if size <= 2**16 else np.uint32


def _codepoints(text):
    return np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)


class Vocab:
    """A sorted character vocabulary: ids are positions in the sorted list of distinct characters."""

    level = "char"

    def __init__(self, chars):
        self.tokens = list(chars)
        self.index = {c: i for i, c in enumerate(self.tokens)}
        self.bos, self.eos = self.index.get(BOS), self.index.get(EOS)
        self._points = _codepoints("".join(self.tokens))
        self.dtype = id_dtype(len(self.tokens))  # the smallest type keeps big corpora compact

    def __len__(self):
        return len(self.tokens)

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
        """Integer ids back to text (without line-start marks)."""
        return "".join(self.tokens[int(i)] for i in ids).replace(BOS, "")

    def to_json(self):
        """The vocabulary as a JSON string (a list of characters)."""
        return json.dumps({"chars": self.tokens}, ensure_ascii=False)



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
    """The corpus cut into batch_size parallel streams read in consecutive seq_len windows.

    Row n of one batch continues row n of the previous batch, so the hidden state is carried."""

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
