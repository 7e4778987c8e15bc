"""Drop messages (with their subtrees) by tree state, language, flags, review result and labels."""

from __future__ import annotations

from collections import Counter

from oa_oasst.options import FilterOptions
from oa_oasst.schema import OasstMessage, OasstTree

BELOW_DROPPED = "below_dropped"


def drop_reason(msg: OasstMessage, options: FilterOptions) -> str | None:
    """Why ``msg`` is dropped (a short reason), or None to keep it."""
    if options.langs is not None and msg.lang not in options.langs:
        return "lang"
    if msg.deleted and not options.include_deleted:
        return "deleted"
    if msg.synthetic and not options.include_synthetic:
        return "synthetic"
    if options.require_review and msg.review_result is not True:
        return "review"
    for name, low in options.min_labels.items():
        value = msg.label(name)
        if value is not None and value < low:
            return f"label:{name}"
    for name, high in options.max_labels.items():
        value = msg.label(name)
        if value is not None and value > high:
            return f"label:{name}"
    return None


def prune(tree: OasstTree, options: FilterOptions, dropped: Counter) -> tuple[OasstMessage | None, int]:
    """Remove dropped messages in place; returns (root or None, messages kept) and counts drops by reason."""
    root = tree.prompt
    if options.tree_states is not None and tree.tree_state not in options.tree_states:
        dropped["tree_state"] += root.size()
        return None, 0
    reason = drop_reason(root, options)
    if reason:
        dropped[reason] += 1
        dropped[BELOW_DROPPED] += root.size() - 1
        return None, 0
    kept = 0
    stack = [root]
    while stack:
        node = stack.pop()
        kept += 1
        children = []
        for child in node.replies or []:
            reason = drop_reason(child, options)
            if reason:
                dropped[reason] += 1
                dropped[BELOW_DROPPED] += child.size() - 1
            else:
                children.append(child)
        node.replies = children
        stack.extend(children)
    return root, kept
