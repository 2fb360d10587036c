import numpy as np
import pytest

from charlm import data, text
from charlm.configs import DataConfig
from charlm.errors import CharlmError
from charlm.vocab import Vocab


def corpus(path, vocab=None, **options):
    """(vocab, ids) of path read with these DataConfig options (lowercase off unless given)."""
    return data.corpus_of(DataConfig(**{"path": str(path), "lowercase": False, **options}), vocab=vocab)


def text_of(path, **options):
    vocab, ids = corpus(path, **options)
    return vocab.decode(ids)


@pytest.mark.parametrize("chunk", [1, 2, 3, 5, 64])
def test_load_corpus_in_chunks_equals_reading_it_whole(tmp_path, monkeypatch, chunk):
    whole = "Ünïcödé\nTEXT 中文\n\nand ✓ marks\rnot a newline\n" * 3
    path = tmp_path / "c.txt"
    path.write_text(whole, encoding="utf-8")
    monkeypatch.setattr(text, "CHUNK", chunk)  # each chunk brings characters the earlier ones had not
    vocab, ids = corpus(path)
    assert vocab.decode(ids) == whole and vocab.tokens == sorted(set(whole))


def test_load_corpus_widens_ids_when_a_later_chunk_brings_new_characters(tmp_path, monkeypatch):
    whole = "ab" * 50 + "".join(chr(0x4E00 + i) for i in range(300))
    path = tmp_path / "w.txt"
    path.write_text(whole, encoding="utf-8")
    monkeypatch.setattr(text, "CHUNK", 16)
    vocab, ids = corpus(path)
    assert ids.dtype == np.uint16 and vocab.decode(ids) == whole


def test_load_corpus_makes_room_when_lowercasing_adds_characters(tmp_path, monkeypatch):
    path = tmp_path / "tr.txt"
    path.write_bytes("İSTANBUL ".encode("cp1254") * 20)  # one byte for İ, two characters once lowercased
    monkeypatch.setattr(text, "CHUNK", 7)
    assert text_of(path, lowercase=True, encoding="cp1254") == "İSTANBUL ".lower() * 20


def test_load_corpus_with_a_vocabulary_names_every_unknown_character(tmp_path, monkeypatch):
    path = tmp_path / "u.txt"
    path.write_text("abc x abc y abc z", encoding="utf-8")
    monkeypatch.setattr(text, "CHUNK", 4)
    vocab = Vocab(sorted(set("abc ")))
    with pytest.raises(CharlmError, match="'xyz'"):
        corpus(path, vocab)
    path.write_text("cab bac", encoding="utf-8")
    assert vocab.decode(corpus(path, vocab)[1]) == "cab bac"


def test_lines_mode_vocabulary_holds_the_line_tokens(tmp_path):
    path = tmp_path / "l.txt"
    path.write_text("ab", encoding="utf-8")
    vocab, _ = corpus(path, mode="lines")
    assert vocab.tokens == ["\x02", "\n", "a", "b"] and (vocab.bos, vocab.eos) == (0, 1)


@pytest.mark.parametrize("level, message", [("char", "holds no text"), ("word", "holds no words")])
def test_load_corpus_empty_file_is_an_error(tmp_path, level, message):
    path = tmp_path / "empty.txt"
    path.write_text("   \t " if level == "word" else "")
    with pytest.raises(CharlmError, match=message):
        corpus(path, level=level)


def test_other_file_is_read_whole_with_the_vocabulary(tmp_path):
    (tmp_path / "train.txt").write_text("abcabc")
    (tmp_path / "valid.txt").write_text("cbacba")
    d = DataConfig(path=str(tmp_path / "train.txt"), max_chars=4)
    vocab, ids = data.corpus_of(d)
    assert vocab.decode(ids) == "abca"
    assert vocab.decode(data.corpus_of(d, tmp_path / "valid.txt", vocab)[1]) == "cbacba"  # max_chars: train only


def word_cfg(path, **options):
    # lowercased unless told: these tests were written for it (a user's text keeps its case by default)
    return DataConfig(path=str(path), level="word", **{"lowercase": True, **options})


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


