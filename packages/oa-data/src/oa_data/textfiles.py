"""Text data files (jsonl / json / csv / tsv / txt, plain or compressed): the UTF-8 check, the 1-based line
each row starts on (rows split as the ``datasets`` builders split them), and the line of a JSON syntax error."""

from __future__ import annotations

import bz2
import csv
import gzip
import io
import json
import lzma
import re
import zlib
from array import array
from collections.abc import Iterator
from contextlib import contextmanager
from itertools import chain
from pathlib import Path
from typing import IO, TextIO

from oa_core.errors import OAError
from oa_core.io import UTF8_HINT, utf8_problem

TEXT_BUILDERS = ("json", "csv", "text")
CHUNK = 1 << 22
_JSON_WHITESPACE = " \t\r\n"
_JSON_SPACE = re.compile(f"[{_JSON_WHITESPACE}]*")
_OPENERS = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}
_READ_ERRORS = (OSError, EOFError, zlib.error, lzma.LZMAError)


def open_bytes(path: str | Path) -> IO[bytes] | None:
    """The file's content as bytes, decompressed; None where it is an archive (.zip) or needs a missing
    package (.zst without ``zstandard``)."""
    suffix = Path(path).suffix.lower()
    if suffix in _OPENERS:
        return _OPENERS[suffix](path, "rb")
    if suffix == ".zst":
        try:
            import zstandard
        except ImportError:
            return None
        return zstandard.open(path, "rb")
    return None if suffix == ".zip" else open(path, "rb")  # noqa: SIM115 (closed by the caller)


def check_utf8(path: str | Path) -> None:
    """Raise :class:`OAError` naming the line and byte offset of the first thing in the file that is not UTF-8
    text (a UTF-16/32 byte-order mark, a NUL byte, an invalid byte)."""
    stream = _open(path)
    if stream is None:
        return
    base, line, carry = 0, 1, b""
    with stream:
        while True:
            chunk = _read(stream, path)
            data = carry + chunk
            cut = _whole_characters(data) if chunk else len(data)
            piece, carry = data[:cut], data[cut:]
            problem = utf8_problem(piece, base)
            if problem is not None:
                offset, what = problem
                at = line + piece.count(b"\n", 0, offset)
                where = " of the decompressed data" if Path(path).suffix.lower() in (*_OPENERS, ".zst") else ""
                raise OAError(f"{path}:{at}: {what}{where}", hint=UTF8_HINT)
            line += piece.count(b"\n")
            base += len(piece)
            if not chunk:
                return


def _whole_characters(data: bytes) -> int:
    """A length to cut ``data`` at that never splits a UTF-8 sequence: before its last lead byte (among the last 4)."""
    for k in range(1, min(4, len(data)) + 1):
        if data[-k] < 0x80:
            return len(data) - k + 1
        if data[-k] >= 0xC0:
            return len(data) - k
    return len(data)


def row_lines(path: str | Path, builder: str, *, json_field: str | None = None, sep: str = ",") -> array | None:
    """The 1-based line on which each row of the file starts; None when rows are not found by line (JSON read
    from a top-level field, a file that cannot be opened or read here)."""
    if builder not in TEXT_BUILDERS or (builder == "json" and json_field is not None):
        return None
    newline = {"json": "\n", "csv": "", "text": None}[builder]  # as the `datasets` builders split lines
    try:
        with _open_text(path, newline) as text:
            if text is None:
                return None
            if builder == "csv":
                return _csv_lines(text, sep)
            if builder == "text":
                return _paragraph_lines(text)
            first = text.read(1)
            if first == "[":
                return _array_lines(first + text.read())
            return array("q", (n for n, line in enumerate(chain([first + text.readline()], text), start=1)
                               if line.strip(_JSON_WHITESPACE)))
    except (*_READ_ERRORS, ValueError, csv.Error, OAError):
        return None


