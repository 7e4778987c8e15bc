"""Hugging Face's ``{% generation %}`` markers: rendered as transformers renders them (as nothing), used as a
third loss-mask check, and oa's masks pinned against transformers' ``return_assistant_tokens_mask``
(leading whitespace of an answer included), on TRL's training templates too."""

from __future__ import annotations

import copy
import importlib.resources
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from oa_core.errors import RecordError
from oa_data.settings import DataSettings
from oa_data.special_tokens import add_special_tokens
from oa_data.templates import BUILTIN_TEMPLATES, ChatTemplate, render, resolve_template, template_variables
from oa_data.tokenize import IGNORE_INDEX, encode_messages

CHATML_GENERATION = (  # chatml with the answer and its end of turn marked
    "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\n' }}"
    "{% if m['role'] == 'assistant' %}{% generation %}{{ m['content'] + '<|im_end|>' }}{% endgeneration %}"
    "{% else %}{{ m['content'] + '<|im_end|>' }}{% endif %}{{ '\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
LEADING_SPACE = [
    {"role": "user", "content": "Hello"},
    {"role": "assistant", "content": "\n\nSure."},
    {"role": "user", "content": "And?"},
    {"role": "assistant", "content": " \n Ok then\n"},
]
TRL_TEMPLATES = ("llama3", "qwen2_5", "gemma")  # gemma: no system message, alternating roles


def _empty(folder):
    """An empty data file: configs name real paths (they are checked), these tests never read it."""
    path = folder / "empty.jsonl"
    path.write_text("")
    return path


def trl_training_template(name: str) -> str:
    """A training template shipped with TRL (``{% generation %}`` around assistant output)."""
    return (importlib.resources.files("trl") / "chat_templates" / f"{name}_training.jinja").read_text()


def transformers_mask(tok, jinja: str, messages) -> tuple[list[int], list[int]]:
    """Token ids and ``assistant_masks`` from transformers' ``apply_chat_template``."""
    out = tok.apply_chat_template(messages, chat_template=jinja, tokenize=True, return_dict=True,
                                  return_assistant_tokens_mask=True)
    return list(out["input_ids"]), list(out["assistant_masks"])


def oa_mask(enc) -> list[int]:
    return [int(label != IGNORE_INDEX) for label in enc.labels]


@pytest.fixture(params=["llama", "gpt2"])
def gen_tok(request, chat_tokenizers):
    """A tokenizer that knows the chat tokens and gemma's turn tokens."""
    tok = copy.deepcopy(chat_tokenizers[request.param])
    add_special_tokens(tok, ["<start_of_turn>", "<end_of_turn>"])
    return tok


def test_answer_leading_whitespace_is_supervised_as_transformers_does(tok):
    marked = resolve_template(DataSettings(chat_template_jinja=CHATML_GENERATION), tok)
    ids, mask = transformers_mask(tok, CHATML_GENERATION, LEADING_SPACE)
    for template in (marked, BUILTIN_TEMPLATES["chatml"]):  # the markers change nothing but the check
        enc = encode_messages(LEADING_SPACE, tok, template, DataSettings())
        assert enc.input_ids == ids and oa_mask(enc) == mask
    stripped = [{**m, "content": m["content"].lstrip()} for m in LEADING_SPACE]
    assert enc.num_supervised > encode_messages(stripped, tok, marked, DataSettings()).num_supervised


@pytest.mark.parametrize("name", ["chatml-generation", *TRL_TEMPLATES])
def test_generation_tags_render_as_in_transformers(raw_tokenizers, name):
    tok = raw_tokenizers["llama"]
    jinja = CHATML_GENERATION if name == "chatml-generation" else trl_training_template(name)
    template = ChatTemplate(name, jinja)
    for messages in (LEADING_SPACE, LEADING_SPACE[:3]):
        for generation in (False, True):
            ours = render(template, messages, generation, **template_variables(tok))
            assert ours == tok.apply_chat_template(messages, chat_template=jinja, tokenize=False,
                                                   add_generation_prompt=generation)


@pytest.mark.parametrize("name", TRL_TEMPLATES)
def test_trl_training_templates_as_tokenizer_templates_agree_with_transformers(gen_tok, name):
    """TRL's blocks also hold whitespace around the answer (``'\\n' + content + '<|im_end|>\\n'``); oa's mask
    agrees on every token with text, and exactly where the block holds just the answer and its end of turn."""
    gen_tok.chat_template = trl_training_template(name)
    template = resolve_template(DataSettings(), gen_tok)  # the tokenizer's own template, markers and all
    enc = encode_messages(LEADING_SPACE, gen_tok, template, DataSettings())
    ids, mask = transformers_mask(gen_tok, gen_tok.chat_template, LEADING_SPACE)
    assert enc.input_ids == ids
    differ = [k for k, (a, b) in enumerate(zip(oa_mask(enc), mask, strict=True)) if a != b]
    assert all(gen_tok.decode([ids[k]]).strip() == "" for k in differ)
    assert (differ == []) == (name == "llama3")


def test_the_saved_tokenizer_keeps_the_markers(tmp_path, raw_tokenizers):
    import yaml
    from transformers import AutoTokenizer

    from oa_core.config import load_config
    from oa_data.tokenizer import prepare_run_tokenizer

    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump({"method": "sft", "model": {"path": "unused"},
                                    "data": {"chat_template_jinja": CHATML_GENERATION,
                                             "add_special_tokens": ["<|im_start|>", "<|im_end|>"]},
                                    "datasets": [{"path": str(_empty(tmp_path)), "format": "openai"}]}))
    cfg = load_config(path).config
    prepared = prepare_run_tokenizer(cfg, copy.deepcopy(raw_tokenizers["gpt2"]))
    prepared.tokenizer.save_pretrained(tmp_path / "saved")
    saved = AutoTokenizer.from_pretrained(tmp_path / "saved")
    enc = encode_messages(LEADING_SPACE, prepared.tokenizer, prepared.template, DataSettings())
    assert transformers_mask(saved, saved.chat_template, LEADING_SPACE) == (enc.input_ids, oa_mask(enc))


