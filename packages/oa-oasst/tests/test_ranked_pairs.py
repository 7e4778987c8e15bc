"""Ranked replies and preference pairs on the hand-checked tree P0 (drawn in test_threads.py)."""

import pytest

from oa_oasst.formats import iter_records
from oa_oasst.options import PairOptions, RankedOptions
from oa_oasst.summary import Summary


@pytest.fixture
def run(small_path):
    def run(kind, options):
        summary = Summary()
        return list(iter_records(small_path, kind, options, summary)), summary

    return run


def test_ranked_forks_best_first(run):
    records, summary = run("ranked", RankedOptions(langs=["en"]))
    assert [r.replies for r in records] == [["4", "Four.", "Five"], ["By counting.", "Because addition."]]
    assert [[m.content for m in r.prompt] for r in records] == [["What is 2+2?"], ["What is 2+2?", "4", "Why?"]]
    assert [m.role for m in records[1].prompt] == ["user", "assistant", "user"]
    assert records[0].metadata["reply_ids"] == ["A1", "A7", "A6"] and records[0].metadata["ranks"] == [0, 1, 2]
    # unranked A11 (de) and deleted A9 never enter a ranking; P5, P8 and Q0 are in no record
    assert summary.used == 7 and summary.unused == 3 and summary.accounted == summary.messages == 15
    records, _ = run("ranked", RankedOptions(langs=["en"], min_replies=3))
    assert [r.metadata["parent_id"] for r in records] == ["P0"]
    records, _ = run("ranked", RankedOptions(langs=["en"], min_labels={"quality": 0.5}))
    assert records[0].replies == ["4", "Four."]


def test_pairs_best_vs_rest_and_all(run):
    records, summary = run("pairs", PairOptions(langs=["en"]))
    got = [(r.metadata["chosen_id"], r.metadata["rejected_id"]) for r in records]
    assert got == [("A1", "A7"), ("A1", "A6"), ("A4", "A3")]
    assert records[0].chosen[0].content == "4" and records[0].rejected[0].content == "Four."
    assert [m.content for m in records[2].prompt] == ["What is 2+2?", "4", "Why?"]
    assert summary.records == 3 and summary.accounted == summary.messages
    records, _ = run("pairs", PairOptions(langs=["en"], pairs="all"))
    got = [(r.metadata["chosen_id"], r.metadata["rejected_id"]) for r in records]
    assert got == [("A1", "A7"), ("A1", "A6"), ("A7", "A6"), ("A4", "A3")]


def test_equal_ranks_are_not_paired(write_lines, jsonl, small_path):
    p0, _ = jsonl(small_path)
    p0["prompt"]["replies"][2]["rank"] = 0  # A7 ties with A1
    path = write_lines([p0])
    records = list(iter_records(path, "pairs", PairOptions(langs=["en"], pairs="all"), Summary()))
    got = {(r.metadata["chosen_id"], r.metadata["rejected_id"]) for r in records}
    assert got == {("A1", "A6"), ("A7", "A6"), ("A4", "A3")}
