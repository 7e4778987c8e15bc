"""Truncation rules on real encodings, and the report that counts every dropped or truncated sample."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from oa_core.errors import OAError
from oa_core.schema import Text
from oa_data.settings import DataSettings
from oa_data.templates import BUILTIN_TEMPLATES, with_end_of_turn
from oa_data.tokenize import IGNORE_INDEX, Encoded, encode_messages, encode_text, reencoder
from oa_data.truncation import TruncationReport, fit, truncate

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


def prefix_lengths(messages, tok, template, data):
    """Tokens of the conversation rendered up to and including each message."""
    return [len(encode_messages(messages[:i + 1], tok, template, data, check=False)) for i in range(len(messages))]


def turbo_keep_start(roles, cum_len, max_tokens):
    """turbo-alignment's ``__keep_start`` bound (whole messages from the start, the longest prefix that fits),
    ending on a bot message as it does with ``only_answer_loss`` (oa always does): messages[:bound]."""
    for i in reversed(range(len(roles))):
        if roles[i] == "assistant" and cum_len[i] <= max_tokens:
            return i + 1
    return None


@pytest.mark.parametrize("only_answer_loss", [False, True])
def test_keep_start_keeps_whole_messages_up_to_the_last_answer_that_fits(enc, chat_tokenizers, only_answer_loss):
    tok, data = chat_tokenizers["llama"], DataSettings(only_answer_loss=only_answer_loss)
    full = encode_messages(LONG, tok, CHATML, data)
    cum = prefix_lengths(LONG, tok, CHATML, data)
    for max_length in range(1, len(full) + 1):
        report = TruncationReport()
        out = truncate(full, max_length, "keep_start", report=report, reencode=reencoder(LONG, tok, CHATML, data))
        bound = turbo_keep_start([m["role"] for m in LONG], cum, max_length)
        if bound is None:
            assert out is None and report.dropped_too_long == 1
            continue
        expected = encode_messages(LONG[:bound], tok, CHATML, data)
        assert out.input_ids == expected.input_ids and out.labels == expected.labels
        assert tok.decode(out.input_ids).endswith(f"{LONG[bound - 1]['content']}<|im_end|>\n")  # never inside a message
        runs = [tok.decode([t for t in out.labels if t != IGNORE_INDEX])]
        assert runs[0].endswith(f"{LONG[bound - 1]['content']}<|im_end|>")  # the last kept answer is learned


def test_keep_start_without_a_whole_answer_that_fits_is_dropped_and_counted(enc):
    report = TruncationReport()
    first_answer_end = enc.turns[2][1]
    assert truncate(enc, first_answer_end - 1, "keep_start", report=report) is None
    assert report.dropped_too_long == 1
    out = truncate(enc, first_answer_end, "keep_start", report=report)  # no reencode: the tokens up to the answer
    assert out.input_ids == enc.input_ids[:first_answer_end] and out.roles == ["system", "user", "assistant"]


def test_drop_rule_with_min_and_max_length(enc):
    report = TruncationReport()
    assert truncate(enc, len(enc) - 1, "drop", report=report) is None
    assert truncate(enc, len(enc), "drop", min_length=len(enc) + 1, report=report) is None
    assert truncate(enc, len(enc), "drop", min_length=len(enc), report=report) is enc
    assert (report.dropped_too_long, report.dropped_too_short, report.kept, report.seen) == (1, 1, 1, 3)


def turbo_random_cut(roles, cum_len, max_tokens, rng):
    """turbo-alignment's ``random_cut``: the end is a random bot message among the messages kept by the
    (keep_start) bounds; oa's sample runs up to and including that answer: messages[:k + 1]."""
    right_bound = turbo_keep_start(roles, cum_len, max_tokens)
    bot_indices = [i for i in range(right_bound) if roles[i] == "assistant"]
    return rng.choice(bot_indices) + 1


@pytest.mark.parametrize("slack", [0, 1000])  # applied to every sample, not only to over-long ones
def test_random_cut_ends_after_a_random_answer_seeded(chat_tokenizers, slack):
    tok, data = chat_tokenizers["llama"], DataSettings()
    full = encode_messages(LONG, tok, CHATML, data)
    cum = prefix_lengths(LONG, tok, CHATML, data)
    max_length = cum[4] + slack  # without slack the third answer does not fit
    ends = set()
    for seed in range(12):
        out = truncate(full, max_length, "random_cut", rng=random.Random(seed), reencode=reencoder(LONG, tok, CHATML, data))
        bound = turbo_random_cut([m["role"] for m in LONG], cum, max_length, random.Random(seed))
        expected = encode_messages(LONG[:bound], tok, CHATML, data)
        assert out.input_ids == expected.input_ids and out.labels == expected.labels
        again = truncate(full, max_length, "random_cut", rng=random.Random(seed), reencode=reencoder(LONG, tok, CHATML, data))
        assert again.input_ids == out.input_ids
        ends.add(bound)
    assert ends == ({3, 5} if slack == 0 else {3, 5, 7})


def test_random_cut_counts_cut_samples_and_keeps_whole_ones(chat_tokenizers):
    tok, data = chat_tokenizers["llama"], DataSettings()
    full = encode_messages(LONG, tok, CHATML, data)
    report = TruncationReport()
    outs = [truncate(full, 1000, "random_cut", rng=random.Random(s), report=report,
                     reencode=reencoder(LONG, tok, CHATML, data)) for s in range(12)]
    whole = sum(out is full for out in outs)
    assert 0 < whole < 12 and (report.kept, report.truncated) == (whole, 12 - whole)
    assert report.tokens_removed == sum(len(full) - len(out) for out in outs)