def test_markers_with_other_policies(tok, runs):
    template = resolve_template(DataSettings(chat_template_jinja=CHATML_GENERATION), tok)
    last = encode_messages(LEADING_SPACE, tok, template, DataSettings(only_answer_loss=True))
    assert runs(last, tok) == [runs(encode_messages(LEADING_SPACE, tok, template, DataSettings()), tok)[1]]
    everything = encode_messages(LEADING_SPACE, tok, template, DataSettings(train_on_inputs=True))
    assert everything.labels == everything.input_ids


@pytest.mark.parametrize(("block", "problem"), [
    ("{% generation %}{{ '<|im_start|>assistant\n' + m['content'] + '<|im_end|>' }}{% endgeneration %}",
     "hold '<|im_start|>assistant', which oa does not supervise"),
    ("{{ '<|im_start|>assistant\n' }}{% generation %}{{ m['content'] }}{% endgeneration %}{{ '<|im_end|>' }}",
     "leave out '<|im_end|>', which oa supervises as part of the answer"),
], ids=["header inside", "end of turn outside"])
def test_markers_that_disagree_with_the_mask_are_a_record_error(tok, block, problem):
    jinja = (f"{{% for m in messages %}}{{% if m['role'] == 'assistant' %}}{block}{{% else %}}"
             "{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>' }}{% endif %}{{ '\n' }}{% endfor %}"
             "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")
    template = ChatTemplate("skewed", jinja, "<|im_end|>")
    with pytest.raises(RecordError) as err:
        encode_messages(LEADING_SPACE, tok, template, DataSettings(), source="chat.jsonl:7")
    assert err.value.message.startswith(f"chat.jsonl:7: message 1 (assistant): the template's {{% generation %}} "
                                        f"blocks {problem} (character ")
    assert "\n" not in str(err.value)


def test_blocks_whose_output_the_template_reworks_are_refused(tok):
    block = "{% generation %}{{ m['content'] + '<|im_end|>' }}{% endgeneration %}"
    reworked = "{% set answer %}" + block + "{% endset %}{{ answer[:-1] + '>' }}"
    template = ChatTemplate("reworked", CHATML_GENERATION.replace(block, reworked), "<|im_end|>")
    with pytest.raises(RecordError, match=re.escape("chat template 'reworked': its {% generation %} blocks do not "
                                                    "render in place")):
        encode_messages(LEADING_SPACE, tok, template, DataSettings())


pieces = st.sampled_from(["Hi", " there", "!", "\n", "\n\n", "  ", " ", "é", "日本", "\t", "0", "Sure."])
content = st.lists(pieces, max_size=5).map("".join)


@st.composite
def conversations(draw):
    n = draw(st.integers(1, 3))
    return [m for _ in range(n) for m in ({"role": "user", "content": draw(content)},
                                          {"role": "assistant", "content": draw(content)})]


@settings(max_examples=30, deadline=None)
@given(messages=conversations(), family=st.sampled_from(["llama", "gpt2"]))
def test_masks_equal_transformers_assistant_masks(chat_tokenizers, messages, family):
    tok = chat_tokenizers[family]
    template = ChatTemplate("chatml-generation", CHATML_GENERATION, "<|im_end|>")
    enc = encode_messages(messages, tok, template, DataSettings())
    ids, mask = transformers_mask(tok, CHATML_GENERATION, messages)
    assert enc.input_ids == ids and oa_mask(enc) == mask
