"""The effective config written beside a run's outputs: values, where each came from, secrets redacted."""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from oa_core.io import atomic_write_text

if TYPE_CHECKING:
    from oa_core.config.validate import LoadedConfig

SECRET_KEY = re.compile(r"(^|_)(token|secret|password|passwd|api_?key|access_?key|private_?key|credentials?)$", re.I)
NOT_SECRET_KEY = re.compile(r"(pad|eos|bos|unk|sep|cls|mask|eot|turn|special|chat)_token$", re.I)
SECRET_VALUE = re.compile(r"^(hf_|sk-|ghp_|xox[bp]-)[A-Za-z0-9_\-]{8,}$")
REDACTED = "***"


def redact(value: Any, key: str = "") -> Any:
    """Replace secret-looking values (by key name or token shape) with ``***``."""
    if isinstance(value, dict):
        return {k: redact(v, str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [redact(v, key) for v in value]
    if value is not None and not isinstance(value, bool) and SECRET_KEY.search(key) and not NOT_SECRET_KEY.search(key):
        return REDACTED
    if isinstance(value, str) and SECRET_VALUE.match(value):
        return REDACTED
    return value


def write_effective_config(loaded: LoadedConfig, out_dir: str | Path) -> Path:
    """Write ``effective_config.yaml`` (values + where each came from) into ``out_dir`` atomically."""
    doc = {"config_file": str(loaded.path), "config": loaded.effective(), "sources": loaded.sources}
    text = "# The effective config of this run. `sources`: where each value came from\n"
    text += "# (a file, --set, or default). Secrets are redacted.\n"
    text += yaml.safe_dump(doc, sort_keys=False, allow_unicode=True)
    return atomic_write_text(Path(out_dir) / "effective_config.yaml", text)
