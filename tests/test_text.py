import hashlib
import re

import pytest

from charlm import text
from charlm.configs import DataConfig
from charlm.errors import CharlmError


def read(path, max_chars=0, **options):
    """path's text as the corpus reader gives it under these DataConfig options (lowercase off unless given)."""
    return "".join(text.normalised_chunks(text.check_file(path), DataConfig(**{"lowercase": False, **options}),
                                          max_chars))


def reference(raw, lowercase=False, strip_newlines=False, letters_only=False, max_chars=0):
    """The tutorial's normalisation of a whole text, in its order, in plain Python."""
    out = raw.decode("utf-8").replace("\r\n", "\n")
    out = out.lower() if lowercase else out
    out = out.replace("\n", "") if strip_newlines else out
    out = re.sub("[^A-Za-z]+", " ", out) if letters_only else out
    return out[:max_chars] if max_chars else out


def test_bundled_corpus_is_the_tutorials_file():
    raw = text.corpus_path(None).read_bytes()
    assert hashlib.sha256(raw).hexdigest() == "8424dbd9532ac81f7e5f0b6add90e6952baea29158309d7d1bf3884f4e12c516"


def test_reader_applies_tutorial_normalisation_in_order(tmp_path):
    path = tmp_path / "t.txt"
    path.write_text("AB\nCD\r\nEF", encoding="utf-8")
    assert read(path) == "AB\nCD\nEF"
    # The tutorial lowercases, removes newlines, then keeps the first max_chars characters.
    assert read(path, lowercase=True, strip_newlines=True, max_chars=5) == "abcde"


@pytest.mark.parametrize("chunk", [1, 2, 3, 5, 64])
@pytest.mark.parametrize("options", [{}, {"lowercase": True, "max_chars": 37}, {"strip_newlines": True},
                                     {"letters_only": True}, {"lowercase": True, "letters_only": True, "max_chars": 41}])
def test_reader_in_chunks_equals_normalising_the_whole_text(tmp_path, monkeypatch, chunk, options):
    raw = "Ünïcödé, İ\r\nTEXT 中文!\r\n\r\nand ✓ marks..\rnot a newline\n".encode() * 3
    path = tmp_path / "c.txt"
    path.write_bytes(raw)
    # Multi-byte characters, "\r\n" and runs of non-letters straddle chunk ends.
    monkeypatch.setattr(text, "CHUNK", chunk)
    assert read(path, **options) == reference(raw, **options)


@pytest.mark.parametrize("raw, options, expected", [
    ("İx, Y!\n", {"lowercase": True}, "i̇x, y!\n"),
    ("a\nb, C\n", {"strip_newlines": True, "letters_only": True}, "ab C"),  # newlines go first: no space
    ("İx, Y!\n", {"lowercase": True, "letters_only": True}, "i x y "),  # lowercase first: İ's dot is no letter
])
def test_normalise_follows_the_tutorials_order(raw, options, expected):
    assert text.normalise(raw, DataConfig(**{"lowercase": False, **options})) == expected


@pytest.mark.parametrize("content, message", [
    (None, "not found"),
    (b"abc\xff\xfedef", "byte 0xff at offset 3"),
    (b"\x7fELF\x02\x01\x01\x00\x00\x00", "binary file"),
])
def test_bad_files_are_clear_errors(tmp_path, content, message):
    path = tmp_path / "bad.txt"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(CharlmError, match=message):
        read(path)


def test_a_directory_is_an_error(tmp_path):
    with pytest.raises(CharlmError, match="directory"):
        read(tmp_path)


def test_reader_names_the_offset_of_a_bad_byte_past_the_first_chunk(tmp_path, monkeypatch):
    path = tmp_path / "late.txt"
    path.write_bytes("é".encode() * 10 + b"\xff")  # 20 good bytes, then a bad one
    monkeypatch.setattr(text, "CHUNK", 3)
    with pytest.raises(CharlmError, match="byte 0xff at offset 20"):
        read(path)


def test_reader_other_encodings_and_replacing_bad_bytes(tmp_path):
    path = tmp_path / "latin.txt"
    path.write_bytes("café au lait".encode("latin-1"))
    with pytest.raises(CharlmError, match="--encoding, or --errors replace"):
        read(path)
    assert read(path, encoding="latin-1") == "café au lait"
    assert read(path, errors="replace") == "caf\ufffd au lait"
    with pytest.raises(CharlmError, match="unknown text encoding 'klingon'"):
        read(path, encoding="klingon")


@pytest.mark.parametrize("encoding", ["rot13", "base64", "hex", "zlib"])
def test_reader_rejects_codecs_that_are_not_text_encodings(tmp_path, encoding):
    path = tmp_path / "text.txt"
    path.write_bytes(b"abcd")
    with pytest.raises(CharlmError, match=f"'{encoding}' is not a text encoding"):
        read(path, encoding=encoding)


def test_reader_utf16_without_a_byte_order_mark_is_a_clear_error(tmp_path):
    path = tmp_path / "u16.txt"
    path.write_bytes("abc".encode("utf-16-be"))
    with pytest.raises(CharlmError, match="is not valid utf-16: UTF-16 stream does not start with BOM; give its"):
        read(path, encoding="utf-16")
    assert read(path, encoding="utf-16-be") == "abc"


def test_read_text_keeps_the_text_as_written_and_asks_for_utf8(tmp_path):
    path = tmp_path / "r.txt"
    path.write_bytes(b"Ab,\r\nc\n")
    assert text.read_text(path) == "Ab,\nc\n"
    path.write_bytes("café".encode("latin-1"))
    with pytest.raises(CharlmError, match="byte 0xe9 at offset 3; convert it to UTF-8"):
        text.read_text(path)
