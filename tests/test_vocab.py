import numpy as np
import pytest

from charlm import vocab as vocabs
from charlm.errors import CharlmError


def test_vocab_round_trips_with_ids_in_sorted_order():
    text = "hello, world"
    vocab = vocabs.Vocab(sorted(set(text)))
    ids = vocab.encode(text)
    assert vocab.decode(ids) == text
    assert ids.dtype == np.uint8 and ids[text.index(" ")] == 0 and ids[text.index("w")] == len(vocab) - 1


def test_vocab_handles_any_unicode_and_picks_wider_ids():
    text = "".join(chr(0x4E00 + i) for i in range(300)) + "孟子見梁惠王。\n"
    vocab = vocabs.Vocab(sorted(set(text)))
    assert vocab.encode(text).dtype == np.uint16
    assert vocab.decode(vocab.encode(text)) == text


def test_vocab_json_round_trip():
    vocab = vocabs.Vocab(sorted(set("abc\n\"é✓")))
    again = vocabs.vocab_from_json(vocab.to_json())
    assert again.tokens == vocab.tokens and again.level == "char"


def test_vocab_encode_names_unknown_characters():
    vocab = vocabs.Vocab(sorted(set("abc")))
    with pytest.raises(CharlmError, match="'xz'"):
        vocab.encode("abzcx")


def test_word_vocabulary_round_trips_through_json():
    vocab = vocabs.build_vocab(["x y y\n"], bos=True)
    again = vocabs.vocab_from_json(vocab.to_json())
    assert again.tokens == vocab.tokens and again.level == "word" and again.bos == vocab.bos is not None


def test_word_encode_keeps_unknown_prefix_words_as_unk():
    vocab = vocabs.WordVocab(["<unk>", "<eos>", "the"])
    assert list(vocab.encode("the zebra")) == [2, 0]
