"""Every built-in format on a small fixture: the exact records it produces, and its row errors."""

import json

import pytest

from oa_core.config import DatasetSpec
from oa_core.errors import OAError, RecordError
from oa_core.plugins import PluginManager
from oa_core.schema import (
    Classification,
    Conversation,
    PreferencePair,
    PromptCompletion,
    PromptWithReference,
    RankedReplies,
    Text,
    UnpairedFeedback,
)
from oa_data.loading import load_records

U, A, S = "user", "assistant", "system"


def m(role, content, **kw):
    return {"role": role, "content": content, **kw}


@pytest.fixture(scope="module")
def registry():
    return PluginManager().registry()


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def load(tmp_path, registry, fmt, rows, **spec):
    path = write_jsonl(tmp_path / "data.jsonl", rows)
    return load_records(DatasetSpec(path=str(path), format=fmt, **spec), registry=registry)


CASES = [
    ("pretraining", {}, [{"text": "Once upon a time."}], [Text(text="Once upon a time.")]),
    ("alpaca", {}, [{"instruction": "Add.", "input": "2+2", "output": "4"}, {"instruction": "Greet.", "input": "", "output": "Hi"}],
     [Conversation(messages=[m(U, "Add.\n\n2+2"), m(A, "4")]), Conversation(messages=[m(U, "Greet."), m(A, "Hi")])]),
    ("sharegpt", {}, [{"conversations": [{"from": "system", "value": "Be brief."}, {"from": "human", "value": "Hi"},
                                         {"from": "gpt", "value": "Hello"}]}],
     [Conversation(messages=[m(S, "Be brief."), m(U, "Hi"), m(A, "Hello")])]),
    ("sharegpt", {"options": {"role_map": {"q": "user", "a": "assistant"}, "role_key": "who", "content_key": "text"}},
     [{"conversations": [{"who": "q", "text": "x?"}, {"who": "a", "text": "y"}]}],
     [Conversation(messages=[m(U, "x?"), m(A, "y")])]),
    ("openai", {}, [{"messages": [m("developer", "Rules"), m(U, "Hi"), m(A, "Hey", weight=0), m(U, "2+2?"), m(A, "4", weight=1)]}],
     [Conversation(messages=[m(S, "Rules"), m(U, "Hi"), m(A, "Hey", train=False), m(U, "2+2?"), m(A, "4", train=True)])]),
    ("turbo_chat", {}, [{"id": "c1", "messages": [m(S, "sys", disable_loss=True), m(U, "q"), m("bot", "a", disable_loss=False)]}],
     [Conversation(messages=[m(S, "sys", train=False), m(U, "q"), m(A, "a", train=True)], metadata={"id": "c1"})]),
    ("turbo_chat", {"options": {"role_tag_mapping": {"human": "user", "model": "assistant"}}},
     [{"id": "c2", "messages": [m("human", "q"), m("model", "a")]}],
     [Conversation(messages=[m(U, "q"), m(A, "a")], metadata={"id": "c2"})]),
    ("preference", {}, [{"prompt": "Q", "chosen": "good", "rejected": "bad"},
                        {"prompt": [m(S, "s"), m(U, "Q")], "chosen": [m(A, "g")], "rejected": [m(A, "b")], "margin": 2}],
     [PreferencePair(prompt=[m(U, "Q")], chosen=[m(A, "good")], rejected=[m(A, "bad")]),
      PreferencePair(prompt=[m(S, "s"), m(U, "Q")], chosen=[m(A, "g")], rejected=[m(A, "b")], metadata={"margin": 2.0})]),
    ("hh_rlhf", {}, [{"chosen": "\n\nHuman: Hi\n\nAssistant: Hello\n\nHuman: Joke?\n\nAssistant: A good one.",
                      "rejected": "\n\nHuman: Hi\n\nAssistant: Hello\n\nHuman: Joke?\n\nAssistant: No."}],
     [PreferencePair(prompt=[m(U, "Hi"), m(A, "Hello"), m(U, "Joke?")], chosen=[m(A, "A good one.")], rejected=[m(A, "No.")])]),
    ("kto", {}, [{"prompt": "Q", "completion": "A", "label": True}, {"prompt": "Q", "completion": "B", "label": False}],
     [UnpairedFeedback(prompt="Q", completion="A", label=True), UnpairedFeedback(prompt="Q", completion="B", label=False)]),
    ("ranked", {}, [{"prompt": "Q", "replies": ["best", "mid", "worst"]}, {"prompt": "Q", "replies": ["x", "y"], "scores": [0.1, 0.9]}],
     [RankedReplies(prompt="Q", replies=["best", "mid", "worst"]),
      RankedReplies(prompt="Q", replies=["y", "x"], metadata={"scores": [0.9, 0.1]})]),
    ("classification", {}, [{"text": "great", "label": 1}],
     [Classification(text="great", label=1)]),
    ("classification", {"options": {"label_names": ["neg", "pos", "funny"]}}, [{"text": "lol", "label": ["pos", "funny"]}],
     [Classification(text="lol", label=[1, 2])]),
    ("classification", {"options": {"label_names": ["neg", "pos"]}}, [{"messages": [m(U, "meh")], "label": "neg"}],
     [Classification(messages=[m(U, "meh")], label=0)]),
    ("prompt_reference", {"field_map": {"prompt": "question", "reference": "answer"}, "options": {"reference_after": "####"}},
     [{"question": "1+1?", "answer": "1+1=2\n#### 2"}], [PromptWithReference(prompt="1+1?", reference="2")]),
]


