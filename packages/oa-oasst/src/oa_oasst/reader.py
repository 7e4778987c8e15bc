"""Read OASST exports line by line into validated message trees.

Three line forms are recognised (a file may mix them):

* tree: ``{"message_tree_id", "tree_state", "prompt": {message with nested replies}}``
* nested root message: ``{"message_id", "parent_id": null, "replies": [...], ...}``
* flat message: one message per line with ``message_tree_id`` and ``parent_id`` and no ``replies``;
  these are grouped by tree, so they are held in memory until the end of the file.

Trees are streamed (constant memory). A bad line or tree raises :class:`RecordError` when ``strict``,
else it is skipped and counted in the :class:`Summary`.
"""

from __future__ import annotations

import gzip
import json
import os
from collections.abc import Callable, Iterator
from typing import Any

from pydantic import ValidationError

from oa_core.errors import OAError, RecordError
from oa_oasst import deepjson
from oa_oasst.schema import OasstMessage, OasstTree, count_messages
from oa_oasst.summary import Summary

HINT_TREE = "fix or remove that tree, or turn strict off to skip bad trees (they are counted)"
HINT_FORMAT = ("give an Open-Assistant export: JSON Lines (.jsonl or .jsonl.gz) with one message tree or "
               "message object per line")


class BadTree(Exception):
    """A problem in one tree: the line and field it is at, and how many messages are lost with it."""

    def __init__(self, line: int, field: str | None, message: str, messages: int = 1):
        self.line, self.field, self.messages = line, field, messages
        super().__init__(message)

    def describe(self, source: str) -> str:
        where = f"{source}:{self.line}"
        return f"{where}: field '{self.field}': {self}" if self.field else f"{where}: {self}"


Problem = tuple[str, str]  # (field path, message)


def _problems(err: ValidationError, *prefix: str | int) -> list[Problem]:
    return [(_field(*prefix, *e["loc"]), e["msg"]) for e in err.errors()]


def _field(*parts: str | int) -> str:
    return ".".join(str(p) for p in parts if p != "")


def _bad(line: int, problems: list[Problem], messages: int) -> BadTree:
    field, message = problems[0]
    more = f" (+{len(problems) - 1} more)" if len(problems) > 1 else ""
    return BadTree(line, field or None, message + more, messages)


def classify(obj: Any) -> str:
    """``tree``, ``root`` (nested root message) or ``message`` (flat); raises ValueError otherwise."""
    if not isinstance(obj, dict):
        raise ValueError(f"expected a JSON object, got {type(obj).__name__}")
    if "prompt" in obj:
        return "tree"
    if "message_id" in obj:
        replies = obj.get("replies")
        nested = isinstance(replies, list) and obj.get("parent_id") is None
        return "root" if nested and (replies or not obj.get("message_tree_id")) else "message"
    keys = ", ".join(list(obj)[:5]) + (", ..." if len(obj) > 5 else "")
    raise ValueError(f"neither a message tree (no 'prompt') nor a message (no 'message_id'); keys: {keys or 'none'}")


def tree_from_obj(obj: dict, form: str, line: int = 0) -> OasstTree:
    """Validate one ``tree`` or ``root`` form object (see :func:`classify`) and check its structure."""
    prefix = "prompt" if form == "tree" else ""
    raw = obj["prompt"] if form == "tree" else obj
    root, problems = build_messages(raw, prefix)
    if form == "tree":  # the tree's own fields (its messages are validated above)
        try:
            tree = OasstTree.model_validate({**obj, "prompt": root or _PLACEHOLDER})
        except ValidationError as e:
            problems = _problems(e) + problems
    if problems:
        raise _bad(line, problems, count_messages(raw))
    if form == "root":
        tree = OasstTree(message_tree_id=root.message_tree_id or root.message_id, tree_state=root.tree_state,
                         prompt=root)
    check_structure(tree.prompt, lambda node, path, field: (line, _field(path, field)), prefix)
    return tree


_PLACEHOLDER = OasstMessage.model_construct(message_id="-", text="", role="prompter")


Loc = tuple  # where a message is below the root: (its parent's Loc, its index in the replies), () for the root


