"""Reading config files: YAML/JSON layers with ``include``, ``--set`` overrides, and where each value came from."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from oa_core.config.safe_yaml import load_json, load_yaml
from oa_core.errors import ConfigError
from oa_core.io import UTF8_HINT, utf8_problem

OVERRIDE = "--set"
DEFAULT = "default"


def read_config_file(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError([f"{path}: config file not found"], hint="check the path")
    text = _utf8_text(path)
    try:
        data = load_json(text, str(path)) if path.suffix == ".json" else load_yaml(text, str(path))
    except json.JSONDecodeError as e:
        raise ConfigError([f"{path}:{e.lineno}:{e.colno}: invalid JSON: {e.msg}"]) from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        raise ConfigError([f"{where}: invalid YAML: {getattr(e, 'problem', None) or e}"]) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError([f"{path}: the top level must be a mapping of keys, not {type(data).__name__}"])
    return data


def _utf8_text(path: Path) -> str:
    raw = path.read_bytes()
    problem = utf8_problem(raw)
    if problem is not None:
        offset, what = problem
        line = raw.count(b"\n", 0, offset) + 1
        raise ConfigError([f"{path}:{line}: {what}"], hint=UTF8_HINT)
    return raw.decode("utf-8")


def flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(data, dict) and data:
        out: dict[str, Any] = {}
        for k, v in data.items():
            out.update(flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: data}


def merge(base: dict, top: dict) -> dict:
    out = dict(base)
    for k, v in top.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def load_layers(path: Path, _stack: tuple[Path, ...] = ()) -> tuple[dict[str, Any], dict[str, str]]:
    """Read ``path`` and the files it includes (bases first); returns (data, sources)."""
    path = path.resolve() if path.is_absolute() else path
    if path.resolve() in [p.resolve() for p in _stack]:
        chain = " -> ".join(str(p) for p in (*_stack, path))
        raise ConfigError([f"{_stack[-1]}: include: cycle {chain}"])
    data = read_config_file(path)
    includes = data.pop("include", None)
    if isinstance(includes, str):
        includes = [includes]
    if includes is not None and not (isinstance(includes, list) and all(isinstance(i, str) for i in includes)):
        raise ConfigError([f"{path}: include: must be a file path or a list of file paths"])
    merged: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for inc in includes or []:
        inc_path = path.parent / inc
        if not inc_path.is_file():
            raise ConfigError([f"{path}: include: '{inc}' not found (looked at {inc_path})"])
        base, base_sources = load_layers(inc_path, (*_stack, path))
        merged = merge(merged, base)
        sources = {k: v for k, v in sources.items() if k not in base_sources} | base_sources
    merged = merge(merged, data)
    mine = flatten(data)
    sources = {k: v for k, v in sources.items() if not any(covers(m, k) for m in mine)}
    sources.update({k: str(path) for k in mine})
    return merged, sources


def covers(new_key: str, old_key: str) -> bool:
    return old_key == new_key or old_key.startswith(new_key + ".") or new_key.startswith(old_key + ".")


def apply_overrides(data: dict, sources: dict[str, str], overrides: list[str]) -> dict:
    """Apply ``key.path=value`` overrides (values parsed as YAML: numbers, booleans, lists)."""
    data = json.loads(json.dumps(data))
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip() or any(not p for p in key.split(".")):
            raise ConfigError([f"{OVERRIDE} '{item}': expected key.path=value"], hint="e.g. --set train.learning_rate=1e-4")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        node = data
        parts = key.strip().split(".")
        for i, part in enumerate(parts[:-1]):
            if isinstance(node, list) and part.isdigit() and int(part) < len(node):
                node = node[int(part)]
                continue
            if not isinstance(node, dict):
                raise ConfigError([f"{OVERRIDE} '{item}': '{'.'.join(parts[:i])}' is not a mapping"])
            node = node.setdefault(part, {})
        last = parts[-1]
        if isinstance(node, list) and last.isdigit() and int(last) < len(node):
            node[int(last)] = value
        elif isinstance(node, dict):
            node[last] = value
        else:
            raise ConfigError([f"{OVERRIDE} '{item}': '{'.'.join(parts[:-1])}' is not a mapping"])
        sources = {k: v for k, v in sources.items() if not covers(key, k)}
        sources.update({k: OVERRIDE for k in flatten(value, key)})
        sources[key] = OVERRIDE
    return data, sources
