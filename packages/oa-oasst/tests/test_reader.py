"""Reading exports: the three line forms, bad lines and trees (skipped and counted, or strict)."""

import copy
import gzip
import json
import random

import pytest

from oa_core.errors import OAError, RecordError
from oa_oasst.formats import iter_records
from oa_oasst.options import SftOptions
from oa_oasst.reader import read_trees
from oa_oasst.summary import Summary


def flatten(tree):
    """The flat message-per-line form of a tree object."""
    out, stack = [], [tree["prompt"]]
    while stack:
        m = stack.pop()
        out.append({k: v for k, v in m.items() if k != "replies"} | {"message_tree_id": tree["message_tree_id"]})
        stack.extend(m.get("replies") or [])
    return out


def read(path, strict=False):
    summary = Summary(warn=False)
    trees = list(read_trees(path, summary, strict=strict))
    return trees, summary


def test_tree_root_and_flat_forms_read_alike(jsonl, small_path, write_lines):
    trees = jsonl(small_path)
    flat = [m for t in trees for m in flatten(t)]
    random.Random(0).shuffle(flat)
    paths = {
        "tree": small_path,
        "root": write_lines([t["prompt"] for t in trees], "root.jsonl"),
        "flat": write_lines(flat, "flat.jsonl"),
    }
    dumps = {}
    for form, path in paths.items():
        summary = Summary()
        dumps[form] = sorted(json.dumps(r.model_dump(), sort_keys=True)
                             for r in iter_records(path, "sft", SftOptions(langs=["en"]), summary))
        assert summary.messages == 15 and summary.trees == 2 and summary.records == 4, form
    assert dumps["tree"] == dumps["root"] == dumps["flat"]


def test_gzip(jsonl, small_path, tmp_path):
    gz = tmp_path / "trees.jsonl.gz"
    with gzip.open(gz, "wt", encoding="utf-8") as f:
        f.writelines(json.dumps(t) + "\n" for t in jsonl(small_path))
    trees, summary = read(str(gz))
    assert [t.message_tree_id for t in trees] == ["P0", "Q0"] and summary.messages == 15
    broken = tmp_path / "broken.jsonl.gz"
    broken.write_bytes(gz.read_bytes()[:200])
    with pytest.raises(OAError, match="broken.jsonl.gz: cannot read"):
        read(str(broken))


def test_missing_file(tmp_path):
    with pytest.raises(OAError, match="file not found"):
        read(str(tmp_path / "nope.jsonl"))


def bad_variants(tree):
    """(description, object, expected problem) for broken copies of the small tree P0."""
    unknown_role = copy.deepcopy(tree)
    unknown_role["prompt"]["replies"][1]["role"] = "moderator"
    same_roles = copy.deepcopy(tree)
    same_roles["prompt"]["replies"][0]["replies"][0]["role"] = "assistant"
    wrong_parent = copy.deepcopy(tree)
    wrong_parent["prompt"]["replies"][2]["parent_id"] = "elsewhere"
    duplicate = copy.deepcopy(tree)
    duplicate["prompt"]["replies"][1]["message_id"] = "A1"
    assistant_root = copy.deepcopy(tree)
    assistant_root["prompt"]["role"] = "assistant"
    no_text = copy.deepcopy(tree)
    del no_text["prompt"]["replies"][0]["text"]
    return [
        (unknown_role, "field 'prompt.replies.1.role': Input should be 'prompter' or 'assistant'"),
        (same_roles, "field 'prompt.replies.0.replies.0.role': a 'assistant' message replies to a 'assistant'"),
        (wrong_parent, "field 'prompt.replies.2.parent_id': parent_id 'elsewhere' is not its parent's"),
        (duplicate, "field 'prompt.replies.1.message_id': duplicate message_id 'A1'"),
        (assistant_root, "field 'prompt.role': the root message must be a 'prompter' message"),
        (no_text, "field 'prompt.replies.0.text': Field required"),
    ]


