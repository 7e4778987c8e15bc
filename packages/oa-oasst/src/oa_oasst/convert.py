"""Pruned message trees -> core records: threads (SFT), ranked replies (reward model), preference pairs.

Each function returns the records and the ids of the messages they use.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterator

from oa_core.schema import Conversation, Message, PreferencePair, RankedReplies
from oa_oasst.options import TAG_FIELDS, PairOptions, RankedOptions, SftOptions
from oa_oasst.schema import OasstMessage

ROLES = {"prompter": "user", "assistant": "assistant"}
SOURCE = "oasst"


def best_first(replies: list[OasstMessage] | None) -> list[OasstMessage]:
    """Replies ordered by rank (0 is best); unranked ones last, in file order."""
    return sorted(replies or [], key=lambda m: (m.rank is None, m.rank or 0))


def _message(m: OasstMessage) -> Message:
    return Message(role=ROLES[m.role], content=m.text)


def _messages(path: list[OasstMessage]) -> list[Message]:
    return [_message(m) for m in path]


# ---------------------------------------------------------------- SFT threads


def compute_length(text: str) -> int:
    """Open-Assistant's length property: words // 5 + 1."""
    return len(re.findall(r"\w+", text)) // 5 + 1


def system_tag(reply: OasstMessage, options: SftOptions) -> str:
    """OA's metadata tag for an assistant reply, e.g. ``lang: en\\nquality: 0.8\\nlength: 12``.

    Fields are shuffled and each is dropped with its probability, deterministically per (seed, message).
    """
    values: dict[str, object] = {"lang": reply.lang}
    for name in ("quality", "humor", "creativity"):
        values[name] = reply.label(name)
    values["length"] = compute_length(reply.text)
    rng = random.Random(f"{options.seed}:{reply.message_id}")
    fields = list(TAG_FIELDS)
    rng.shuffle(fields)
    lines = []
    for name in fields:
        if rng.random() < options.drop_probability(name) or values[name] is None:
            continue
        value = values[name]
        lines.append(f"{name}: {value:0.1f}" if isinstance(value, float) else f"{name}: {value}")
    return "\n".join(lines)


def _conversation(tree_id: str, path: list[OasstMessage], options: SftOptions) -> Conversation:
    messages = []
    for m in path:
        if options.system_tag and m.role == "assistant":
            tag = system_tag(m, options)
            if tag:
                messages.append(Message(role="system", content=tag))
        messages.append(_message(m))
    meta = {"source": SOURCE, "message_tree_id": tree_id, "message_ids": [m.message_id for m in path]}
    return Conversation(messages=messages, metadata=meta)


def threads(tree_id: str, root: OasstMessage, options: SftOptions) -> tuple[list[Conversation], set[str]]:
    """Every thread from the root to an assistant reply that no longer thread extends (best-first order).

    With ``top_k`` only the k best-ranked replies of each message are followed.
    """
    out: list[Conversation] = []
    used: set[str] = set()
    path: list[OasstMessage] = []

    def visit(node: OasstMessage) -> bool:
        path.append(node)
        emitted = False
        for child in best_first(node.replies)[: options.top_k]:
            emitted = visit(child) or emitted
        if not emitted and node.role == "assistant":
            out.append(_conversation(tree_id, path, options))
            used.update(m.message_id for m in path)
            emitted = True
        path.pop()
        return emitted

    visit(root)
    return out, used


# ---------------------------------------------------------------- ranked replies and pairs


def ranked_forks(root: OasstMessage, min_replies: int) -> Iterator[tuple[list[OasstMessage], list[OasstMessage]]]:
    """``(path to a prompter message, its ranked assistant replies best-first)`` for every fork with
    at least ``min_replies`` ranked replies."""
    stack: list[tuple[OasstMessage, list[OasstMessage]]] = [(root, [])]
    while stack:
        node, above = stack.pop()
        path = [*above, node]
        if node.role == "prompter":
            ranked = [r for r in best_first(node.replies) if r.rank is not None]
            if len(ranked) >= min_replies:
                yield path, ranked
        stack.extend((child, path) for child in reversed(node.replies or []))


def ranked(tree_id: str, root: OasstMessage, options: RankedOptions) -> tuple[list[RankedReplies], set[str]]:
    """One :class:`RankedReplies` per fork: the thread up to the prompt, replies best-first."""
    out, used = [], set()
    for path, replies in ranked_forks(root, options.min_replies):
        meta = {"source": SOURCE, "message_tree_id": tree_id, "parent_id": path[-1].message_id,
                "reply_ids": [r.message_id for r in replies], "ranks": [r.rank for r in replies]}
        out.append(RankedReplies(prompt=_messages(path), replies=[r.text for r in replies], metadata=meta))
        used.update(m.message_id for m in (*path, *replies))
    return out, used


def pairs(tree_id: str, root: OasstMessage, options: PairOptions) -> tuple[list[PreferencePair], set[str]]:
    """Preference pairs per fork: the best reply vs each worse one (``best``) or every better/worse
    pair (``all``); replies with equal ranks are never paired."""
    out, used = [], set()
    for path, replies in ranked_forks(root, options.min_replies):
        prompt = _messages(path)
        winners = replies[:1] if options.pairs == "best" else replies
        for i, chosen in enumerate(winners):
            for rejected in replies[i + 1:]:
                if rejected.rank == chosen.rank:
                    continue
                meta = {"source": SOURCE, "message_tree_id": tree_id, "parent_id": path[-1].message_id,
                        "chosen_id": chosen.message_id, "rejected_id": rejected.message_id,
                        "chosen_rank": chosen.rank, "rejected_rank": rejected.rank}
                out.append(PreferencePair(prompt=prompt, chosen=[_message(chosen)], rejected=[_message(rejected)],
                                          metadata=meta))
                used.update((chosen.message_id, rejected.message_id))
        if any(r.message_id in used for r in replies):
            used.update(m.message_id for m in path)
    return out, used
