"""File helpers shared by every package: atomic writes (a file or a folder appears whole or not at all, with the
permissions the umask gives a plain ``open()``) and the check that a text input is UTF-8."""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO


def umask() -> int:
    """The process's umask, read without changing it where the system allows (Linux: ``/proc/self/status``):
    setting it, even for a moment, would give files other threads create meanwhile the wrong permissions."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def usual_mode(*, folder: bool = False) -> int:
    """The permissions a plain ``open()`` (``folder``: ``mkdir()``) gets under the umask: 0o666 & ~umask for a
    file, 0o777 & ~umask for a folder."""
    return (0o777 if folder else 0o666) & ~umask()


def follow_umask(path: str | os.PathLike) -> None:
    """Give ``path`` and every file and folder under it the permissions of :func:`usual_mode`, for writers that
    make them private (``tempfile``; safetensors writes 0600). Executable files get 0o777 & ~umask; links and
    what they point to are left alone."""
    mask = umask()
    paths = [os.fspath(path)]
    if stat.S_ISDIR(os.lstat(path).st_mode):
        for root, dirs, files in os.walk(path):  # does not enter linked folders
            paths += [os.path.join(root, name) for name in dirs + files]
    for p in paths:
        mode = os.lstat(p).st_mode
        if not (stat.S_ISDIR(mode) or stat.S_ISREG(mode)):
            continue
        want = (0o777 if stat.S_ISDIR(mode) or mode & 0o111 else 0o666) & ~mask
        if stat.S_IMODE(mode) != want:
            os.chmod(p, want)


@contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = ".tmp") -> Iterator[Path]:
    """A temporary file name beside ``path`` for writers that take a name (matplotlib, safetensors); the file
    gets the permissions of a plain ``open()`` and replaces ``path`` (fsynced) only when the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        follow_umask(tmp)  # the writer may have replaced the file, e.g. with a private one
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextmanager
def atomic_open(path: str | os.PathLike, encoding: str = "utf-8") -> Iterator[IO[str]]:
    """A text file to write (stream) into; it replaces ``path`` (fsynced) only when the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.fchmod(fd, usual_mode())  # mkstemp creates 0600
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
    try:
        yield tmp
        follow_umask(tmp)  # mkdtemp's folder and what writers made private (safetensors: 0600)
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