def _path(prefix: str, loc: Loc) -> str:
    """``prompt.replies.0.replies.2`` for a Loc; built only for a problem (deep paths are long)."""
    indices = []
    while loc:
        loc, i = loc
        indices.append(i)
    return _field(prefix, *(f"replies.{i}" for i in reversed(indices)))


def build_messages(raw: Any, prefix: str = "") -> tuple[OasstMessage | None, list[Problem]]:
    """Validate a nested message dict one message at a time, so any depth works (pydantic's nested
    validation gives up a few hundred levels down). Returns the root, or None and every problem found."""
    problems: list[Problem] = []
    top: list[OasstMessage] = []
    stack: list[tuple[Any, Loc, list[OasstMessage]]] = [(raw, (), top)]
    while stack:
        node, loc, siblings = stack.pop()
        replies = node.get("replies") if isinstance(node, dict) else None
        shallow = {**node, "replies": []} if isinstance(replies, list) else node
        try:
            message = OasstMessage.model_validate(shallow)
        except ValidationError as e:
            problems += _problems(e, _path(prefix, loc))
            message = None
        if message is not None:
            siblings.append(message)
        if isinstance(replies, list):
            children = message.replies if message is not None else []
            stack.extend((replies[i], (loc, i), children) for i in reversed(range(len(replies))))
    return (None if problems else top[0]), problems


Locate = Callable[[OasstMessage, str, str], tuple[int, str]]


def check_structure(root: OasstMessage, locate: Locate, prefix: str = "") -> None:
    """Roles alternate from a prompter root, parent ids match, message ids are unique."""
    total = root.size()

    def fail(node: OasstMessage, loc: Loc, field: str, message: str):
        line, name = locate(node, _path(prefix, loc), field)
        raise BadTree(line, name, message, total)

    if root.role != "prompter":
        fail(root, (), "role", f"the root message must be a 'prompter' message, not '{root.role}'")
    if root.parent_id is not None:
        fail(root, (), "parent_id", f"the root message has parent_id '{root.parent_id}'")
    seen: set[str] = set()
    stack: list[tuple[OasstMessage, OasstMessage | None, Loc]] = [(root, None, ())]
    while stack:  # depth-first in file order, so the first problem in the file is reported
        node, parent, loc = stack.pop()
        if node.message_id in seen:
            fail(node, loc, "message_id",
                 f"duplicate message_id '{node.message_id}' (a cycle or a repeated message)")
        seen.add(node.message_id)
        if parent is not None:
            if node.parent_id is not None and node.parent_id != parent.message_id:
                fail(node, loc, "parent_id",
                     f"parent_id '{node.parent_id}' is not its parent's message_id '{parent.message_id}'")
            if node.role == parent.role:
                fail(node, loc, "role", f"a '{node.role}' message replies to a '{parent.role}' message")
        replies = node.replies or []
        stack.extend((replies[i], node, (loc, i)) for i in reversed(range(len(replies))))


def assemble(tree_id: str, items: list[tuple[int, OasstMessage]]) -> OasstTree:
    """Build one tree from its flat messages (``(line, message)`` in file order)."""
    lines: dict[str, int] = {}
    by_id: dict[str, OasstMessage] = {}
    n = len(items)
    for line, msg in items:
        if msg.message_id in by_id:
            raise BadTree(line, "message_id", f"duplicate message_id '{msg.message_id}' (first on line "
                          f"{lines[msg.message_id]})", n)
        lines[msg.message_id], by_id[msg.message_id] = line, msg
        msg.replies = []
    roots = [(line, m) for line, m in items if m.parent_id is None]
    if not roots:
        raise BadTree(items[0][0], "parent_id",
                      f"tree '{tree_id}' has no root message (parent_id null): a cycle", n)
    if len(roots) > 1:
        raise BadTree(roots[1][0], "parent_id", f"tree '{tree_id}' has a second root message (first on line "
                      f"{roots[0][0]})", n)
    for line, msg in items:
        if msg.parent_id is None:
            continue
        parent = by_id.get(msg.parent_id)
        if parent is None:
            raise BadTree(line, "parent_id",
                          f"parent '{msg.parent_id}' is not in tree '{tree_id}' (missing parent)", n)
        parent.replies.append(msg)
    root = roots[0][1]
    reached = _reachable(root)
    if len(reached) < n:
        line, msg = next((line, m) for line, m in items if m.message_id not in reached)
        raise BadTree(line, "parent_id", f"message '{msg.message_id}' is not reachable from the root (a cycle)", n)
    check_structure(root, lambda node, path, field: (lines[node.message_id], field))
    return OasstTree(message_tree_id=tree_id, tree_state=root.tree_state, prompt=root)


