"""Loss-mask policies, per-message train flags, record kinds, 0%/100% supervision checks."""

from __future__ import annotations

from itertools import pairwise

import pytest

from oa_core.errors import OAError, RecordError
from oa_core.schema import Conversation, PreferencePair, PromptCompletion, RankedReplies, Text
from oa_data.settings import DataSettings
from oa_data.templates import BUILTIN_TEMPLATES, ChatTemplate
from oa_data.tokenize import (
    IGNORE_INDEX,
    SupervisionReport,
    encode_messages,
    encode_preference,
    encode_record,
)

CHATML = BUILTIN_TEMPLATES["chatml"]
CHAT = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Hello"},
    {"role": "assistant", "content": "Hi there!"},
    {"role": "user", "content": "Bye"},
    {"role": "assistant", "content": "See you."},
]


def test_default_trains_every_answer(tok, runs):
    assert runs(encode_messages(CHAT, tok, CHATML, DataSettings()), tok) == ["Hi there!<|im_end|>", "See you.<|im_end|>"]


def test_only_answer_loss_trains_the_last_answer(tok, runs):
    enc = encode_messages(CHAT, tok, CHATML, DataSettings(only_answer_loss=True))
    assert runs(enc, tok) == ["See you.<|im_end|>"]


def test_train_on_inputs_trains_everything_but_train_false(tok, runs):
    enc = encode_messages(CHAT, tok, CHATML, DataSettings(train_on_inputs=True))
    assert enc.labels == enc.input_ids
    flagged = [*CHAT[:2], {**CHAT[2], "train": False}, *CHAT[3:]]
    enc = encode_messages(flagged, tok, CHATML, DataSettings(train_on_inputs=True))
    text = "".join(runs(enc, tok))
    assert "Hi there!" not in text and "See you.<|im_end|>" in text and "Hello<|im_end|>" in text


def test_message_train_flags_override_the_policy(tok, runs):
    msgs = [CHAT[0], {**CHAT[1], "train": True}, {**CHAT[2], "train": False}, *CHAT[3:]]
    enc = encode_messages(msgs, tok, CHATML, DataSettings())
    assert runs(enc, tok) == ["Hello<|im_end|>", "See you.<|im_end|>"]
    msgs = [*CHAT[:2], {**CHAT[2], "train": True}, *CHAT[3:]]
    enc = encode_messages(msgs, tok, CHATML, DataSettings(only_answer_loss=True))
    assert runs(enc, tok) == ["Hi there!<|im_end|>", "See you.<|im_end|>"]


def test_turn_spans_cover_each_message(tok):
    enc = encode_messages(CHAT, tok, CHATML, DataSettings())
    assert enc.roles == ["system", "user", "assistant", "user", "assistant"]
    assert enc.turns[0][0] == 0 and enc.turns[-1][1] == len(enc)
    assert all(a[1] == b[0] for a, b in pairwise(enc.turns))
    s, e = enc.turns[2]
    assert tok.decode(enc.input_ids[s:e]).strip() == "<|im_start|>assistant\nHi there!<|im_end|>"


def test_zero_supervised_sample_fails_with_record_index(tok):
    with pytest.raises(RecordError, match=r"train.jsonl: record 3: no token is supervised") as e:
        encode_messages(CHAT[:2], tok, CHATML, DataSettings(), index=3, source="train.jsonl")
    assert "\n" not in str(e.value) and "assistant" in e.value.hint


def test_fully_supervised_sample_fails_without_train_on_inputs(tok):
    bare = ChatTemplate("bare", "{% for m in messages %}{{ m['content'] + eos_token }}{% endfor %}", tok.eos_token)
    with pytest.raises(RecordError, match="record 0: every token is supervised"):
        encode_messages([CHAT[2]], tok, bare, DataSettings(), index=0)


def test_record_kinds(tok, runs):
    settings = DataSettings()
    conv = encode_record(Conversation(messages=CHAT), tok, CHATML, settings)
    assert runs(conv, tok) == ["Hi there!<|im_end|>", "See you.<|im_end|>"]
    # the completion is learned, an assistant message inside the prompt is not
    pc = PromptCompletion(prompt=CHAT[:4], completion="See you.")
    assert runs(encode_record(pc, tok, CHATML, settings), tok) == ["See you.<|im_end|>"]
    text = encode_record(Text(text="Plain words."), tok, CHATML, settings)
    assert text.labels == text.input_ids and text.input_ids[-1] == tok.eos_token_id
    assert tok.decode(text.input_ids, skip_special_tokens=True).strip() == "Plain words."
    with pytest.raises(RecordError, match=r"d.jsonl: record 5: a 'ranked_replies' record"):
        encode_record(RankedReplies(prompt="q", replies=["a", "b"]), tok, CHATML, settings, index=5, source="d.jsonl")


def test_preference_pair(tok):
    pair = PreferencePair(prompt="Hello", chosen="Hi there!", rejected="Hi, go away.")
    for settings in (DataSettings(), DataSettings(train_on_inputs=True)):  # the prompt is never trained on
        out = encode_preference(pair, tok, CHATML, settings)
        assert tok.decode(out["prompt_input_ids"]) == "<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\n"
        for key, answer in (("chosen", "Hi there!"), ("rejected", "Hi, go away.")):
            ids, labels = out[f"{key}_input_ids"], out[f"{key}_labels"]
            assert tok.decode(ids) == f"{answer}<|im_end|>\n"
            assert tok.decode([t for t, lab in zip(ids, labels, strict=True) if lab != IGNORE_INDEX]) == f"{answer}<|im_end|>"


def test_dataset_supervision_report(tok):
    report = SupervisionReport()
    report.add(encode_messages(CHAT, tok, CHATML, DataSettings()))
    assert 0 < report.fraction < 1
    report.check("train")
    assert "1 samples" in report.summary()
    empty = SupervisionReport(samples=2, tokens=40, supervised=0)
    with pytest.raises(OAError, match="train: no token of any sample is supervised"):
        empty.check("train")
    full = SupervisionReport(samples=2, tokens=40, supervised=40)
    with pytest.raises(OAError, match="every token is supervised"):
        full.check("train")
    full.check("train", train_on_inputs=True)
