"""Which first-party package provides a config section, method or command, so that a name missing because its
package is not installed says which package to install (instead of "unknown key" or "no such command")."""

from __future__ import annotations

from importlib import metadata

PROVIDERS: dict[str, dict[str, str]] = {
    "config_section": {"data": "oa-data", "peft": "oa-train", "freeze": "oa-train", "new_tokens": "oa-train",
                       "kernels": "oa-kernels"},
    "method": {"sft": "oa-train", "pretrain": "oa-train"},
    "generator": {"hf": "oa-infer", "vllm": "oa-infer"},
    "command": {"train": "oa-train", "preview": "oa-data", "validate": "oa-data", "stats": "oa-data",
                "oasst": "oa-oasst", "merge": "oa-infer", "chat": "oa-infer",
                "infer": "oa-infer", "augment": "oa-augment"},
}


def missing_package(kind: str, name: str) -> str | None:
    """``"<what> comes from oa-x, which is not installed (...)"`` when ``name`` belongs to a first-party package
    that is not installed; None otherwise."""
    package = PROVIDERS.get(kind, {}).get(name)
    if package is None:
        return None
    try:
        metadata.version(package)
        return None  # installed: the name is missing for another reason
    except metadata.PackageNotFoundError:
        return (f"{kind.replace('_', ' ')} '{name}' comes from {package}, which is not installed "
                f"(pip install ./packages/{package} from the oa repository)")
