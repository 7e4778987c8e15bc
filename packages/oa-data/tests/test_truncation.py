"""Truncation rules on real encodings, and the report that counts every dropped or truncated sample."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from oa_core.errors import OAError
from oa_data.settings import DataSettings
from oa_data.templates import BUILTIN_TEMPLATES, with_end_of_turn
from oa_data.tokenize import IGNORE_INDEX, Encoded, encode_messages, reencoder
from oa_data.truncation import TruncationReport, truncate

CHATML = BUILTIN_TEMPLATES["chatml"]
LONG = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "First question about apples and pears?"},
    {"role": "assistant", "content": "First answer, rather long, about apples and pears."},
    {"role": "user", "content": "Second question?"},
    {"role": "assistant", "content": "Second answer."},
    {"role": "user", "content": "Third?"},
    {"role": "assistant", "content": "Third answer."},
]


@pytest.fixture
def enc(chat_tokenizers):
    return encode_messages(LONG, chat_tokenizers["llama"], CHATML, DataSettings())


def turn_len(enc, i):
    return enc.turns[i][1] - enc.turns[i][0]


def test_short_samples_are_kept_as_is(enc):
    report = TruncationReport()
    assert truncate(enc, len(enc), "keep_end", report=report) is enc
    assert (report.kept, report.dropped, report.truncated) == (1, 0, 0)


def test_keep_end_drops_whole_earliest_turns_and_keeps_the_system_message(enc, chat_tokenizers):
    tok = chat_tokenizers["llama"]
    report = TruncationReport()
    fits_after_one_exchange = len(enc) - turn_len(enc, 1) - turn_len(enc, 2)
    out = truncate(enc, fits_after_one_exchange, "keep_end", report=report)
    assert out.roles == ["system", "user", "assistant", "user", "assistant"]
    assert len(out) == fits_after_one_exchange
    expected = encode_messages([LONG[0], *LONG[3:]], tok, CHATML, DataSettings())
    assert out.input_ids == expected.input_ids and out.labels == expected.labels and out.turns == expected.turns
    assert (report.truncated, report.tokens_removed) == (1, len(enc) - len(out))
    # one token less: the next exchange must go too (never start with an answer)
    out = truncate(enc, fits_after_one_exchange - 1, "keep_end", report=report)
    assert out.roles == ["system", "user", "assistant"]
    assert tok.decode([t for t in out.labels if t != IGNORE_INDEX]) == "Third answer.<|im_end|>"


def test_keep_end_drops_samples_whose_last_exchange_does_not_fit(enc):
    report = TruncationReport()
    last_exchange = turn_len(enc, 0) + turn_len(enc, 5) + turn_len(enc, 6)
    assert truncate(enc, last_exchange - 1, "keep_end", report=report) is None
    assert report.dropped_too_long == 1 and "1 too long" in report.summary("train")


def test_keep_start_cuts_the_end(enc):
    out = truncate(enc, 30, "keep_start")
    assert out.input_ids == enc.input_ids[:30] and out.labels == enc.labels[:30]
    assert out.turns[-1][1] == 30 and len(out.turns) == len(out.roles)


def test_keep_start_without_supervised_tokens_left_is_dropped_and_counted(enc):
    report = TruncationReport()
    first_answer = enc.turns[2][0]
    assert truncate(enc, first_answer, "keep_start", report=report) is None
    assert report.dropped_unsupervised == 1


def test_drop_rule_with_min_and_max_length(enc):
    report = TruncationReport()
    assert truncate(enc, len(enc) - 1, "drop", report=report) is None
    assert truncate(enc, len(enc), "drop", min_length=len(enc) + 1, report=report) is None
    assert truncate(enc, len(enc), "drop", min_length=len(enc), report=report) is enc
    assert (report.dropped_too_long, report.dropped_too_short, report.kept, report.seen) == (1, 1, 1, 3)


def test_random_cut_is_seeded_and_keeps_supervised_tokens(enc):
    a = truncate(enc, 20, "random_cut", rng=random.Random(1))
    b = truncate(enc, 20, "random_cut", rng=random.Random(1))
    assert a.input_ids == b.input_ids and len(a) == 20 and a.num_supervised > 0
    starts = {tuple(truncate(enc, 20, "random_cut", rng=random.Random(s)).input_ids) for s in range(10)}
    assert len(starts) > 1
    for window in starts:
        assert any(list(window) == enc.input_ids[s:s + 20] for s in range(len(enc) - 19))


def test_unknown_rule():
    with pytest.raises(OAError, match="unknown truncation rule 'keep_middle'"):
        truncate(Encoded([1, 2], [1, 2]), 1, "keep_middle")


@settings(max_examples=40, deadline=None)
@given(sizes=st.lists(st.integers(1, 12), min_size=1, max_size=8), max_length=st.integers(1, 60),
       rule=st.sampled_from(["keep_start", "keep_end", "drop", "random_cut"]), min_length=st.integers(1, 5))
def test_every_sample_is_accounted_for(sizes, max_length, rule, min_length):
    roles = [("user", "assistant")[i % 2] for i in range(len(sizes))]
    ids, labels, turns = [], [], []
    for size, role in zip(sizes, roles, strict=True):
        turns.append((len(ids), len(ids) + size))
        ids += list(range(len(ids), len(ids) + size))
        labels += [t if role == "assistant" else IGNORE_INDEX for t in ids[-size:]]
    enc = Encoded(ids, labels, turns, roles)
    report = TruncationReport()
    out = truncate(enc, max_length, rule, min_length, random.Random(0), report)
    assert report.seen == 1
    if out is None:
        assert report.dropped == 1
        return
    assert min_length <= len(out) <= max_length and out.num_supervised > 0
    assert report.tokens_removed == len(enc) - len(out)
    assert set(zip(out.input_ids, out.labels, strict=True)) <= set(zip(ids, labels, strict=True))  # tokens keep their labels
    if rule == "keep_end" and out is not enc:
        assert out.roles[0] == "user" and out.input_ids[-1] == ids[-1]


def test_keep_end_with_reencode_renders_the_shorter_chat_exactly(chat_tokenizers):
    # llama-2 renders the system prompt inside the first user turn: cutting tokens would lose it
    tok, template = chat_tokenizers["llama"], with_end_of_turn(BUILTIN_TEMPLATES["llama-2"], chat_tokenizers["llama"])
    data = DataSettings()
    enc = encode_messages(LONG, tok, template, data)
    short = encode_messages([LONG[0], *LONG[5:]], tok, template, data)
    report = TruncationReport()
    out = truncate(enc, len(short), "keep_end", report=report, reencode=reencoder(LONG, tok, template, data))
    assert out.input_ids == short.input_ids and out.labels == short.labels
    assert "<<SYS>>\nBe brief.\n<</SYS>>" in tok.decode(out.input_ids)
    assert (report.truncated, report.tokens_removed) == (1, len(enc) - len(short))
    assert truncate(enc, len(short) - 1, "keep_end", reencode=reencoder(LONG, tok, template, data)) is None


def test_reencoder_of_records(chat_tokenizers):
    from oa_core.schema import Conversation, PromptCompletion, Text

    tok, data = chat_tokenizers["llama"], DataSettings()
    conv = reencoder(Conversation(messages=LONG), tok, CHATML, data)
    assert conv([0, 5, 6]).input_ids == encode_messages([LONG[0], *LONG[5:]], tok, CHATML, data).input_ids
    pc = reencoder(PromptCompletion(prompt=LONG[:6], completion="Third answer."), tok, CHATML, data)
    assert tok.decode([t for t in pc([0, 5, 6]).labels if t != IGNORE_INDEX]) == "Third answer.<|im_end|>"
    assert reencoder(Text(text="plain"), tok, CHATML, data) is None