def test_bad_trees_are_skipped_and_counted(jsonl, small_path, write_lines):
    p0, q0 = jsonl(small_path)
    for broken, problem in bad_variants(p0):
        path = write_lines([broken, "{not json", [1, 2], {"foo": 1}, q0])
        trees, summary = read(path)
        assert [t.message_tree_id for t in trees] == ["Q0"]
        assert summary.warnings[0].startswith(f"{path}:1: {problem}")
        assert summary.warnings[1].startswith(f"{path}:2: malformed JSON line")
        assert summary.warnings[2] == f"{path}:3: expected a JSON object, got list"
        assert "neither a message tree" in summary.warnings[3] and summary.warnings[3].startswith(f"{path}:4:")
        assert summary.bad_trees == 4 and summary.lines == 5
        assert summary.messages == 12 + 3 and summary.invalid == 12  # every message of the broken tree


def test_strict_raises_one_line_with_hint(jsonl, small_path, write_lines):
    p0, q0 = jsonl(small_path)
    for broken, problem in bad_variants(p0):
        path = write_lines([q0, broken])
        with pytest.raises(RecordError) as info:
            read(path, strict=True)
        assert str(info.value).startswith(f"{path}:2: {problem}")
        assert "\n" not in str(info.value) and info.value.hint


def test_flat_export_problems(jsonl, small_path, write_lines):
    p0, _ = jsonl(small_path)
    flat = flatten(p0)  # P0 first, then depth-first
    by_id = {m["message_id"]: i for i, m in enumerate(flat)}

    def variant(**changes):
        lines = copy.deepcopy(flat)
        for mid, fields in changes.items():
            lines[by_id[mid]].update(fields)
        return lines

    cases = [
        (variant(A7={"parent_id": "GONE"}), by_id["A7"], "field 'parent_id': parent 'GONE' is not in tree 'P0'"),
        (variant(A1={"parent_id": "P2"}), by_id["A1"], "field 'parent_id': message 'A1' is not reachable from the root"),
        (variant(P0={"parent_id": "A1"}), by_id["P0"], "field 'parent_id': tree 'P0' has no root message"),
        (variant(A6={"parent_id": None}), by_id["A6"], "field 'parent_id': tree 'P0' has a second root"),
        (variant(A6={"message_id": "A1"}), max(by_id["A6"], by_id["A1"]), "field 'message_id': duplicate message_id 'A1'"),
        (variant(A3={"role": "prompter"}), by_id["A3"], "field 'role': a 'prompter' message replies to a 'prompter'"),
    ]
    for lines, index, problem in cases:
        path = write_lines(lines)
        trees, summary = read(path)
        assert trees == [] and summary.invalid == summary.messages == 12, problem
        assert len(summary.warnings) == 1 and summary.warnings[0].startswith(f"{path}:{index + 1}: {problem}")
    lines = copy.deepcopy(flat)
    del lines[0]["message_tree_id"]
    trees, summary = read(write_lines(lines))
    assert "field 'message_tree_id': a flat message needs its message_tree_id" in summary.warnings[0]
    assert summary.messages == summary.invalid == 12  # the root line, then its orphaned tree (11)


def test_flat_form_edge_cases(jsonl, small_path, write_lines):
    p0, _ = jsonl(small_path)
    flat = flatten(p0)
    for m in flat:
        m["replies"] = []  # a flat export written with empty reply lists: still grouped by tree
    trees, summary = read(write_lines(flat))
    assert [t.prompt.size() for t in trees] == [12] and summary.bad_trees == 0
    nested_child = copy.deepcopy(p0["prompt"]["replies"][0]) | {"message_tree_id": "P0"}  # A1 with its subtree
    path = write_lines([nested_child])
    trees, summary = read(path)
    assert summary.warnings == [f"{path}:1: field 'replies': only a root message (parent_id null) may nest its replies"]
    assert summary.invalid == summary.messages == 5
