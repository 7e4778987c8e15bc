"""File helpers shared by every package: atomic writes (a file or a folder appears whole or not at all) and
the check that a text input is UTF-8."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def atomic_open(path: str | os.PathLike, encoding: str = "utf-8") -> Iterator[IO[str]]:
    """A text file to write (stream) into; it replaces ``path`` (fsynced) only when the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; give the file the usual permissions
    try:
        with os.fdopen(fd, "w", encoding=encoding) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | os.PathLike, text: str, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` atomically (temp file in the same folder, fsync, rename)."""
    with atomic_open(path, encoding) as f:
        f.write(text)
    return Path(path)


@contextmanager
def atomic_dir(path: str | os.PathLike, *, overwrite: bool = True) -> Iterator[Path]:
    """A temporary folder beside ``path`` that becomes ``path`` when the block succeeds.

    An existing ``path`` is replaced (``overwrite``) or kept, the new folder then discarded (e.g. a cache
    entry another process finished first).
    """
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    tmp.chmod(0o777 & ~_umask())  # mkdtemp makes it private; the result is an ordinary folder
    try:
        yield tmp
        if not overwrite:
            try:
                os.replace(tmp, out)  # fails if another writer's folder is there already
            except OSError:
                if not out.exists():
                    raise
            return
        old = None
        if out.exists():
            old = out.with_name(f".{out.name}.old-{os.getpid()}")
            os.replace(out, old)
        os.replace(tmp, out)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def refuse_input_as_output(output: str | os.PathLike, inputs: dict[str, str | os.PathLike]) -> None:
    """A one-line error when ``output`` is one of ``inputs`` (the same file, also through another path or a
    link) or lies inside an input folder: writing it would destroy what is being read. ``inputs`` maps a name
    (a config key or argument) to a path."""
    from oa_core.errors import OAError

    out = Path(output).expanduser()
    for name, path in inputs.items():
        src = Path(path).expanduser()
        if not src.exists():
            continue
        same = out.exists() and os.path.samefile(out, src)
        inside = src.is_dir() and out.resolve().is_relative_to(src.resolve())
        if same or inside:
            raise OAError(f"{output}: is {'the same file as' if same else 'inside'} the input {name} ({path}); "
                          "writing it would destroy the input", hint="choose another output path")


UTF8_HINT = "save the file as UTF-8, e.g. `iconv -f UTF-16 -t UTF-8 IN > OUT` (-f: the encoding it has)"
_BYTE_ORDER_MARKS = (  # UTF-32 first: its little-endian mark starts with UTF-16's
    (b"\xff\xfe\x00\x00", "UTF-32"), (b"\x00\x00\xfe\xff", "UTF-32"), (b"\xff\xfe", "UTF-16"), (b"\xfe\xff", "UTF-16"),
)


def utf8_problem(data: bytes, base: int = 0) -> tuple[int, str] | None:
    """Why ``data`` (at byte ``base`` of its file) is not UTF-8 text: ``(offset in data, description with the
    file's byte offset)`` of a UTF-16/32 byte-order mark (at the file's start), the first NUL byte (binary data,
    or UTF-16 without a mark) or the first invalid byte; None for UTF-8 text."""
    if base == 0:
        for mark, name in _BYTE_ORDER_MARKS:
            if data.startswith(mark):
                return 0, f"not UTF-8: a {name} byte-order mark at byte offset 0 (the file is {name} text)"
    nul = data.find(b"\x00")
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as e:
        if nul < 0 or e.start < nul:
            return e.start, f"not UTF-8: byte 0x{data[e.start]:02x} at byte offset {base + e.start} ({e.reason})"
    if nul >= 0:
        return nul, f"not UTF-8: a NUL byte at byte offset {base + nul} (binary data, or UTF-16 text)"
    return None
