"""Text files read in bounded chunks with one-line errors, and the tutorial's normalisations (corpora, prefixes)."""
import codecs
import re
from importlib import resources
from pathlib import Path

from .errors import CharlmError

_NON_LETTERS = re.compile("[^A-Za-z]+")
CHUNK = 1 << 22  # bytes read per step: bounds the temporaries, whatever the size of the corpus
# train takes --encoding and --errors; eval has neither and reads text as its run was trained
DECODE_HINT = "give its --encoding, or --errors replace (eval reads it with the run's data.encoding and data.errors)"


def corpus_path(path):
    """Resolve a data.path setting to a file; None (or empty) means the bundled Time Machine."""
    if not path:
        return Path(str(resources.files("charlm").joinpath("corpora", "timemachine.txt")))
    return Path(path).expanduser()


def check_file(path):
    """Return path if it is an existing file, else raise a CharlmError saying what it is."""
    try:
        if not path.exists():
            raise CharlmError(f"data file not found: {path}")
        if path.is_dir():
            raise CharlmError(f"data path is a directory, not a text file: {path}")
        if not path.is_file():  # /dev/zero or a FIFO: a read that never ends, or that waits forever
            raise CharlmError(f"data path is not a regular file (a device, FIFO or socket): {path}")
    except OSError as e:  # a directory on the way that cannot be searched
        raise CharlmError(f"cannot read data file {path}: {e.strerror}") from None
    return path


def decoded_chunks(path, encoding="utf-8", errors="strict", hint=DECODE_HINT):
    """The file's text, read once in CHUNK-byte steps, with Windows line ends read as newlines."""
    try:
        info = codecs.lookup(encoding)
    except LookupError:
        raise CharlmError(f"unknown text encoding {encoding!r}") from None
    if not info._is_text_encoding:  # rot13, base64, zlib...: codecs, but not from bytes to text
        raise CharlmError(f"{encoding!r} is not a text encoding; give one such as utf-8, latin-1 or cp1252")
    codec = info.name
    decoder, offset, held = codecs.getincrementaldecoder(codec)(errors), 0, ""
    try:
        f = open(path, "rb")
    except OSError as e:
        raise CharlmError(f"cannot read data file {path}: {e.strerror}") from None
    with f:
        while True:
            raw = f.read(CHUNK)
            if offset == 0 and codec == "utf-8" and b"\x00" in raw:  # UTF-8 text never holds NUL
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
            yield text[:len(text) - len(held)].replace("\r\n", "\n")
            if not raw:
                return


def read_text(path):
    """A whole UTF-8 text file, with the corpus reader's clear errors."""
    return "".join(decoded_chunks(check_file(path), hint="convert it to UTF-8"))


def decode_utf8(raw, name):
    """Bytes as UTF-8 text; a one-line error naming the first bad byte of `name` otherwise."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise CharlmError(f"{name} is not valid UTF-8: byte 0x{raw[e.start]:02x} at offset {e.start}") from None


def read_utf8(path, what=""):
    """A small UTF-8 file's whole text (a config, a run's file, a prefix; `what` names its kind in errors)."""
    try:
        if Path(path).exists() and not (Path(path).is_file() or Path(path).is_dir()):  # a read that may never end
            raise CharlmError(f"cannot read {what}{path}: not a regular file (a device, FIFO or socket)")
        raw = Path(path).read_bytes()
    except OSError as e:
        raise CharlmError(f"cannot read {what}{path}: {e.strerror}") from None
    return decode_utf8(raw, f"{what}{path}")


def read_prefix(path, stdin=None):
    """The text of a prefix file (- for stdin, a binary stream), as it is: its last line break too."""
    text = decode_utf8(stdin.read(), "prefix file -") if path == "-" else read_utf8(path, "prefix file ")
    return text.replace("\r\n", "\n")


def lowercases(d):
    """Whether a DataConfig's text is lowercased: as set, or when unset (None) only the bundled book's."""
    return d.lowercase if d.lowercase is not None else not d.path


def normalise(text, d):
    """Text with the normalisations a DataConfig d asks for, in the tutorial's order."""
    if lowercases(d):
        text = text.lower()
    if d.strip_newlines:
        text = text.replace("\n", "")
    return _NON_LETTERS.sub(" ", text) if d.letters_only else text  # d2l's: a run of non-letters, one space


def normalised_chunks(path, d, max_chars=0):
    """The file's text decoded and normalised as a DataConfig d says, its first max_chars characters (0 = all)."""
    spaced, left = False, max_chars or -1
    for text in decoded_chunks(path, d.encoding, d.errors):
        text = normalise(text, d)
        if d.letters_only:
            if text.startswith(" ") and spaced:
                text = text[1:]  # the run of non-letters began in the last chunk
            spaced = text.endswith(" ") or (spaced and not text)
        if left > 0:
            text, left = text[:left], left - min(left, len(text))
        if text:
            yield text
        if not left:
            return
