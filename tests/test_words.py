import numpy as np
import pytest

from charlm import configs as config, data, words
from charlm.errors import CharlmError


def word_cfg(path, **kw):
    cfg = config.Config()
    cfg.data.path, cfg.data.level = str(path), "word"
    for k, v in kw.items():
        setattr(cfg.data, k, v)
    return cfg.data


def test_words_are_whitespace_tokens_with_eos_at_line_ends(tmp_path):
    path = tmp_path / "w.txt"
    path.write_text("The cat  sat\n\nthe cat\tran\n")
    vocab, ids = data.corpus_of(word_cfg(path))
    assert vocab.tokens[:2] == ["<unk>", "<eos>"]
    assert vocab.tokens[2:] == ["cat", "the", "ran", "sat"]  # by falling frequency, then alphabetically
    assert [vocab.tokens[i] for i in ids] == ["the", "cat", "sat", "<eos>", "<eos>", "the", "cat", "ran", "<eos>"]
    assert vocab.decode(ids) == "the cat sat\n\nthe cat ran\n"


def test_rare_words_and_the_cap_read_as_unk(tmp_path):
    path = tmp_path / "w.txt"
    path.write_text("a a a b b c <unk>\n")
    vocab, ids = data.corpus_of(word_cfg(path, min_freq=2))
    assert vocab.tokens == ["<unk>", "<eos>", "a", "b"]  # c once; <unk> in the text is the special token
    assert vocab.decode(ids) == "a a a b b <unk> <unk>\n"
    vocab, _ = data.corpus_of(word_cfg(path, max_vocab=3))
    assert vocab.tokens == ["<unk>", "<eos>", "a"]


def test_unseen_words_in_another_file_read_as_unk(tmp_path):
    (tmp_path / "train.txt").write_text("a b\n")
    (tmp_path / "valid.txt").write_text("a z\n")
    d = word_cfg(tmp_path / "train.txt")
    vocab, _ = data.corpus_of(d)
    _, ids = data.corpus_of(d, tmp_path / "valid.txt", vocab)
    assert vocab.decode(ids) == "a <unk>\n"


def test_a_ptb_style_corpus_reads_unchanged(tmp_path):
    text = " no it was n't black monday \n the <unk> fell N points \n"
    (tmp_path / "ptb.txt").write_text(text)
    vocab, ids = data.corpus_of(word_cfg(tmp_path / "ptb.txt", lowercase=False))
    assert vocab.decode(ids).split("\n") == [" ".join(line.split()) for line in text.split("\n")]


def test_vocabulary_round_trips_through_json(tmp_path):
    (tmp_path / "w.txt").write_text("x y y\n")
    vocab, _ = data.corpus_of(word_cfg(tmp_path / "w.txt", mode="lines"))
    again = data.vocab_from_json(vocab.to_json())
    assert again.tokens == vocab.tokens and again.level == "word" and again.bos == vocab.bos is not None


def test_word_ids_use_the_smallest_type(tmp_path):
    (tmp_path / "w.txt").write_text(" ".join(f"w{i}" for i in range(300)) + "\n")
    vocab, ids = data.corpus_of(word_cfg(tmp_path / "w.txt"))
    assert ids.dtype == np.uint16 and len(vocab) == 302


def test_a_file_of_only_whitespace_has_no_words(tmp_path):
    (tmp_path / "w.txt").write_text("   \t ")
    with pytest.raises(CharlmError, match="holds no words"):
        data.corpus_of(word_cfg(tmp_path / "w.txt"))


def test_encode_keeps_unknown_prefix_words_as_unk():
    vocab = words.WordVocab(["<unk>", "<eos>", "the"])
    assert list(vocab.encode("the zebra")) == [2, 0]