def json_syntax_error(path: str | Path, json_field: str | None = None) -> str | None:
    """``line:column: invalid JSON: ...`` for the first syntax error of a JSON document or JSON Lines file
    (or ``line: ...`` for a JSON Lines line that is not an object); None when it has none."""
    with _open_text(path, "\n") as text:
        if text is None:
            return None
        first = text.read(1)
        if first == "[" or json_field is not None:
            try:
                json.loads(first + text.read())
            except json.JSONDecodeError as e:
                return f"{e.lineno}:{e.colno}: invalid JSON: {e.msg}"
            return None
        for n, line in enumerate(chain([first + text.readline()], text), start=1):
            if line.strip(_JSON_WHITESPACE):
                try:
                    value = json.loads(line)
                except json.JSONDecodeError as e:
                    return f"{n}:{e.colno}: invalid JSON: {e.msg}"
                if not isinstance(value, dict):
                    return f"{n}: expected one JSON object per line, got {type(value).__name__}"
    return None


@contextmanager
def _open_text(path: str | Path, newline: str | None) -> Iterator[TextIO | None]:
    """The decompressed file as UTF-8 text without a byte-order mark (None where it cannot be opened here)."""
    stream = _open(path)
    if stream is None:
        yield None
        return
    with io.TextIOWrapper(stream, encoding="utf-8-sig", newline=newline) as text:
        yield text


def _open(path: str | Path) -> IO[bytes] | None:
    try:
        return open_bytes(path)
    except _READ_ERRORS as e:
        raise OAError(f"{path}: cannot open: {e}", hint="check that the file is complete and readable") from None


def _read(stream: IO[bytes], path: str | Path) -> bytes:
    try:
        return stream.read(CHUNK)
    except _READ_ERRORS as e:
        raise OAError(f"{path}: cannot decompress: {e}", hint="the compressed file is damaged or incomplete") from None


def _array_lines(text: str) -> array | None:
    """A JSON array: the line where each element starts."""
    decoder = json.JSONDecoder()
    starts, line, last, pos = array("q"), 1, 0, 1
    try:
        while True:
            pos = _JSON_SPACE.match(text, pos).end()
            if text.startswith("]", pos):
                return starts
            line += text.count("\n", last, pos)
            starts.append(line)
            last = pos
            _, pos = decoder.raw_decode(text, pos)
            pos = _JSON_SPACE.match(text, pos).end()
            pos += text.startswith(",", pos)
    except json.JSONDecodeError:
        return None


def _csv_lines(text: TextIO, sep: str) -> array:
    """CSV/TSV: the rows after the header; a quoted field may span lines. Like pandas, a line of spaces and
    tabs without the separator is blank, not a row."""
    row_text: list[str] = []  # the lines of the row being read (the csv reader reads no further)

    def lines():
        for line in text:
            row_text.append(line)
            yield line

    reader = csv.reader(lines(), delimiter=sep)
    starts, before = array("q"), 0
    limit = csv.field_size_limit(2**31 - 1)  # pandas reads fields of any size
    try:
        for _ in reader:
            first = row_text[0].rstrip("\r\n")
            if sep in first or first.strip(" \t"):
                starts.append(before + 1)
            before = reader.line_num
            row_text.clear()
    finally:
        csv.field_size_limit(limit)
    return starts[1:]


def _paragraph_lines(text: TextIO) -> array:
    """Text read by paragraph (split at every ``\\n\\n``, empty pieces dropped): the line each piece's text
    begins on."""
    starts, line, carry = array("q"), 1, ""
    while chunk := text.read(CHUNK):
        *pieces, carry = (carry + chunk).split("\n\n")
        for piece in pieces:
            line = _add_paragraph(starts, piece, line) + 2
    _add_paragraph(starts, carry, line)
    return starts


def _add_paragraph(starts: array, piece: str, line: int) -> int:
    """Append the line ``piece`` (starting at ``line``) begins on, when it is not empty; the line it ends on."""
    if piece:
        starts.append(line + len(piece) - len(piece.lstrip("\n")))
    return line + piece.count("\n")
