"""Vocabularies of characters (ids in sorted order) and of words (specials, then by falling frequency), as JSON."""
import collections
import json

import numpy as np

from .errors import CharlmError

BOS, EOS = "\x02", "\n"  # in lines mode: ASCII start-of-text opens a line, the line break ends it
UNK, WORD_EOS, WORD_BOS = "<unk>", "<eos>", "<bos>"  # the word level's: rare and unseen words, line end, start


def id_dtype(size):
    """The smallest unsigned type that holds ids 0 .. size - 1."""
    return np.uint8 if size <= 2**8 else np.uint16 if size <= 2**16 else np.uint32


def codepoints(text):
    """The code points of text, as an array."""
    return np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)


class Vocab:
    """A sorted character vocabulary: ids are positions in the sorted list of distinct characters."""

    level = "char"

    def __init__(self, chars):
        self.tokens = list(chars)
        self.index = {c: i for i, c in enumerate(self.tokens)}
        self.bos, self.eos = self.index.get(BOS), self.index.get(EOS)
        self.points = codepoints("".join(self.tokens))
        self.dtype = id_dtype(len(self.tokens))  # the smallest type keeps big corpora compact

    def __len__(self):
        return len(self.tokens)

    def unknown(self, text):
        """Characters of text that are not in the vocabulary, sorted."""
        return sorted(set(text) - set(self.index))

    def encode(self, text):
        """Text to an integer array of ids; a CharlmError names unknown characters."""
        points = codepoints(text)
        ids = np.searchsorted(self.points, points)
        ok = ids < len(self.points)
        ok[ok] = self.points[ids[ok]] == points[ok]
        if not ok.all():
            raise CharlmError(f"characters not in the vocabulary: {''.join(self.unknown(text))!r}")
        return ids.astype(self.dtype)

    def decode(self, ids):
        """Integer ids back to text (without line-start marks)."""
        return "".join(self.tokens[int(i)] for i in ids).replace(BOS, "")

    def to_json(self):
        """The vocabulary as a JSON string (a list of characters)."""
        return json.dumps({"chars": self.tokens}, ensure_ascii=False)


class WordVocab:
    """Special tokens first, then words by falling frequency (ties alphabetical)."""

    level = "word"

    def __init__(self, tokens):
        self.tokens = list(tokens)
        self.index = {t: i for i, t in enumerate(self.tokens)}
        if UNK not in self.index or WORD_EOS not in self.index:
            raise CharlmError(f"a word vocabulary needs {UNK} and {WORD_EOS}")
        self.unk, self.eos, self.bos = self.index[UNK], self.index[WORD_EOS], self.index.get(WORD_BOS)
        self.dtype = id_dtype(len(self.tokens))

    def __len__(self):
        return len(self.tokens)

    def unknown(self, text):
        """Always empty: words outside the vocabulary read as <unk>."""
        return []

    def encode(self, text):
        """Text to ids: whitespace tokens, <eos> for each line end, <unk> for unknown words."""
        return np.array(list(self._ids(text)), dtype=self.dtype)

    def _ids(self, text):
        lines = text.split("\n")
        for i, line in enumerate(lines):
            for word in line.split():
                yield self.index.get(word, self.unk)
            if i + 1 < len(lines):
                yield self.eos

    def decode(self, ids):
        """Ids back to text: words joined by spaces, <eos> as a line break."""
        out = []
        for i in ids:
            token = self.tokens[int(i)]
            if token == WORD_EOS:
                out.append("\n")
            elif token != WORD_BOS:
                out.append(token if not out or out[-1] == "\n" else " " + token)
        return "".join(out)

    def to_json(self):
        """The vocabulary as a JSON string."""
        return json.dumps({"level": "word", "tokens": self.tokens}, ensure_ascii=False)


def build_vocab(pieces, min_freq=1, max_vocab=0, bos=False):
    """The word vocabulary of pieces of text: words seen at least min_freq times, at most max_vocab tokens."""
    counts = collections.Counter()
    for piece in pieces:
        counts.update(piece.split())
    specials = [UNK, WORD_EOS] + ([WORD_BOS] if bos else [])  # PTB-style text spells <unk> out: the token, not a word
    words = sorted((w for w, c in counts.items() if c >= min_freq and w not in specials),
                   key=lambda w: (-counts[w], w))
    if max_vocab:
        words = words[:max(0, max_vocab - len(specials))]
    return WordVocab(specials + words)


def vocab_from_json(text):
    """A character or word vocabulary from its to_json text."""
    doc = json.loads(text)
    return WordVocab(doc["tokens"]) if doc.get("level") == "word" else Vocab(doc["chars"])
