"""SFT threads on a small hand-checked tree (tests/data/small_trees.jsonl, tree P0 drawn below).

P0 "What is 2+2?"
├── A1 rank 0 "4"            ── P2 rank 0 "Why?" ── A3 rank 1 "Because addition." / A4 rank 0 "By counting."
│                            └─ P5 rank 1 "Thanks" (no answer)
├── A6 rank 2 "Five" (quality 0.1)
├── A7 rank 1 "Four."        ── P8 "Sure?" (no answer)
├── A9 deleted               ── P10
└── A11 lang de "Vier"
"""

import pytest

from oa_oasst.formats import CONVERSIONS, iter_records
from oa_oasst.options import PairOptions, SftOptions
from oa_oasst.summary import Summary


@pytest.fixture
def run(small_path):
    def run(**options):
        summary = Summary()
        records = list(iter_records(small_path, "sft", SftOptions(**options), summary))
        return records, summary

    return run


def texts(record):
    return [(m.role, m.content) for m in record.messages]


def test_every_thread_best_first(run):
    records, summary = run(langs=["en"])
    assert [r.metadata["message_ids"] for r in records] == [
        ["P0", "A1", "P2", "A4"], ["P0", "A1", "P2", "A3"], ["P0", "A7"], ["P0", "A6"],
    ]
    assert texts(records[0]) == [("user", "What is 2+2?"), ("assistant", "4"), ("user", "Why?"),
                                 ("assistant", "By counting.")]
    assert texts(records[2]) == [("user", "What is 2+2?"), ("assistant", "Four.")]
    assert all(r.metadata["message_tree_id"] == "P0" for r in records)
    # tree Q0: B1 synthetic and B2 failed review are dropped, its prompt alone makes no thread
    assert summary.messages == 15
    assert summary.used == 7 and summary.unused == 3  # P5, P8 and Q0
    assert dict(summary.dropped) == {"deleted": 1, "below_dropped": 1, "lang": 1, "synthetic": 1, "review": 1}
    assert summary.accounted == summary.messages and summary.records == 4


def test_other_languages_kept_without_lang_filter(run):
    records, _ = run()
    assert [r.metadata["message_ids"] for r in records][-1] == ["P0", "A11"]
    assert len(records) == 5


def test_top_k_follows_best_replies(run):
    records, summary = run(langs=["en"], top_k=1)
    assert [r.metadata["message_ids"] for r in records] == [["P0", "A1", "P2", "A4"]]
    records, _ = run(langs=["en"], top_k=2)
    assert [r.metadata["message_ids"] for r in records] == [
        ["P0", "A1", "P2", "A4"], ["P0", "A1", "P2", "A3"], ["P0", "A7"],
    ]
    assert summary.used == 4 and summary.accounted == summary.messages


def test_filters_drop_subtrees_with_reasons(run):
    records, summary = run(langs=["en"], min_labels={"quality": 0.5}, include_deleted=True)
    ids = [r.metadata["message_ids"] for r in records]
    assert ["P0", "A6"] not in ids and ["P0", "A9"] in ids  # P10 (prompter leaf) ends at A9
    assert summary.dropped["label:quality"] == 1 and "deleted" not in summary.dropped
    records, summary = run(tree_states=["ready_for_export"], include_synthetic=True, require_review=False)
    assert summary.dropped["tree_state"] == 3
    records, summary = run(tree_states=["aborted_low_grade"], include_synthetic=True, require_review=False)
    assert [r.metadata["message_ids"] for r in records] == [["Q0", "B1"], ["Q0", "B2"]]
    records, summary = run(max_labels={"humor": 0.05})
    assert summary.dropped["label:humor"] == 1 and summary.dropped["below_dropped"] == 1 + 4  # P10 + A1's subtree


def test_system_tag_from_labels(run):
    records, _ = run(langs=["en"], system_tag=True)
    first = records[0].messages
    assert [m.role for m in first] == ["user", "system", "assistant", "user", "system", "assistant"]
    assert sorted(first[1].content.split("\n")) == ["creativity: 0.2", "humor: 0.1", "lang: en", "length: 1",
                                                    "quality: 0.9"]
    assert sorted(first[4].content.split("\n")) == ["lang: en", "length: 1"]  # "By counting." has no labels
    again, _ = run(langs=["en"], system_tag=True)
    assert [r.model_dump() for r in again] == [r.model_dump() for r in records]


def test_system_tag_dropout(run):
    records, _ = run(langs=["en"], system_tag=True, tag_dropout=1.0)
    assert all(m.role != "system" for r in records for m in r.messages)
    records, _ = run(langs=["en"], system_tag=True, tag_drop={"quality": 1.0, "length": 1.0})
    tags = [m.content for r in records for m in r.messages if m.role == "system"]
    assert tags and all("quality" not in t and "length" not in t and "lang: en" in t for t in tags)


def msg(mid, role, rank=None, *replies):
    return {"message_id": mid, "text": mid, "role": role, "lang": "en", "review_result": True, "rank": rank,
            "replies": list(replies)}


def ranked_tree():
    """R0 ── B1 rank 0 ── R2 rank 0 ── B3 rank 1
          │            └─ R4 rank 1 ── B5 rank 0      (a second user follow-up)
          ├─ B6 rank 1 ── R7 rank 0                   (unanswered first follow-up)
          │            └─ R9 rank 1 ── B10 rank 0 / B11 rank 1
          └─ B8 unranked                             (beside ranked siblings)
    S0 ── S1 unranked                                (an only reply)"""
    r0 = msg("R0", "prompter", None,
             msg("B1", "assistant", 0, msg("R2", "prompter", 0, msg("B3", "assistant", 1)),
                 msg("R4", "prompter", 1, msg("B5", "assistant", 0))),
             msg("B6", "assistant", 1, msg("R7", "prompter", 0),
                 msg("R9", "prompter", 1, msg("B10", "assistant", 0), msg("B11", "assistant", 1))),
             msg("B8", "assistant", None))
    return [{"message_tree_id": "R0", "prompt": r0},
            {"message_tree_id": "S0", "prompt": msg("S0", "prompter", None, msg("S1", "assistant"))}]


def test_top_k_is_open_assistants_rule(write_lines):
    path = write_lines(ranked_tree())

    def ids(kind, **options):
        records = list(iter_records(path, kind, CONVERSIONS[kind].options(**options), Summary()))
        return [r.metadata["message_ids"] if kind == "sft" else r.metadata["parent_id"] for r in records]

    # rank 0 only; every user follow-up; B1 ends no thread (R2 is answered, by a cut reply); B8 is cut, S1 is not
    assert ids("sft", top_k=1) == [["R0", "B1", "R4", "B5"], ["S0", "S1"]]
    top_2 = [["R0", "B1", "R2", "B3"], ["R0", "B1", "R4", "B5"], ["R0", "B6"], ["R0", "B6", "R9", "B10"],
             ["R0", "B6", "R9", "B11"], ["S0", "S1"]]
    assert ids("sft", top_k=2) == top_2
    assert ids("sft") == [*top_2[:-1], ["R0", "B8"], ["S0", "S1"]]
    # ranked/pairs: top_k limits the thread leading to a fork, not the fork's replies
    assert ids("ranked", top_k=1) == ["R0"] and ids("ranked", top_k=2) == ["R0", "R9"]
    pairs = list(iter_records(path, "pairs", PairOptions(top_k=1), Summary()))
    assert [(p.metadata["chosen_id"], p.metadata["rejected_id"]) for p in pairs] == [("B1", "B6")]
