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


def follows(parent: OasstMessage, child: OasstMessage, top_k: int | None) -> bool:
    """Open-Assistant's ``top_k`` rule: an assistant reply is followed when its rank is below ``top_k``,
    or, unranked, when it is its parent's only reply; prompter messages are always followed."""
    if top_k is None or child.role != "assistant":
        return True
    if child.rank is None:
        return len(parent.replies or []) == 1
    return child.rank < top_k


def walk(root: OasstMessage, top_k: int | None = None) -> Iterator[list[OasstMessage]]:
    """The path from the root to each message that :func:`follows` reaches, depth-first and best-first.

    Iterative (threads can be thousands of messages long); the path is one list updated in place.
    """
    path: list[OasstMessage] = []
    stack = [(root, 0)]
    while stack:
        node, depth = stack.pop()
        del path[depth:]
        path.append(node)
        yield path
        stack.extend((child, depth + 1) for child in reversed(best_first(node.replies))
                     if follows(node, child, top_k))


def ends_thread(message: OasstMessage) -> bool:
    """Open-Assistant's thread ends: an assistant reply without replies, or one whose first reply
    (best-ranked, then file order) is a prompter message without replies."""
    if message.role != "assistant":
        return False
    first = best_first(message.replies)[:1]
    return not first or not first[0].replies


def threads(tree_id: str, root: OasstMessage, options: SftOptions) -> tuple[list[Conversation], set[str]]:
    """One conversation per thread end (:func:`ends_thread`) that :func:`walk` reaches, best-first."""
    out: list[Conversation] = []
    used: set[str] = set()
    for path in walk(root, options.top_k):
        if ends_thread(path[-1]):
            out.append(_conversation(tree_id, path, options))
            used.update(m.message_id for m in path)
    return out, used


# ---------------------------------------------------------------- ranked replies and pairs


def ranked_forks(root: OasstMessage, min_replies: int,
                 top_k: int | None = None) -> Iterator[tuple[list[OasstMessage], list[OasstMessage]]]:
    """``(path to a prompter message, its ranked assistant replies best-first)`` for every prompter
    message that :func:`walk` reaches and that has at least ``min_replies`` ranked replies."""
    for path in walk(root, top_k):
        if path[-1].role == "prompter":
            ranked = [r for r in best_first(path[-1].replies) if r.rank is not None]
            if len(ranked) >= min_replies:
                yield list(path), ranked


def ranked(tree_id: str, root: OasstMessage, options: RankedOptions) -> tuple[list[RankedReplies], set[str]]:
    """One :class:`RankedReplies` per fork: the thread up to the prompt, replies best-first."""
    out, used = [], set()
    for path, replies in ranked_forks(root, options.min_replies, options.top_k):
        meta = {"source": SOURCE, "message_tree_id": tree_id, "parent_id": path[-1].message_id,
                "reply_ids": [r.message_id for r in replies], "ranks": [r.rank for r in replies]}
        out.append(RankedReplies(prompt=_messages(path), replies=[r.text for r in replies], metadata=meta))
        used.update(m.message_id for m in (*path, *replies))
    return out, used


def pairs(tree_id: str, root: OasstMessage, options: PairOptions) -> tuple[list[PreferencePair], set[str]]:
    """Preference pairs per fork: the best reply vs each worse one (``best``) or every better/worse
    pair (``all``); replies with equal ranks are never paired."""
    out, used = [], set()
    for path, replies in ranked_forks(root, options.min_replies, options.top_k):
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
