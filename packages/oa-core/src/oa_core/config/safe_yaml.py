"""Reading config text: ``yaml.safe_load`` (no tags execute code) plus what it lets through silently — a key
given twice (the last one used to win) is an error naming both lines, and a document whose aliases expand to
more than :data:`MAX_VALUES` values (a "billion laughs") or refer to themselves is refused instead of expanded."""

from __future__ import annotations

import json
from typing import Any

import yaml

from oa_core.errors import ConfigError

MAX_VALUES = 100_000


class _Loader(yaml.SafeLoader):
    def construct_mapping(self, node, deep=False):
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # `<<: *base` merges are overridden by the mapping's own keys, as YAML says
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if isinstance(key, str | int | float | bool) and key in seen:
                raise _Duplicate(key, seen[key], line)
            seen[key] = line
        return super().construct_mapping(node, deep)


class _Duplicate(Exception):
    def __init__(self, key, first: int, again: int):
        super().__init__(key)
        self.key, self.first, self.again = key, first, again


def load_yaml(text: str, where: str) -> Any:
    """The value of a YAML document; :class:`ConfigError` (one line, ``where:line``) for the cases above."""
    try:
        data = yaml.load(text, Loader=_Loader)  # noqa: S506 (a SafeLoader subclass)
    except _Duplicate as d:
        raise ConfigError([f"{where}:{d.again}: duplicate key '{d.key}' (first given at line {d.first})"],
                          hint="give every key once") from None
    except RecursionError:
        raise ConfigError([f"{where}: the YAML is nested too deeply"]) from None
    check_size(data, where)
    return data


def load_json(text: str, where: str) -> Any:
    """JSON with duplicate keys refused (the last one would silently win)."""

    def pairs(items):
        keys = [k for k, _ in items]
        twice = next((k for k in keys if keys.count(k) > 1), None)
        if twice is not None:
            raise ConfigError([f"{where}: duplicate key '{twice}'"], hint="give every key once")
        return dict(items)

    return json.loads(text, object_pairs_hook=pairs)


def check_size(data: Any, where: str) -> None:
    """Refuse values whose aliases expand past :data:`MAX_VALUES` or form a cycle (counted without expanding)."""
    sizes: dict[int, int] = {}
    active: set[int] = set()

    def size(value: Any) -> int:
        if not isinstance(value, dict | list):
            return 1
        key = id(value)
        if key in active:
            raise ConfigError([f"{where}: a YAML alias refers to the value that contains it"],
                              hint="write the value out instead of the self-reference")
        if key not in sizes:
            active.add(key)
            children = [*value.keys(), *value.values()] if isinstance(value, dict) else value
            sizes[key] = 1 + sum(size(child) for child in children)
            active.discard(key)
        return sizes[key]

    try:
        total = size(data)
    except RecursionError:
        raise ConfigError([f"{where}: the config is nested too deeply"]) from None
    if total > MAX_VALUES:
        raise ConfigError([f"{where}: the config expands to {total:,} values through YAML aliases (at most "
                           f"{MAX_VALUES:,})"], hint="write the values out instead of aliases of aliases")
