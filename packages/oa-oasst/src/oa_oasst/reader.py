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
from oa_oasst.schema import OasstMessage, OasstTree, count_messages
from oa_oasst.summary import Summary

HINT_TREE = "fix or remove that tree, or turn strict off to skip bad trees (they are counted)"


class BadTree(Exception):
    """A problem in one tree: the line and field it is at, and how many messages are lost with it."""

    def __init__(self, line: int, field: str | None, message: str, messages: int = 1):
        self.line, self.field, self.messages = line, field, messages
        super().__init__(message)

    def describe(self, source: str) -> str:
        where = f"{source}:{self.line}"
        return f"{where}: field '{self.field}': {self}" if self.field else f"{where}: {self}"


def _validation_error(line: int, err: ValidationError, messages: int) -> BadTree:
    first = err.errors()[0]
    more = f" (+{err.error_count() - 1} more)" if err.error_count() > 1 else ""
    return BadTree(line, ".".join(str(p) for p in first["loc"]) or None, first["msg"] + more, messages)


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
    raise ValueError("neither a message tree (no 'prompt') nor a message (no 'message_id')")


def tree_from_obj(obj: dict, form: str, line: int = 0) -> OasstTree:
    """Validate one ``tree`` or ``root`` form object (see :func:`classify`) and check its structure."""
    raw = obj["prompt"] if form == "tree" else obj
    try:
        if form == "tree":
            tree = OasstTree.model_validate(obj)
        else:
            root = OasstMessage.model_validate(obj)
            tree = OasstTree(message_tree_id=root.message_tree_id or root.message_id, tree_state=root.tree_state,
                             prompt=root)
    except ValidationError as e:
        raise _validation_error(line, e, count_messages(raw)) from None
    prefix = "prompt" if form == "tree" else ""
    check_structure(tree.prompt, lambda node, path, field: (line, ".".join(p for p in (path, field) if p)), prefix)
    return tree


Locate = Callable[[OasstMessage, str, str], tuple[int, str]]


def check_structure(root: OasstMessage, locate: Locate, prefix: str = "") -> None:
    """Roles alternate from a prompter root, parent ids match, message ids are unique."""
    total = root.size()

    def fail(node: OasstMessage, path: str, field: str, message: str):
        line, name = locate(node, path, field)
        raise BadTree(line, name, message, total)

    if root.role != "prompter":
        fail(root, prefix, "role", f"the root message must be a 'prompter' message, not '{root.role}'")
    if root.parent_id is not None:
        fail(root, prefix, "parent_id", f"the root message has parent_id '{root.parent_id}'")
    seen: set[str] = set()
    stack = [(root, None, prefix)]
    while stack:  # depth-first in file order, so the first problem in the file is reported
        node, parent, path = stack.pop()
        if node.message_id in seen:
            fail(node, path, "message_id",
                 f"duplicate message_id '{node.message_id}' (a cycle or a repeated message)")
        seen.add(node.message_id)
        if parent is not None:
            if node.parent_id is not None and node.parent_id != parent.message_id:
                fail(node, path, "parent_id",
                     f"parent_id '{node.parent_id}' is not its parent's message_id '{parent.message_id}'")
            if node.role == parent.role:
                fail(node, path, "role", f"a '{node.role}' message replies to a '{parent.role}' message")
        for i, child in reversed(list(enumerate(node.replies or []))):
            stack.append((child, node, f"{path}.replies.{i}" if path else f"replies.{i}"))


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


def read_trees(path: str, summary: Summary, strict: bool = False, progress: bool = False) -> Iterator[OasstTree]:
    """Valid trees of an export file; bad ones raise (``strict``) or are skipped and counted."""
    source = str(path)
    summary.source = summary.source or source
    flat: dict[str, list[tuple[int, OasstMessage]]] = {}

    def bad(problem: BadTree) -> None:
        text = problem.describe(source)
        if strict:
            raise RecordError(text, hint=HINT_TREE)
        summary.skip(text, problem.messages)

    for number, data in iter_lines(source, progress):
        summary.lines += 1
        if not data.strip():
            continue
        try:
            obj = json.loads(data)
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            bad(BadTree(number, None, f"malformed JSON line: {getattr(e, 'msg', None) or e}", 0))
            continue
        try:
            form = classify(obj)
        except ValueError as e:
            bad(BadTree(number, None, str(e), 0))
            continue
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
        raise _validation_error(line, e, count_messages(obj)) from None
    if msg.replies:
        raise BadTree(line, "replies", "only a root message (parent_id null) may nest its replies",
                      count_messages(obj))
    if not msg.message_tree_id:
        raise BadTree(line, "message_tree_id", "a flat message needs its message_tree_id", 1)
    flat.setdefault(msg.message_tree_id, []).append((line, msg))
