"""Tokenized-dataset cache: a content-hash key and atomic save/load of ``datasets.Dataset`` folders.

The key covers the bytes of the data files and of the tokenizer files, the chat template text and the
options (anything JSON-serializable), so editing any of them builds a new entry; an unchanged setup
loads the saved one. Entries are written to a temporary folder and renamed into place, so a crash never
leaves a half-written entry under a valid key.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable, Iterable, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from oa_core.errors import OAError
from oa_core.io import atomic_dir

log = logging.getLogger(__name__)
CACHE_VERSION = 2  # bump when the tokenized layout or the key changes
_DIGESTS: dict[tuple[str, int, int], str] = {}  # (path, size, mtime) -> sha256: each file is read once per process


def file_digest(path: str | os.PathLike) -> str:
    """The SHA-256 of a file's bytes (remembered while the file's size and modification time stay the same)."""
    stat = os.stat(path)
    key = (str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _DIGESTS:
        with open(path, "rb") as f:
            _DIGESTS[key] = hashlib.file_digest(f, "sha256").hexdigest()
    return _DIGESTS[key]


def file_digests(items: Iterable[str | os.PathLike]) -> dict[str, str]:
    """``file -> sha256`` of every local file or file in a local folder of ``items`` (other names are left out)."""
    out = {}
    for item in items:
        path = Path(item).expanduser()
        files = sorted(f for f in path.rglob("*") if f.is_file()) if path.is_dir() else [path] if path.is_file() else []
        out |= {str(f): file_digest(f) for f in files}
    return out


def _hash_path(h, path: Path) -> None:
    """Feed the digest of a file, or of every file of a folder with its relative name, into ``h``."""
    files = sorted(f for f in path.rglob("*") if f.is_file()) if path.is_dir() else [path]
    for f in files:
        h.update(f"\0file:{f.relative_to(path) if path.is_dir() else f.name}\0{file_digest(f)}".encode())


def fingerprint(files: Iterable[str | os.PathLike], tokenizer_dir: str | os.PathLike | None,
                template_text: str | None, options: Mapping[str, Any] | None = None) -> str:
    """A hex key over data file contents, tokenizer files, template text and options.

    ``files`` (e.g. the ``LoadedSource.files`` of every source) and ``tokenizer_dir`` may be files or
    folders; a name that is not a local path (a hub id) enters the key as text (give its revision in
    ``options``). File order matters (it is the mix order).
    """
    h = hashlib.sha256(f"oa-data-cache:{CACHE_VERSION}".encode())
    for part, items in (("data", list(files)), ("tokenizer", [] if tokenizer_dir is None else [tokenizer_dir])):
        for item in items:
            h.update(f"\0{part}\0".encode())
            path = Path(item).expanduser()
            if path.exists():
                _hash_path(h, path)
            else:
                h.update(f"name:{item}".encode())
    h.update(b"\0template\0" + (template_text or "").encode())
    try:
        h.update(b"\0options\0" + json.dumps(dict(options or {}), sort_keys=True).encode())
    except TypeError as e:
        raise OAError(f"cache key: options must be JSON-serializable ({e})", hint="pass plain values") from None
    return h.hexdigest()[:32]


def cache_path(key: str, cache_dir: str | os.PathLike = ".oa-cache") -> Path:
    return Path(cache_dir) / f"tokenized-{key}"


def cached(key: str, build_fn: Callable[[], Any], cache_dir: str | os.PathLike = ".oa-cache"):
    """Load the dataset saved under ``key``, or build it with ``build_fn()``, save it atomically and load it.

    Returns a memory-mapped ``datasets.Dataset`` (or ``DatasetDict``) either way.
    """
    import datasets

    final = cache_path(key, cache_dir)
    if final.exists():
        log.info("tokenized cache hit: %s", final)
    else:
        log.info("tokenized cache miss: building %s", final)
        built = build_fn()
        if not isinstance(built, datasets.Dataset | datasets.DatasetDict):
            raise TypeError(f"build_fn must return a datasets.Dataset, got {type(built).__name__}")
        with atomic_dir(final, overwrite=False) as tmp, _quiet(datasets):
            built.save_to_disk(str(tmp))
    try:
        return datasets.load_from_disk(str(final))
    except Exception as e:
        raise OAError(f"{final}: cannot load cached dataset: {' '.join(str(e).split())[:200]}",
                      hint=f"delete {final} to rebuild it") from None


@contextmanager
def _quiet(datasets):
    """No `datasets` progress bar while saving (the pipeline shows its own)."""
    was = datasets.utils.logging.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        if was:
            datasets.enable_progress_bars()
