"""Where a model or tokenizer comes from: a local folder or a hub id, with one-line errors."""

from __future__ import annotations

import os
from pathlib import Path

from oa_core.errors import OAError


def is_offline() -> bool:
    from huggingface_hub import constants

    return constants.HF_HUB_OFFLINE or any(
        os.environ.get(v, "").lower() in ("1", "true", "yes") for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    )


def looks_local(path: str) -> bool:
    """A path meant as a local folder (absolute, relative with ./ or ~, or more than one '/')."""
    return path.startswith(("/", ".", "~")) or path.count("/") > 1 or os.sep != "/" and os.sep in path


def resolve_source(path: str, key: str) -> tuple[str, bool]:
    """``(path, local)`` for a model/tokenizer source; a one-line error when a local folder is missing."""
    expanded = Path(path).expanduser()
    if expanded.is_dir():
        return str(expanded), True
    if expanded.exists() or looks_local(path):
        what = "is not a folder" if expanded.exists() else "not found"
        raise OAError(f"{key}: local model folder '{path}' {what}", hint="check the path (a hub id looks like 'org/name')")
    return path, False


def load_error(key: str, path: str, local: bool, err: Exception) -> OAError:
    """A one-line error for a failed ``from_pretrained`` of ``path`` (named by config ``key``)."""
    first = " ".join(str(err).split())[:200]
    if local:
        return OAError(f"{key}: cannot load '{path}': {first}", hint="is it a complete transformers model folder?")
    if is_offline():
        return OAError(
            f"{key}: '{path}' is not a local folder and is not in the hub cache (offline mode)",
            hint="download it first, point to a local folder, or unset HF_HUB_OFFLINE",
        )
    return OAError(f"{key}: cannot load '{path}' from the hub: {first}", hint="check the id, revision and your network")
