"""Prompts with candidate replies (pairs, rankings, unpaired feedback) for reward models and preference methods:
encoding, truncation that keeps the prompt's end and the replies' start, drops counted."""

from __future__ import annotations

import pytest

from oa_core.schema import PreferencePair, RankedReplies, UnpairedFeedback
from oa_data.candidates import CandidateReport, encode_candidates, fit_candidates
from oa_data.settings import DataSettings
from oa_data.templates import BUILTIN_TEMPLATES, with_end_of_turn
from oa_data.tokenize import IGNORE_INDEX, encode_messages

PROMPT = [{"role": "user", "content": "Name a colour."}]


@pytest.fixture
def chatml(chat_tokenizers):
    tok = chat_tokenizers["llama"]
    return tok, with_end_of_turn(BUILTIN_TEMPLATES["chatml"], tok)


def test_each_reply_follows_the_same_prompt_as_the_whole_conversation_renders(chatml):
    tok, template = chatml
    pair = PreferencePair(prompt=PROMPT, chosen="Blue.", rejected="I will not.", metadata={"margin": 2})
    row = encode_candidates(pair, tok, template)
    for k, answer in enumerate(("Blue.", "I will not.")):
        whole = encode_messages([*PROMPT, {"role": "assistant", "content": answer}], tok, template, DataSettings())
        assert row["prompt_input_ids"] + row["candidate_input_ids"][k] == whole.input_ids
        assert row["candidate_labels"][k] == whole.labels[len(row["prompt_input_ids"]):]
        assert all(t == IGNORE_INDEX for t in whole.labels[:len(row["prompt_input_ids"])])
    assert tok.decode(row["prompt_input_ids"]).endswith("<|im_start|>assistant\n")
    assert (row["margin"], row["label"]) == (2.0, None)
    ranked = encode_candidates(RankedReplies(prompt=PROMPT, replies=["Blue.", "Red", "no"]), tok, template)
    assert len(ranked["candidate_input_ids"]) == 3 and ranked["prompt_input_ids"] == row["prompt_input_ids"]
    feedback = encode_candidates(UnpairedFeedback(prompt=PROMPT, completion="Blue.", label=True), tok, template)
    assert feedback["candidate_input_ids"] == row["candidate_input_ids"][:1] and feedback["label"] is True


def test_truncation_keeps_the_prompt_end_and_the_reply_start_and_counts():
    row = {"prompt_input_ids": list(range(100, 130)), "candidate_input_ids": [list(range(10)), list(range(20, 24))],
           "candidate_labels": [list(range(10)), list(range(20, 24))], "margin": None, "label": None}
    report = CandidateReport()
    assert fit_candidates(row, 40, report) is row  # 30 + 10 fits
    cut = fit_candidates(row, 32, report)  # the prompt keeps its last 22 tokens so that the longest reply fits
    assert cut["prompt_input_ids"] == list(range(108, 130)) and cut["candidate_input_ids"] == row["candidate_input_ids"]
    short = fit_candidates(row, 16, report)  # half for the prompt, the replies cut from the right
    assert short["prompt_input_ids"] == list(range(122, 130)) and short["candidate_input_ids"][0] == list(range(8))
    assert short["candidate_labels"][1] == list(range(20, 24))
    assert (report.kept, report.prompt_cut, report.reply_cut, report.tokens_removed) == (3, 2, 1, 8 + 22 + 2)


def test_identical_replies_and_empty_replies_are_dropped_and_counted():
    report = CandidateReport()
    same = {"prompt_input_ids": [1], "candidate_input_ids": [[5, 6], [5, 6]], "candidate_labels": [[5, 6], [5, 6]]}
    empty = {"prompt_input_ids": [1], "candidate_input_ids": [[5, 6], []], "candidate_labels": [[5, 6], []]}
    assert fit_candidates(same, 10, report) is None and fit_candidates(empty, 10, report) is None
    assert (report.dropped_identical, report.dropped_empty, report.kept) == (1, 1, 0)
    assert "2 dropped (1 with identical replies, 1 with an empty reply)" in report.summary("x")


def test_the_shipped_preference_and_ranked_samples(tmp_path, raw_tokenizers, repo_root):
    import copy

    import yaml

    from oa_data.candidates import prepare_candidates
    from oa_data.tokenizer import prepare_run_tokenizer

    data = repo_root / "examples" / "data"
    (tmp_path / "run.yaml").write_text(yaml.safe_dump({
        "method": "sft", "model": {"path": str(repo_root / "assets" / "tokenizers" / "llama2-sp")},
        "datasets": [{"path": str(data / "hh-rlhf" / "harmless-base-test-300.jsonl.gz"), "format": "hh_rlhf"},
                     {"path": str(data / "oasst" / "en_100_tree.jsonl"), "format": "oasst.ranked"}],
        "data": {"chat_template": "chatml", "max_length": 512}}))
    from oa_core.config.layers import load_layers
    from oa_core.config.validate import config_model
    from oa_core.plugins import get_registry

    cfg = config_model(get_registry(), "sft").model_validate(load_layers(tmp_path / "run.yaml")[0])  # no method check
    split = prepare_candidates(cfg, prepare_run_tokenizer(cfg, copy.deepcopy(raw_tokenizers["llama"])), progress=False)
    assert split.records == 300 + 207 and len(split.rows) == 507
    assert all(len(r["prompt_input_ids"]) + max(map(len, r["candidate_input_ids"])) <= 512 for r in split.rows)
    sizes = [len(r["candidate_input_ids"]) for r in split.rows]  # pairs, and rankings of 2 to 5 replies
    assert sizes.count(2) >= 300 and max(sizes) >= 3