@pytest.mark.parametrize("cap", [0, 3, 4, 5, 6])
def test_a_vocabulary_cut_after_reading_is_the_one_read_with_the_cap(tmp_path, cap):
    path = tmp_path / "w.txt"
    path.write_text("a a a b b c d d e\nb a f\n")
    whole = data.corpus_of(word_cfg(path))
    vocab, ids = data.capped(*whole, cap)
    read = data.corpus_of(word_cfg(path, max_vocab=cap))
    assert vocab.tokens == read[0].tokens and ids.tolist() == read[1].tolist()


def test_unseen_words_in_another_file_read_as_unk(tmp_path):
    (tmp_path / "train.txt").write_text("a b\n")
    (tmp_path / "valid.txt").write_text("a z\n")
    d = word_cfg(tmp_path / "train.txt")
    vocab, _ = data.corpus_of(d)
    _, ids = data.corpus_of(d, tmp_path / "valid.txt", vocab)
    assert vocab.decode(ids) == "a <unk>\n"


def test_a_ptb_style_corpus_reads_unchanged(tmp_path):
    raw = " no it was n't black monday \n the <unk> fell N points \n"
    (tmp_path / "ptb.txt").write_text(raw)
    vocab, ids = data.corpus_of(word_cfg(tmp_path / "ptb.txt", lowercase=False))
    assert vocab.decode(ids).split("\n") == [" ".join(line.split()) for line in raw.split("\n")]


def test_word_ids_use_the_smallest_type(tmp_path):
    (tmp_path / "w.txt").write_text(" ".join(f"w{i}" for i in range(300)) + "\n")
    vocab, ids = data.corpus_of(word_cfg(tmp_path / "w.txt"))
    assert ids.dtype == np.uint16 and len(vocab) == 302


def test_split_keeps_a_contiguous_tail():
    ids = np.arange(100)
    train, val = data.split(ids, 0.1)
    assert np.array_equal(train, ids[:90]) and np.array_equal(val, ids[90:])
    assert len(data.split(ids, 0.0)[1]) == 0


@pytest.mark.parametrize("iterator", ["random", "sequential"])
def test_batches_have_shape_t_n_and_targets_shifted_by_one(iterator):
    ids = np.arange(1000) % 251
    batches = data.ITERATORS[iterator](ids, 4, 7, np.random.default_rng(0))
    assert len(batches) == 999 // 28
    for X, Y in batches:
        assert X.shape == Y.shape == (7, 4)
        assert np.array_equal(Y[:-1], X[1:])  # inside a window, the target is the next input
        assert np.array_equal(Y % 251, (X + 1) % 251)


def test_random_batches_windows_do_not_overlap_and_offsets_vary():
    ids = np.arange(2000)
    starts = set()
    for seed in range(20):
        batches = data.RandomBatches(ids, 5, 10, np.random.default_rng(seed))
        firsts = np.concatenate([X[0] for X, _ in batches])
        assert len(set(firsts)) == len(firsts)
        assert len(set(firsts % 10)) == 1  # one offset per epoch, windows seq_len apart
        starts.add(int(firsts[0] % 10))
    assert len(starts) > 1


def test_sequential_batches_continue_each_stream():
    ids = np.arange(1000)
    batches = list(data.SequentialBatches(ids, 4, 6, np.random.default_rng(1)))
    for (X0, _), (X1, _) in zip(batches, batches[1:]):
        assert np.array_equal(X1[0], X0[-1] + 1)  # row n of the next batch continues row n


@pytest.mark.parametrize("iterator", ["random", "sequential"])
def test_too_short_corpus_says_how_many_characters_are_needed(iterator):
    with pytest.raises(CharlmError, match="needs at least 33"):
        data.ITERATORS[iterator](np.arange(32), 4, 8, np.random.default_rng(0))


def test_eval_batches_cover_every_stream_position():
    ids = np.arange(103)
    batches = data.eval_batches(ids, 4, 10)
    xs = np.concatenate([X for X, _ in batches])
    assert xs.shape == (102 // 4, 4)  # the last window is shorter, nothing of the streams dropped
    assert sorted(xs.T.ravel()) == list(range(100))
