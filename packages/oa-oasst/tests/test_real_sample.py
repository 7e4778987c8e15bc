"""The shipped real sample (100 English trees, examples/data/oasst): counts, forms, round trip."""

import json

import pytest

from oa_core.schema import validate_record
from oa_oasst.export import export
from oa_oasst.formats import CONVERSIONS


def kept(node):
    """Default filters, written independently of oa_oasst.filters."""
    return not node["deleted"] and not node["synthetic"] and node["review_result"] is True


def oracle(trees):
    """Counts of ranked forks and best-vs-rest pairs by a direct walk over the raw dicts (threads are
    checked against Open-Assistant's own logic in test_open_assistant.py)."""
    counts = {"ranked": 0, "pairs": 0}
    for tree in trees:
        stack = [tree["prompt"]] if kept(tree["prompt"]) else []
        while stack:
            node = stack.pop()
            children = [c for c in node.get("replies") or [] if kept(c)]
            ranks = sorted(c["rank"] for c in children if c.get("rank") is not None)
            if node["role"] == "prompter" and len(ranks) >= 2:
                counts["ranked"] += 1
                counts["pairs"] += sum(r > ranks[0] for r in ranks)
            stack.extend(children)
    return counts


@pytest.fixture(scope="module")
def exported(tmp_path_factory, request):
    sample = request.config.rootpath / "examples" / "data" / "oasst"
    out = tmp_path_factory.mktemp("real")
    results = {}
    for kind in CONVERSIONS:
        for form, name in (("tree", "en_100_tree.jsonl"), ("flat", "en_100_messages.jsonl.gz")):
            dst = out / f"{kind}.{form}.jsonl"
            summary = export(str(sample / name), str(dst), kind, CONVERSIONS[kind].options(langs=["en"]))
            results[kind, form] = (summary, dst.read_text(encoding="utf-8").splitlines())
    return sample, results


def test_counts_match_an_independent_walk(exported, jsonl):
    sample, results = exported
    expected = oracle(jsonl(sample / "en_100_tree.jsonl"))
    assert expected == {"ranked": 207, "pairs": 417}
    for kind, n in expected.items():
        summary, lines = results[kind, "tree"]
        assert summary.records == len(lines) == n


def test_every_message_is_accounted_for(exported):
    _, results = exported
    for (kind, form), (summary, _) in results.items():
        assert summary.lines == (100 if form == "tree" else 1167)
        assert summary.trees == 100 and summary.bad_trees == 0
        assert summary.messages == summary.accounted == 1167, (kind, form)
        assert dict(summary.dropped) == {"synthetic": 5, "below_dropped": 17}


def test_flat_export_gives_the_same_records(exported):
    _, results = exported
    for kind in CONVERSIONS:
        assert sorted(results[kind, "tree"][1]) == sorted(results[kind, "flat"][1])


def test_rows_load_back_as_core_records(exported):
    _, results = exported
    kinds = {"sft": "conversation", "ranked": "ranked_replies", "pairs": "preference"}
    for kind in CONVERSIONS:
        for i, line in enumerate(results[kind, "tree"][1]):
            record = validate_record(json.loads(line), source="export", index=i)
            assert record.kind == kinds[kind]
    first = json.loads(results["sft", "tree"][1][0])
    assert first["messages"][0]["role"] == "user" and first["metadata"]["source"] == "oasst"


def test_summary_text_names_every_bucket(exported):
    summary, _ = exported[1]["sft", "tree"]
    text = summary.text()
    assert summary.used + summary.unused == 1167 - 22
    assert f"1167 in = {summary.used} used + {summary.unused} unused" in text
    assert "22 dropped (below_dropped 17, synthetic 5)" in text
    data = summary.as_dict()
    assert data["used"] + data["unused"] + data["invalid"] + sum(data["dropped"].values()) == data["messages"]
