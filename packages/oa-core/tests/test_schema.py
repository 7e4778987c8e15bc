import pytest

from oa_core.errors import RecordError
from oa_core.schema import (
    Classification,
    Conversation,
    PreferencePair,
    PromptWithReference,
    RankedReplies,
    Text,
    validate_record,
)


def test_prompt_and_completion_strings_become_messages():
    pair = PreferencePair(prompt="Why?", chosen="Because.", rejected="No.")
    assert [(m.role, m.content) for m in pair.prompt] == [("user", "Why?")]
    assert [(m.role, m.content) for m in pair.chosen] == [("assistant", "Because.")]
    assert pair.rejected[0].content == "No."


def test_kind_selects_the_record_type():
    rec = validate_record({"kind": "text", "text": "hello"})
    assert isinstance(rec, Text)
    rec = validate_record({"kind": "prompt_reference", "prompt": "2+2?", "reference": "4"})
    assert isinstance(rec, PromptWithReference) and rec.reference == "4"


def test_error_names_source_record_and_field():
    with pytest.raises(RecordError) as e:
        validate_record(
            {"messages": [{"role": "user", "content": "hi"}, {"role": "robot", "content": "x"}]},
            Conversation,
            source="data/chat.jsonl",
            index=7,
        )
    msg = str(e.value)
    assert msg.startswith("data/chat.jsonl: record 7: field 'messages.1.role'")
    assert "\n" not in msg


def test_unknown_field_and_empty_messages_rejected():
    with pytest.raises(RecordError, match="field 'mesages': unknown field \\(did you mean 'messages'\\?\\)"):
        validate_record({"kind": "conversation", "mesages": []})
    with pytest.raises(RecordError, match="field 'messages': List should have at least 1 item"):
        validate_record({"kind": "conversation", "messages": []})


def test_ranked_replies_need_two():
    with pytest.raises(RecordError, match="replies"):
        validate_record({"prompt": "q", "replies": ["only one"]}, RankedReplies)


def test_classification_needs_exactly_one_input():
    assert Classification(text="good", label=1).label == 1
    with pytest.raises(RecordError, match="exactly one"):
        validate_record({"text": "a", "messages": [{"role": "user", "content": "b"}], "label": 0}, Classification)
    with pytest.raises(RecordError, match="exactly one"):
        validate_record({"label": 0}, Classification)


def test_per_message_train_flag_and_metadata_roundtrip():
    conv = Conversation(messages=[{"role": "system", "content": "s", "train": False, "metadata": {"a": 1}}])
    dumped = conv.model_dump()
    assert dumped["messages"][0]["train"] is False and dumped["kind"] == "conversation"
    assert validate_record(dumped) == conv
