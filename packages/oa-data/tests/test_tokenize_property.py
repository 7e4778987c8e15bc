"""Property tests: on random conversations both mask derivations agree, and the supervised text of each
message is exactly its content followed by the end-of-turn string."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from oa_core.errors import RecordError
from oa_data.settings import DataSettings
from oa_data.templates import BUILTIN_TEMPLATES, ChatTemplate, turbo_template, with_end_of_turn
from oa_data.tokenize import IGNORE_INDEX, encode_messages, render_with_spans

ZEPHYR = ChatTemplate(
    "zephyr",
    "{% for message in messages %}{{ '<|' + message['role'] + '|>\n' + message['content'] + eos_token + '\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}",
)
QWEN_STYLE = ChatTemplate(  # a default system prompt when none is given; the first system message outside the loop
    "qwen-style",
    "{%- if messages[0]['role'] == 'system' %}{{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}"
    "{%- else %}{{- '<|im_start|>system\\nYou are helpful.<|im_end|>\\n' }}{%- endif %}"
    "{%- for m in messages %}{%- if m.role != 'system' or not loop.first %}"
    "{{- '<|im_start|>' + m.role + '\\n' + m.content + '<|im_end|>\\n' }}{%- endif %}{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}",
    "<|im_end|>",
)
TURBO = turbo_template("<|im_start|>{role}\n", "<|im_end|>\n", {"user": "human", "bot": "gpt"})
CHATML_GENERATION = ChatTemplate(  # Hugging Face's assistant markers: the third mask check
    "chatml-generation",
    "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\n' }}{% if m['role'] == 'assistant' %}{% generation %}"
    "{{ m['content'] + '<|im_end|>' }}{% endgeneration %}{% else %}{{ m['content'] + '<|im_end|>' }}{% endif %}"
    "{{ '\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}",
    "<|im_end|>",
)
TEMPLATES = {"chatml": BUILTIN_TEMPLATES["chatml"], "llama-3": BUILTIN_TEMPLATES["llama-3"],
             "oasst": BUILTIN_TEMPLATES["oasst"], "turbo": TURBO, "zephyr": ZEPHYR,
             "qwen-style": QWEN_STYLE, "chatml-generation": CHATML_GENERATION}
TRIMS = {"llama-3"}  # templates that trim the content

pieces = st.sampled_from(["Hi", " there", "!", "\n", "  ", "é", "日本", "<|im_end|>", "</s>", "assistant", "\t", "0"])
content = st.lists(st.one_of(pieces, st.text(st.characters(codec="utf-8", exclude_categories=["Cs", "Co"]),
                                             max_size=5)), max_size=6).map("".join)
train_flag = st.sampled_from([None, None, True, False])


@st.composite
def conversations(draw):
    msgs = []
    if draw(st.booleans()):
        msgs.append({"role": "system", "content": draw(content), "train": draw(train_flag)})
    for k in range(draw(st.integers(1, 6))):
        msgs.append({"role": "user" if k % 2 == 0 else "assistant", "content": draw(content), "train": draw(train_flag)})
    return msgs


def expected_flags(msgs, policy):
    last = max((i for i, m in enumerate(msgs) if m["role"] == "assistant"), default=-1)
    out = []
    for i, m in enumerate(msgs):
        if m["train"] is not None:
            out.append(m["train"])
        else:
            out.append({"default": m["role"] == "assistant", "only_answer_loss": i == last, "train_on_inputs": True}[policy])
    return out


@pytest.mark.parametrize("name", sorted(TEMPLATES))
@settings(max_examples=25, deadline=None)
@given(msgs=conversations(), policy=st.sampled_from(["default", "only_answer_loss", "train_on_inputs"]),
       family=st.sampled_from(["llama", "gpt2"]))
def test_masks_from_both_methods_agree(chat_tokenizers, name, msgs, policy, family):
    tok = chat_tokenizers[family]
    template = with_end_of_turn(TEMPLATES[name], tok)
    data = DataSettings(**({policy: True} if policy != "default" else {}))
    flags = expected_flags(msgs, policy)
    base = policy == "train_on_inputs"
    r = render_with_spans(msgs, tok, template, data)
    assert r.boundary_spans == r.prefix_spans
    assert sorted(r.boundary_spans) == [i for i, f in enumerate(flags) if f != base]
    for i, (s, e) in r.boundary_spans.items():
        c = msgs[i]["content"]
        c = c.strip() if name in TRIMS else c  # leading whitespace of an answer is supervised too
        assert r.text[s:e] == c + template.end_of_turn
    if not base and not any(flags):
        with pytest.raises(RecordError, match="no token is supervised"):
            encode_messages(msgs, tok, template, data)
        return
    enc = encode_messages(msgs, tok, template, data)
    assert len(enc.labels) == len(enc.input_ids)
    assert all(lab in (IGNORE_INDEX, t) for t, lab in zip(enc.input_ids, enc.labels, strict=True))
    eot_id = tok.convert_tokens_to_ids(template.end_of_turn)
    # every end-of-turn token closing a supervised message is itself supervised
    for i, (s, e) in enumerate(enc.turns):
        if flags[i] and not base:
            closing = [k for k in range(s, e) if enc.input_ids[k] == eot_id]
            assert closing and enc.labels[closing[-1]] == eot_id
