"""``json.loads`` for lines nested deeper than Python's recursion limit.

A message tree nests each reply two JSON levels below its parent, so a thread of a few hundred messages
already exceeds what the recursive standard parser accepts. :func:`loads` falls back to an iterative
parser then; it gives the same values and raises the same :class:`json.JSONDecodeError`.
"""

from __future__ import annotations

import json
import re
from json import JSONDecodeError
from json.decoder import scanstring
from typing import Any

_SPACE = re.compile(r"[ \t\n\r]*")
_NUMBER = re.compile(r"(-?(?:0|[1-9]\d*))(\.\d+)?([eE][-+]?\d+)?")
_CONSTANTS = {"null": None, "true": True, "false": False,
              "NaN": float("nan"), "Infinity": float("inf"), "-Infinity": float("-inf")}


def loads(data: str | bytes) -> Any:
    """Parse one JSON document of any nesting depth."""
    try:
        return json.loads(data)
    except RecursionError:
        pass
    if isinstance(data, bytes):
        data = data.decode(json.detect_encoding(data), "surrogatepass")
    return parse(data)


def parse(s: str) -> Any:
    """The iterative parser: containers being filled are kept on a stack, not on the call stack."""
    stack: list[tuple[dict | list, str | None]] = []
    i = _skip(s, 0)
    while True:
        value, i = _value_or_open(s, i, stack)
        if value is _OPENED:
            continue
        while True:  # put the value into its container; close every container that ends here
            if not stack:
                i = _skip(s, i)
                if i != len(s):
                    raise JSONDecodeError("Extra data", s, i)
                return value
            container, key = stack[-1]
            if isinstance(container, dict):
                container[key] = value
            else:
                container.append(value)
            i = _skip(s, i)
            if s[i:i + 1] == ",":
                i = _skip(s, i + 1)
                if isinstance(container, dict):
                    key, i = _key(s, i)
                    stack[-1] = (container, key)
                break
            if s[i:i + 1] != ("}" if isinstance(container, dict) else "]"):
                raise JSONDecodeError("Expecting ',' delimiter", s, i)
            stack.pop()
            value, i = container, i + 1


_OPENED = object()


def _value_or_open(s: str, i: int, stack: list) -> tuple[Any, int]:
    """A scalar or empty container at ``i``, or ``_OPENED`` after pushing a non-empty container."""
    char = s[i:i + 1]
    if char == '"':
        return scanstring(s, i + 1, True)
    if char in ("{", "["):
        j = _skip(s, i + 1)
        if s[j:j + 1] == ("}" if char == "{" else "]"):
            return ({} if char == "{" else []), j + 1
        if char == "{":
            key, j = _key(s, j)
            stack.append(({}, key))
        else:
            stack.append(([], None))
        return _OPENED, j
    number = _NUMBER.match(s, i)
    if number:
        integer, fraction, exponent = number.groups()
        text = number.group()
        return (float(text) if fraction or exponent else int(integer)), number.end()
    for word, value in _CONSTANTS.items():
        if s.startswith(word, i):
            return value, i + len(word)
    raise JSONDecodeError("Expecting value", s, i)


def _key(s: str, i: int) -> tuple[str, int]:
    """An object key and its colon at ``i``; returns the key and where its value starts."""
    if s[i:i + 1] != '"':
        raise JSONDecodeError("Expecting property name enclosed in double quotes", s, i)
    key, i = scanstring(s, i + 1, True)
    i = _skip(s, i)
    if s[i:i + 1] != ":":
        raise JSONDecodeError("Expecting ':' delimiter", s, i)
    return key, _skip(s, i + 1)


def _skip(s: str, i: int) -> int:
    return _SPACE.match(s, i).end()
