"""Deep trees (a 3,000-message thread, a tree 600 levels deep) are read, filtered and converted without
recursion: each used to end in a RecursionError or a pydantic recursion error."""

import json

import pytest

from oa_core.errors import RecordError
from oa_oasst import deepjson
from oa_oasst.formats import iter_records
from oa_oasst.options import PairOptions, RankedOptions, SftOptions
from oa_oasst.summary import Summary


def message(mid, parent, depth, rank=None, **fields):
    return {"message_id": mid, "parent_id": parent, "text": f"text {mid}",
            "role": "assistant" if depth % 2 else "prompter", "lang": "en", "review_result": True,
            "deleted": False, "synthetic": False, "rank": rank, **fields}


def chain(depth, side_replies=False):
    """The main thread m0..m{depth-1} (rank 0); with ``side_replies`` every assistant m{i} has a ranked
    sibling s{i} (rank 1, no replies). Returns [(message, its side sibling or None)] top-down."""
    out = []
    for i in range(depth):
        parent = f"m{i - 1}" if i else None
        ranked = i % 2 == 1
        side = message(f"s{i}", parent, i, rank=1) if side_replies and ranked else None
        out.append((message(f"m{i}", parent, i, rank=0 if ranked else None), side))
    return out


def tree_line(levels):
    """One tree-form JSON line, written piece by piece (json.dumps itself recurses too deeply)."""
    parts, ends = [], []
    for main, side in levels:
        parts.append(json.dumps(main)[:-1] + ', "replies": [')
        ends.append("]}" + (", " + json.dumps(side | {"replies": []}) if side else ""))
    body = "".join(parts) + "".join(reversed(ends))
    return '{"message_tree_id": "m0", "tree_state": "ready_for_export", "prompt": ' + body + "}"


def flat_lines(levels):
    rows = [m for main, side in levels for m in (main, side) if m]
    return [json.dumps(m | {"message_tree_id": "m0"}) for m in rows]


def records(path, kind, options):
    summary = Summary(warn=False)
    return list(iter_records(path, kind, options, summary)), summary


def test_a_3000_message_thread(write_lines):
    levels = chain(3000)
    for form, lines in (("tree", [tree_line(levels)]), ("flat", flat_lines(levels))):
        path = write_lines(lines, f"{form}.jsonl")
        (thread,), summary = records(path, "sft", SftOptions(top_k=1))
        assert thread.metadata["message_ids"] == [f"m{i}" for i in range(3000)], form
        assert [m.content for m in thread.messages[-2:]] == ["text m2998", "text m2999"]
        assert summary.messages == summary.used == 3000
    levels[10][0]["deleted"] = True
    _, summary = records(write_lines(flat_lines(levels)), "sft", SftOptions())
    assert dict(summary.dropped) == {"deleted": 1, "below_dropped": 2989} and summary.used == 10


def test_a_tree_600_levels_deep(write_lines):
    levels = chain(600, side_replies=True)
    path = write_lines([tree_line(levels)])
    threads, summary = records(path, "sft", SftOptions())
    assert len(threads) == 300 + 1 and summary.messages == summary.used == 900
    assert max(len(t.messages) for t in threads) == 600
    (best,), _ = records(path, "sft", SftOptions(top_k=1))
    assert best.metadata["message_ids"] == [f"m{i}" for i in range(600)]
    forks, _ = records(path, "ranked", RankedOptions())
    assert len(forks) == 300 and len(forks[-1].prompt) == 599 and forks[-1].replies == ["text m599", "text s599"]
    pairs, _ = records(path, "pairs", PairOptions())
    assert {(p.metadata["chosen_id"][1:], p.metadata["rejected_id"][1:]) for p in pairs} == {
        (str(i), str(i)) for i in range(1, 600, 2)}


def test_a_problem_deep_down_names_its_path(write_lines):
    levels = chain(600)
    levels[500][0]["role"] = "moderator"
    path = write_lines([tree_line(levels)])
    with pytest.raises(RecordError) as info:
        records(path, "sft", SftOptions(strict=True))
    field = "prompt" + ".replies.0" * 500 + ".role"
    assert str(info.value).startswith(f"{path}:1: field '{field}': Input should be 'prompter' or 'assistant'")
    assert "\n" not in str(info.value)


def test_iterative_json_parser_agrees_with_json():
    docs = ['{}', ' [] ', '{"a": [1, 2.5, -3e2, true, false, null, "x\\u00e9\\n"], "b": {"c": {}}, "d": [[], [{}]]}',
            '"s"', '-0.5E+3', '[NaN, Infinity, -Infinity]', '{"a": 1, "a": 2}']
    for doc in docs:
        assert repr(deepjson.parse(doc)) == repr(json.loads(doc)), doc
    for bad in ['', '[1,]', '{"a" 1}', '{a: 1}', '[1 2]', '{"a": 1', '[1] x', '01', '"open', '["\x01"]']:
        with pytest.raises(json.JSONDecodeError) as ours:
            deepjson.parse(bad)
        with pytest.raises(json.JSONDecodeError) as theirs:
            json.loads(bad)
        assert (ours.value.msg, ours.value.pos) == (theirs.value.msg, theirs.value.pos), bad
    deep = deepjson.loads(b"[" * 50_000 + b"]" * 50_000)
    depth = 1
    while deep:
        deep, depth = deep[0], depth + 1
    assert depth == 50_000