def test_random_cut_never_ends_on_an_answer_that_is_not_trained_on(chat_tokenizers):
    tok, data = chat_tokenizers["llama"], DataSettings()
    messages = [*LONG[:4], {**LONG[4], "train": False}, *LONG[5:]]
    full = encode_messages(messages, tok, CHATML, data)
    for seed in range(20):
        out = truncate(full, 1000, "random_cut", rng=random.Random(seed), reencode=reencoder(messages, tok, CHATML, data))
        assert out.roles[-1] == "assistant" and len(out.roles) in (3, 7)


def test_random_cut_with_only_answer_loss_learns_the_chosen_answer(chat_tokenizers):
    tok, data = chat_tokenizers["llama"], DataSettings(only_answer_loss=True)
    full = encode_messages(LONG, tok, CHATML, data)
    for seed in range(6):
        out = truncate(full, 1000, "random_cut", rng=random.Random(seed), reencode=reencoder(LONG, tok, CHATML, data))
        last = LONG[len(out.roles) - 1]["content"]
        assert tok.decode([t for t in out.labels if t != IGNORE_INDEX]) == f"{last}<|im_end|>"


def test_random_window_is_seeded_and_keeps_supervised_tokens(enc):
    a = truncate(enc, 20, "random_window", rng=random.Random(1))
    b = truncate(enc, 20, "random_window", rng=random.Random(1))
    assert a.input_ids == b.input_ids and len(a) == 20 and a.num_supervised > 0
    starts = {tuple(truncate(enc, 20, "random_window", rng=random.Random(s)).input_ids) for s in range(10)}
    assert len(starts) > 1
    for window in starts:
        assert any(list(window) == enc.input_ids[s:s + 20] for s in range(len(enc) - 19))
    assert truncate(enc, len(enc), "random_window", rng=random.Random(1)) is enc  # only over-long samples


TEXT = Text(text="The quick brown fox jumps over the lazy dog. " * 12)


@pytest.mark.parametrize("max_length", [8, 25, 64, 100])
def test_plain_text_is_chunked_like_axolotl(tok, max_length):
    enc = encode_text(TEXT, tok)
    ids = enc.input_ids
    # Axolotl's CompletionPromptTokenizingStrategy: val[i : i + sequence_len] for i in range(0, len(val), sequence_len)
    reference = [ids[i:i + max_length] for i in range(0, len(ids), max_length)]
    report = TruncationReport()
    pieces = fit(enc, max_length, "chunk", report=report)
    assert [p.input_ids for p in pieces] == reference and [p.labels for p in pieces] == reference
    assert (report.chunked, report.chunks, report.dropped) == (1, len(reference), 0)
    assert f"1 chunked into {len(reference)} pieces" in report.summary("text")


def test_chunks_under_min_length_are_dropped_and_counted(chat_tokenizers):
    enc = encode_text(TEXT, chat_tokenizers["llama"])
    tail = len(enc) % 70
    assert 0 < tail < 20
    report = TruncationReport()
    pieces = fit(enc, 70, "chunk", min_length=20, report=report)
    assert [len(p) for p in pieces] == [70] * (len(enc) // 70)
    assert (report.chunks, report.chunks_too_short, report.chunk_tokens_dropped) == (len(pieces), 1, tail)
    assert f"chunked into {len(pieces)} pieces (1 under min_length dropped, {tail} tokens)" in report.summary()
    assert fit(enc, len(enc), "chunk", report=report) == [enc] and report.kept == 1


def test_plain_text_keep_start_and_keep_end_cut_tokens_never_drop(tok):
    enc = encode_text(TEXT, tok)
    report = TruncationReport()
    # TRL's truncation_mode: keep_start -> ids[:max_length], keep_end -> ids[-max_length:] (turbo: the same CUT)
    assert truncate(enc, 30, "keep_start", report=report).input_ids == enc.input_ids[:30]
    assert truncate(enc, 30, "keep_end", report=report).input_ids == enc.input_ids[-30:]
    assert (report.truncated, report.dropped, report.tokens_removed) == (2, 0, 2 * (len(enc) - 30))


def test_rules_for_the_other_kind_of_record_are_errors(enc, tok):
    with pytest.raises(OAError, match="truncation 'chunk' splits plain text"):
        fit(enc, 10, "chunk")
    with pytest.raises(OAError, match="truncation 'random_cut' ends a conversation after a random answer"):
        truncate(encode_text(TEXT, tok), 10, "random_cut")
    with pytest.raises(OAError, match="cuts between messages but the sample has no turn spans"):
        truncate(Encoded(enc.input_ids, enc.labels, [], enc.roles), 10, "keep_end")


def test_unknown_rule():
    with pytest.raises(OAError, match="unknown truncation rule 'keep_middle'"):
        truncate(Encoded([1, 2], [1, 2]), 1, "keep_middle")


@settings(max_examples=40, deadline=None)
@given(sizes=st.lists(st.integers(1, 12), min_size=1, max_size=8), max_length=st.integers(1, 60),
       rule=st.sampled_from(["keep_start", "keep_end", "drop", "random_cut", "random_window"]),
       min_length=st.integers(1, 5))
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
    if rule == "random_cut" or (rule == "keep_start" and out is not enc):  # whole messages, ending on an answer
        assert out.roles[-1] == "assistant" and out.input_ids == ids[:len(out)] and len(out) in {e for _, e in turns}


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