@pytest.mark.parametrize(("fmt", "spec", "rows", "expected"), CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_format_produces_exact_records(tmp_path, registry, fmt, spec, rows, expected):
    loaded = load(tmp_path, registry, fmt, rows, **spec)
    assert loaded.records == expected
    assert loaded.n_rows == len(rows) and loaded.errors == []


def test_qa_json_renders_question_answer_and_reads_each_split(tmp_path, registry):
    path = tmp_path / "qa.json"
    path.write_text(json.dumps({"train": [{"Question": "Capital of France?", "Answer": "Paris"}, {"Question": "2+2?", "Answer": "4"}],
                                "test": [{"Question": "Sky colour?", "Answer": " Blue "}]}))
    train = load_records(DatasetSpec(path=str(path), format="qa_json"), registry=registry)
    test = load_records(DatasetSpec(path=str(path), format="qa_json", split="test"), registry=registry)
    via_option = load_records(DatasetSpec(path=str(path), format="qa_json", options={"split": "test"}), registry=registry)
    assert train.records == [PromptCompletion(prompt="Question: Capital of France?\nAnswer:", completion="Paris"),
                             PromptCompletion(prompt="Question: 2+2?\nAnswer:", completion="4")]
    assert test.records == via_option.records == [PromptCompletion(prompt="Question: Sky colour?\nAnswer:", completion="Blue")]


def test_qa_json_unknown_split_names_the_file(tmp_path, registry):
    path = tmp_path / "qa.json"
    path.write_text(json.dumps({"train": [{"Question": "q", "Answer": "a"}]}))
    with pytest.raises(OAError, match=r"qa\.json: cannot read as json.*hint: a JSON object with a top-level list 'validation'"):
        load_records(DatasetSpec(path=str(path), format="qa_json", split="validation"), registry=registry)


BAD = [
    ("alpaca", {"instruction": "x", "input": ""}, r"2: field 'output': missing or null.*hint: the row has columns: instruction, input"),
    ("sharegpt", {"conversations": [{"from": "robot", "value": "x"}]}, r"2: field 'conversations\.0\.from': unknown role 'robot'"),
    ("openai", {"messages": [{"role": "user", "content": "x", "weight": 2}]}, r"2: field 'messages\.0\.weight': must be 0 or 1"),
    ("openai", {"messages": []}, r"2: field 'messages': List should have at least 1 item"),
    ("hh_rlhf", {"chosen": "\n\nHuman: a\n\nAssistant: b", "rejected": "\n\nHuman: a\n\nAssistant: b"},
     r"2: field 'rejected': no divergent reply"),
    ("hh_rlhf", {"chosen": "intro\n\nHuman: a\n\nAssistant: b", "rejected": "\n\nHuman: a\n\nAssistant: c"},
     r"2: field 'chosen': text before the first 'Human:' turn"),
    ("kto", {"prompt": "q", "completion": "a", "label": "maybe"}, r"2: field 'label': Input should be a valid boolean"),
    ("ranked", {"prompt": "q", "replies": ["only one"]}, r"2: field 'replies': List should have at least 2 items"),
    ("ranked", {"prompt": "q", "replies": ["a", "b"], "scores": [1, "x"]}, r"2: field 'scores': must be numbers"),
    ("preference", {"prompt": "q", "chosen": "a", "rejected": "b", "margin": "big"},
     r"2: field 'margin': expected a number, got str"),
    ("pretraining", {"text": ""}, r"2: field 'text': String should have at least 1 character"),
    ("prompt_reference", {"question": "q", "answer": "no marker"}, r"2: field 'reference': has no '####' marker"),
]


@pytest.mark.parametrize(("fmt", "bad_row", "pattern"), BAD, ids=[f"{b[0]}-{i}" for i, b in enumerate(BAD)])
def test_bad_row_names_file_line_and_field(tmp_path, registry, fmt, bad_row, pattern):
    _, spec, rows, _ = next(c for c in CASES if c[0] == fmt)
    with pytest.raises(RecordError, match=r"data\.jsonl:" + pattern) as err:  # row 1 is line 2
        load(tmp_path, registry, fmt, [rows[0], bad_row], **spec)
    assert "\n" not in str(err.value)


def test_unknown_option_and_options_on_a_format_without_options(tmp_path, registry):
    with pytest.raises(OAError, match=r"options\.role_mapping: unknown option.*hint: format 'sharegpt' options: role_map, role_key"):
        load(tmp_path, registry, "sharegpt", [], options={"role_mapping": {}})
    with pytest.raises(OAError, match=r"format 'alpaca' takes no options \(got sep\)"):
        load(tmp_path, registry, "alpaca", [], options={"sep": " "})


def test_field_map_renames_columns_and_checks_names(tmp_path, registry):
    rows = [{"q": "Hi", "ctx": "", "a": "Hello", "output": "ignored"}]
    loaded = load(tmp_path, registry, "alpaca", rows, field_map={"instruction": "q", "input": "ctx", "output": "a"})
    assert loaded.records == [Conversation(messages=[m(U, "Hi"), m(A, "Hello")])]
    with pytest.raises(OAError, match=r"field_map: column 'answer' not found.*hint: the file has columns: q, ctx, a, output"):
        load(tmp_path, registry, "alpaca", rows, field_map={"output": "answer"})
    with pytest.raises(OAError, match=r"field_map\.reply: 'reply' is not a field of format 'alpaca'"):
        load(tmp_path, registry, "alpaca", rows, field_map={"reply": "a"})


def test_every_builtin_is_registered_with_its_record_type(registry):
    expected = {"pretraining": Text, "alpaca": Conversation, "sharegpt": Conversation, "openai": Conversation,
                "qa_json": PromptCompletion, "turbo_chat": Conversation, "preference": PreferencePair,
                "hh_rlhf": PreferencePair, "kto": UnpairedFeedback, "ranked": RankedReplies,
                "classification": Classification, "prompt_reference": PromptWithReference}
    for name, record_type in expected.items():
        entry = registry.entry("dataset_format", name)
        assert entry.obj.record_type is record_type and entry.provider.distribution == "oa-data"
        assert entry.obj.description


def test_sharegpt_turn_weights_become_train_flags(tmp_path, registry):
    rows = [{"conversations": [{"from": "human", "value": "a"}, {"from": "gpt", "value": "b", "weight": 0},
                               {"from": "human", "value": "c"}, {"from": "gpt", "value": "d", "weight": 1}]}]
    assert load(tmp_path, registry, "sharegpt", rows).records == [
        Conversation(messages=[m(U, "a"), m(A, "b", train=False), m(U, "c"), m(A, "d", train=True)])]


def test_registering_formats_imports_nothing_heavy():
    import subprocess
    import sys

    code = ("import sys; from oa_core.plugins import PluginManager; import oa_data.plugin as p; "
            "pm = PluginManager(entry_points=False); pm.register(p, 'data'); reg = pm.registry(); "
            "assert not reg.failures, reg.failures; assert 'hh_rlhf' in reg.names('dataset_format'); "
            "import oa_data.loading, oa_data.mixing, oa_data.cache; "
            "heavy = {'datasets', 'transformers', 'torch', 'pyarrow'} & set(sys.modules); assert not heavy, heavy")
    subprocess.run([sys.executable, "-c", code], check=True)