def _reachable(root: OasstMessage) -> set[str]:
    seen: set[str] = set()
    stack = [root]
    while stack:
        node = stack.pop()
        if node.message_id in seen:
            continue
        seen.add(node.message_id)
        stack.extend(node.replies or [])
    return seen


def iter_lines(path: str, progress: bool = False) -> Iterator[tuple[int, bytes]]:
    """``(line number, raw bytes)`` of a plain or gzipped file, with a progress bar over its bytes."""
    if not os.path.isfile(path):
        raise OAError(f"{path}: file not found", hint="give an OASST export (.jsonl or .jsonl.gz)")
    from tqdm import tqdm

    with open(path, "rb") as raw, tqdm(total=os.path.getsize(path), unit="B", unit_scale=True, desc="oasst",
                                       disable=None if progress else True, leave=False) as bar:
        stream = gzip.GzipFile(fileobj=raw, mode="rb") if path.endswith(".gz") else raw
        done = 0
        try:
            for number, data in enumerate(stream, 1):
                yield number, data
                pos = raw.tell()
                bar.update(pos - done)
                done = pos
        except (OSError, EOFError) as e:
            raise OAError(f"{path}: cannot read: {e}", hint="is it a complete .gz file?") from None


def parse_line(number: int, data: bytes) -> tuple[Any, str]:
    """The JSON object of one line and its form (see :func:`classify`); BadTree when it is neither."""
    try:
        obj = deepjson.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise BadTree(number, None, f"malformed JSON line: {getattr(e, 'msg', None) or e}", 0) from None
    try:
        return obj, classify(obj)
    except ValueError as e:
        raise BadTree(number, None, str(e), 0) from None


def read_trees(path: str, summary: Summary | None = None, strict: bool = False,
               progress: bool = False) -> Iterator[OasstTree]:
    """Valid trees of an export file; bad ones raise (``strict``) or are skipped and counted in ``summary``.

    A file whose first non-blank line is not a tree or a message, or that has none, is not an OASST
    export: that raises :class:`OAError` whatever ``strict`` says.
    """
    summary = summary if summary is not None else Summary()
    source = str(path)
    summary.source = summary.source or source
    flat: dict[str, list[tuple[int, OasstMessage]]] = {}

    def bad(problem: BadTree) -> None:
        text = problem.describe(source)
        if strict:
            raise RecordError(text, hint=HINT_TREE)
        summary.skip(text, problem.messages)

    first = True
    for number, data in iter_lines(source, progress):
        summary.lines += 1
        if not data.strip():
            continue
        try:
            obj, form = parse_line(number, data)
        except BadTree as e:
            if first:
                raise OAError(f"{source}:{number}: not an OASST export: {e}", hint=HINT_FORMAT) from None
            bad(e)
            continue
        first = False
        try:
            if form == "message":
                _collect(obj, number, flat)
                continue
            tree = tree_from_obj(obj, form, number)
        except BadTree as e:
            bad(e)
            continue
        summary.trees += 1
        summary.messages += tree.prompt.size()
        yield tree
    if first:
        raise OAError(f"{source}: empty file: no message trees or messages", hint=HINT_FORMAT)
    for tree_id, items in flat.items():
        try:
            tree = assemble(tree_id, items)
        except BadTree as e:
            bad(e)
            continue
        summary.trees += 1
        summary.messages += len(items)
        yield tree


def _collect(obj: dict, line: int, flat: dict[str, list[tuple[int, OasstMessage]]]) -> None:
    try:
        msg = OasstMessage.model_validate(obj)
    except ValidationError as e:
        raise _bad(line, _problems(e), count_messages(obj)) from None
    if msg.replies:
        raise BadTree(line, "replies", "only a root message (parent_id null) may nest its replies",
                      count_messages(obj))
    if not msg.message_tree_id:
        raise BadTree(line, "message_tree_id", "a flat message needs its message_tree_id", 1)
    flat.setdefault(msg.message_tree_id, []).append((line, msg))
