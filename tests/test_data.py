import hashlib

import numpy as np
import pytest

from charlm import data
from charlm.errors import CharlmError


def test_vocab_round_trips_with_ids_in_sorted_order():
    text = "hello, world"
    vocab = data.Vocab(sorted(set(text)))
    ids = vocab.encode(text)
    assert vocab.decode(ids) == text
    assert ids.dtype == np.uint8 and ids[text.index(" ")] == 0 and ids[text.index("w")] == len(vocab) - 1


def test_vocab_handles_any_unicode_and_picks_wider_ids():
    text = "".join(chr(0x4E00 + i) for i in range(300)) + "孟子見梁惠王。\n"
    vocab = data.Vocab(sorted(set(text)))
    assert vocab.encode(text).dtype == np.uint16
    assert vocab.decode(vocab.encode(text)) == text


def test_vocab_json_round_trip():
    vocab = data.Vocab(sorted(set("abc\n\"é✓")))
    again = data.vocab_from_json(vocab.to_json())
    assert again.tokens == vocab.tokens


def test_vocab_encode_names_unknown_characters():
    vocab = data.Vocab(sorted(set("abc")))
    with pytest.raises(CharlmError, match="'xz'"):
        vocab.encode("abzcx")


def test_bundled_corpus_is_the_tutorials_file():
    raw = data.corpus_path(None).read_bytes()
    assert hashlib.sha256(raw).hexdigest() == "8424dbd9532ac81f7e5f0b6add90e6952baea29158309d7d1bf3884f4e12c516"


def text_of(path, **options):
    vocab, ids = data.load_corpus(path, **options)
    return vocab.decode(ids)


def reference(raw, lowercase=False, strip_newlines=False, max_chars=0):
    """The tutorial's normalisation of a whole text, in its order, in plain Python."""
    text = raw.decode("utf-8").replace("\r\n", "\n")
    text = text.lower() if lowercase else text
    text = text.replace("\n", "") if strip_newlines else text
    return text[:max_chars] if max_chars else text


def test_load_corpus_applies_tutorial_normalisation_in_order(tmp_path):
    path = tmp_path / "t.txt"
    path.write_text("AB\nCD\r\nEF", encoding="utf-8")
    assert text_of(path) == "AB\nCD\nEF"
    # The tutorial lowercases, removes newlines, then keeps the first max_chars characters.
    assert text_of(path, lowercase=True, strip_newlines=True, max_chars=5) == "abcde"


@pytest.mark.parametrize("chunk", [1, 2, 3, 5, 64])
@pytest.mark.parametrize("options", [{}, {"lowercase": True, "max_chars": 37}, {"strip_newlines": True}])
def test_load_corpus_in_chunks_equals_reading_it_whole(tmp_path, monkeypatch, chunk, options):
    raw = "Ünïcödé\r\nTEXT 中文\r\n\r\nand ✓ marks\rnot a newline\n".encode("utf-8") * 3
    path = tmp_path / "c.txt"
    path.write_bytes(raw)
    monkeypatch.setattr(data, "CHUNK", chunk)  # multi-byte characters and "\r\n" straddle chunk ends
    vocab, ids = data.load_corpus(path, **options)
    assert vocab.decode(ids) == reference(raw, **options)
    assert vocab.tokens == sorted(set(reference(raw, **options)))


def test_load_corpus_widens_ids_when_a_later_chunk_brings_new_characters(tmp_path, monkeypatch):
    text = "ab" * 50 + "".join(chr(0x4E00 + i) for i in range(300))
    path = tmp_path / "w.txt"
    path.write_text(text, encoding="utf-8")
    monkeypatch.setattr(data, "CHUNK", 16)
    vocab, ids = data.load_corpus(path)
    assert ids.dtype == np.uint16 and vocab.decode(ids) == text


def test_load_corpus_makes_room_when_lowercasing_adds_characters(tmp_path, monkeypatch):
    path = tmp_path / "tr.txt"
    path.write_bytes("İSTANBUL ".encode("cp1254") * 20)  # one byte for İ, two characters once lowercased
    monkeypatch.setattr(data, "CHUNK", 7)
    assert text_of(path, lowercase=True, encoding="cp1254") == "İSTANBUL ".lower() * 20


def test_load_corpus_with_a_vocabulary_names_every_unknown_character(tmp_path, monkeypatch):
    path = tmp_path / "u.txt"
    path.write_text("abc x abc y abc z", encoding="utf-8")
    monkeypatch.setattr(data, "CHUNK", 4)
    vocab = data.Vocab(sorted(set("abc ")))
    with pytest.raises(CharlmError, match="'xyz'"):
        data.load_corpus(path, vocab=vocab)
    path.write_text("cab bac", encoding="utf-8")
    assert vocab.decode(data.load_corpus(path, vocab=vocab)[1]) == "cab bac"


@pytest.mark.parametrize("content, message", [
    (None, "not found"),
    (b"", "holds no text"),
    (b"abc\xff\xfedef", "byte 0xff at offset 3"),
    (b"\x7fELF\x02\x01\x01\x00\x00\x00", "binary file"),
])
def test_load_corpus_bad_files_are_clear_errors(tmp_path, content, message):
    path = tmp_path / "bad.txt"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(CharlmError, match=message):
        data.load_corpus(path)


def test_load_corpus_names_the_offset_of_a_bad_byte_past_the_first_chunk(tmp_path, monkeypatch):
    path = tmp_path / "late.txt"
    path.write_bytes("é".encode() * 10 + b"\xff")  # 20 good bytes, then a bad one
    monkeypatch.setattr(data, "CHUNK", 3)
    with pytest.raises(CharlmError, match="byte 0xff at offset 20"):
        data.load_corpus(path)


def test_load_corpus_other_encodings_and_replacing_bad_bytes(tmp_path):
    path = tmp_path / "latin.txt"
    path.write_bytes("café au lait".encode("latin-1"))
    with pytest.raises(CharlmError, match="--encoding, or --errors replace"):
        data.load_corpus(path)
    assert text_of(path, encoding="latin-1") == "café au lait"
    assert text_of(path, errors="replace") == "caf\ufffd au lait"
    with pytest.raises(CharlmError, match="unknown text encoding 'klingon'"):
        data.load_corpus(path, encoding="klingon")


@pytest.mark.parametrize("encoding", ["rot13", "base64", "hex", "zlib"])
def test_load_corpus_rejects_codecs_that_are_not_text_encodings(tmp_path, encoding):
    path = tmp_path / "text.txt"
    path.write_bytes(b"abcd")
    with pytest.raises(CharlmError, match=f"'{encoding}' is not a text encoding"):
        data.load_corpus(path, encoding=encoding)


def test_load_corpus_utf16_without_a_byte_order_mark_is_a_clear_error(tmp_path):
    path = tmp_path / "u16.txt"
    path.write_bytes("abc".encode("utf-16-be"))
    with pytest.raises(CharlmError, match="is not valid utf-16: UTF-16 stream does not start with BOM; give its"):
        data.load_corpus(path, encoding="utf-16")
    assert text_of(path, encoding="utf-16-be") == "abc"


def test_load_corpus_directory_is_an_error(tmp_path):
    with pytest.raises(CharlmError, match="directory"):
        data.load_corpus(tmp_path)


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
