"""Word-level corpora: whitespace tokens, `<eos>` at each line end, `<unk>` for rare and unseen words."""
import collections
import json

import numpy as np

from . import data
from .errors import CharlmError

UNK, EOS, BOS = "<unk>", "<eos>", "<bos>"


class WordVocab:
    """Special tokens first, then words by falling frequency (ties alphabetical)."""

    level = "word"

    def __init__(self, tokens):
        self.tokens = list(tokens)
        self.index = {t: i for i, t in enumerate(self.tokens)}
        if UNK not in self.index or EOS not in self.index:
            raise CharlmError(f"a word vocabulary needs {UNK} and {EOS}")
        self.unk, self.eos, self.bos = self.index[UNK], self.index[EOS], self.index.get(BOS)
        self.dtype = data.id_dtype(len(self.tokens))

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
            if token == EOS:
                out.append("\n")
            elif token != BOS:
                out.append(token if not out or out[-1] == "\n" else " " + token)
        return "".join(out)

    def to_json(self):
        """The vocabulary as a JSON string."""
        return json.dumps({"level": "word", "tokens": self.tokens}, ensure_ascii=False)


def _lines(d, path, max_chars):
    """The normalised text of path in pieces that end at line ends (the last piece may not)."""
    held = ""
    for text in data.normalised_chunks(path, d.lowercase, d.strip_newlines, max_chars, d.encoding, d.errors,
                                       d.letters_only):
        text = held + text
        cut = text.rfind("\n") + 1
        held = text[cut:]
        if cut:
            yield text[:cut]
    if held:
        yield held


def build_vocab(d, path, bos=False):
    """The word vocabulary of the training text: words seen at least d.min_freq times, at most d.max_vocab
    tokens."""
    counts = collections.Counter()
    for piece in _lines(d, path, d.max_chars):
        counts.update(piece.split())
    specials = [UNK, EOS] + ([BOS] if bos else [])  # PTB-style text spells <unk> out: the token, not a word
    words = sorted((w for w, c in counts.items() if c >= d.min_freq and w not in specials),
                   key=lambda w: (-counts[w], w))
    if d.max_vocab:
        words = words[:max(0, d.max_vocab - len(specials))]
    return WordVocab(specials + words)


def load_words(d, path=None, vocab=None, bos=False):
    """(vocab, ids) of a word-level text; the vocabulary is built from it unless given."""
    max_chars = 0 if path else d.max_chars
    path = data.check_file(data.corpus_path(path or d.path))
    vocab = vocab or build_vocab(d, path, bos)
    pieces = [vocab.encode(piece) for piece in _lines(d, path, max_chars)]
    ids = np.concatenate(pieces) if pieces else np.empty(0, dtype=vocab.dtype)
    if not len(ids):
        raise CharlmError(f"{path} holds no words")
    return vocab, ids
