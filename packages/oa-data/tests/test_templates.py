"""Chat templates: golden renderings and supervised text, resolution order, sandboxing, errors."""

from __future__ import annotations

import subprocess
import sys

import pytest

from oa_core.errors import OAError, RecordError
from oa_data.settings import DataSettings
from oa_data.templates import (
    BUILTIN_TEMPLATES,
    ChatTemplate,
    TemplateError,
    render,
    resolve_template,
    with_end_of_turn,
)
from oa_data.tokenize import encode_messages

CHAT = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Hello"},
    {"role": "assistant", "content": "Hi there!"},
    {"role": "user", "content": "Bye"},
    {"role": "assistant", "content": "See you."},
]

RENDERED = {
    "chatml": "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHello<|im_end|>\n"
    "<|im_start|>assistant\nHi there!<|im_end|>\n<|im_start|>user\nBye<|im_end|>\n"
    "<|im_start|>assistant\nSee you.<|im_end|>\n",
    "llama-3": "<s><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>"
    "<|start_header_id|>user<|end_header_id|>\n\nHello<|eot_id|>"
    "<|start_header_id|>assistant<|end_header_id|>\n\nHi there!<|eot_id|>"
    "<|start_header_id|>user<|end_header_id|>\n\nBye<|eot_id|>"
    "<|start_header_id|>assistant<|end_header_id|>\n\nSee you.<|eot_id|>",
    "oasst": "<|system|>Be brief.</s><|prompter|>Hello</s><|assistant|>Hi there!</s>"
    "<|prompter|>Bye</s><|assistant|>See you.</s>",
    "llama-2": "<s>[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nHello [/INST] Hi there! </s><s>[INST] Bye [/INST] See you. </s>",
}

# the supervised text of each answer, per tokenizer family (GPT-2 attaches a leading space to its word)
SUPERVISED = {
    ("chatml", "llama"): ["Hi there!<|im_end|>", "See you.<|im_end|>"],
    ("chatml", "gpt2"): ["Hi there!<|im_end|>", "See you.<|im_end|>"],
    ("llama-3", "llama"): ["Hi there!<|eot_id|>", "See you.<|eot_id|>"],
    ("llama-3", "gpt2"): ["Hi there!<|eot_id|>", "See you.<|eot_id|>"],
    ("oasst", "llama"): ["Hi there!</s>", "See you.</s>"],
    ("oasst", "gpt2"): ["Hi there!<|endoftext|>", "See you.<|endoftext|>"],
    ("llama-2", "llama"): ["Hi there! </s>", "See you. </s>"],
    ("llama-2", "gpt2"): [" Hi there! <|endoftext|>", " See you. <|endoftext|>"],
}

ZEPHYR = (
    "{% for message in messages %}{{ '<|' + message['role'] + '|>\n' + message['content'] + eos_token + '\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}"
)


def family(tok) -> str:
    return "llama" if tok.eos_token == "</s>" else "gpt2"


@pytest.mark.parametrize("name", sorted(BUILTIN_TEMPLATES))
def test_builtin_golden(name, tok, runs):
    template = with_end_of_turn(BUILTIN_TEMPLATES[name], tok)
    expected = RENDERED[name].replace("<s>", tok.bos_token).replace("</s>", tok.eos_token)  # the tokenizer's
    assert render(template, CHAT, bos_token=tok.bos_token, eos_token=tok.eos_token) == expected
    enc = encode_messages(CHAT, tok, template, DataSettings())
    assert runs(enc, tok) == SUPERVISED[(name, family(tok))]


def test_builtins_are_registered_through_the_hook():
    from oa_core.plugins import PluginManager

    registry = PluginManager().registry()
    assert {"chatml", "llama-3", "oasst", "llama-2"} <= set(registry.names("chat_template"))
    assert registry.get("chat_template", "chatml") is BUILTIN_TEMPLATES["chatml"]


def test_turbo_style_golden(tok, runs):
    settings = DataSettings(prefix_template="<|im_start|>{role}\n", suffix_template="<|im_end|>\n",
                            role_tag_mapping={"user": "human", "assistant": "bot"})
    template = resolve_template(settings, tok)
    assert template.end_of_turn == "<|im_end|>"
    msgs = CHAT[1:3]
    assert render(template, msgs) == "<|im_start|>human\nHello<|im_end|>\n<|im_start|>bot\nHi there!<|im_end|>\n"
    assert render(template, msgs[:1], add_generation_prompt=True).endswith("<|im_end|>\n<|im_start|>bot\n")
    assert runs(encode_messages(msgs, tok, template, settings), tok) == ["Hi there!<|im_end|>"]


GUIDE = {"prefix_template": "<|start_header_id|>{role}<|end_header_id|>\n\n", "suffix_template": "<|eot_id|>"}


def turbo_reference(messages, prefix, suffix, mapping, generation=False) -> str:
    """The turbo-alignment guide's rule: ``prefix_template`` with ``{role}`` = ``role_tag_mapping[dataset role]``,
    then content and ``suffix_template`` per message (the dataset calls the assistant ``bot``); the bot's prefix
    starts the answer to generate."""
    tag = {r: mapping[{"assistant": "bot"}.get(r, r)] for r in ("system", "user", "assistant")}
    text = "".join(prefix.format(role=tag[m["role"]]) + m["content"] + suffix for m in messages)
    return text + (prefix.format(role=tag["assistant"]) if generation else "")


@pytest.mark.parametrize("mapping", [{"bot": "assistant", "user": "user", "system": "system"},  # the guide's
                                     {"bot": "model", "user": "human", "system": "context"}])
def test_role_tag_mapping_takes_the_turbo_guide_keys(tok, runs, mapping):
    settings = DataSettings(**GUIDE, role_tag_mapping=mapping)
    template = resolve_template(settings, tok)
    for messages, generation in ((CHAT, False), (CHAT[:4], True)):
        expected = turbo_reference(messages, GUIDE["prefix_template"], GUIDE["suffix_template"], mapping, generation)
        assert render(template, messages, generation) == expected
    assert runs(encode_messages(CHAT, tok, template, settings), tok) == ["Hi there!<|eot_id|>", "See you.<|eot_id|>"]


def test_role_tag_mapping_keys_are_checked_at_config_time(tmp_path):
    import yaml

    from oa_core.config import load_config
    from oa_core.errors import ConfigError
    from oa_data.templates import turbo_template

    def problems(data):
        path = tmp_path / "run.yaml"
        path.write_text(yaml.safe_dump({"method": "sft", "model": {"path": "unused"}, "data": data,
                                        "datasets": [{"path": "unused.jsonl", "format": "turbo_chat"}]}))
        with pytest.raises(ConfigError) as e:
            load_config(path)
        return [p.removeprefix(f"{path}: ") for p in e.value.problems]

    assert problems({**GUIDE, "role_tag_mapping": {"bot": "model", "gpt": "x", "assistant": "other"}}) == [
        "data.role_tag_mapping.gpt: unknown role 'gpt' (known: system, user, assistant, tool, bot)",
        "data.role_tag_mapping.bot: 'bot' is the role 'assistant', which is mapped to another tag ('model' vs 'other')"]
    assert problems({"chat_template": "chatml", "role_tag_mapping": {"user": "human"}}) == [
        "data.role_tag_mapping: only turbo-style templates use it (set data.prefix_template and data.suffix_template), "
        "so it would be ignored"]
    with pytest.raises(TemplateError, match=r"role_tag_mapping\.human: unknown role 'human'"):
        turbo_template("<{role}>", "</s>", {"human": "h"})


def test_tokenizer_jinja_matches_transformers_and_infers_end_of_turn(raw_tokenizers, runs):
    import copy

    tok = copy.deepcopy(raw_tokenizers["llama"])
    tok.chat_template = ZEPHYR
    template = resolve_template(DataSettings(), tok)  # no name: the tokenizer's own template
    assert template.name == "tokenizer" and template.end_of_turn == "</s>"
    for msgs in (CHAT, CHAT[1:3], CHAT[:2]):
        for gen in (False, True):
            ours = render(template, msgs, gen, bos_token="<s>", eos_token="</s>")
            assert ours == tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=gen)
    enc = encode_messages(CHAT, tok, template, DataSettings())
    assert runs(enc, tok) == ["Hi there!</s>", "See you.</s>"]


def test_inline_and_file_jinja(tmp_path, tok, runs):
    inline = resolve_template(DataSettings(chat_template_jinja=ZEPHYR), tok)
    path = tmp_path / "zephyr.jinja"
    path.write_text(ZEPHYR)
    from_file = resolve_template(DataSettings(chat_template_jinja=str(path)), tok)
    assert (inline.name, from_file.name) == ("inline", str(path))
    for template in (inline, from_file):
        enc = encode_messages(CHAT[1:3], tok, template, DataSettings())
        assert runs(enc, tok) == [f"Hi there!{tok.eos_token}"]
    with pytest.raises(TemplateError, match="not found"):
        resolve_template(DataSettings(chat_template_jinja="missing.jinja"), tok)


def test_resolution_order(raw_tokenizers, chat_tokenizers):
    import copy

    tok = copy.deepcopy(chat_tokenizers["llama"])
    tok.chat_template = ZEPHYR
    turbo = {"prefix_template": "[{role}] ", "suffix_template": "</s>"}
    assert resolve_template(DataSettings(chat_template_jinja=ZEPHYR, chat_template="chatml", **turbo), tok).name == "inline"
    assert resolve_template(DataSettings(chat_template="chatml", **turbo), tok).name == "turbo"
    assert resolve_template(DataSettings(chat_template="chatml"), tok).name == "chatml"
    assert resolve_template(DataSettings(chat_template="tokenizer"), tok).name == "tokenizer"
    assert resolve_template(DataSettings(), tok).name == "tokenizer"
    with pytest.raises(OAError, match="did you mean 'chatml'"):
        resolve_template(DataSettings(chat_template="chatlm"), tok)
    with pytest.raises(TemplateError, match="no chat template") as e:
        resolve_template(DataSettings(), raw_tokenizers["gpt2"])
    assert "data.chat_template" in e.value.hint
    with pytest.raises(TemplateError, match="both"):
        resolve_template(DataSettings(prefix_template="<{role}>"), tok)


def test_sandbox_blocks_unsafe_access():
    evil = ChatTemplate("evil", "{{ ''.__class__.__mro__[1].__subclasses__() }}", "</s>")
    with pytest.raises(TemplateError, match="failed to render") as e:
        render(evil, CHAT)
    assert "\n" not in str(e.value)
    mutating = ChatTemplate("mutating", "{% set _ = messages.append(1) %}{{ messages }}", "</s>")
    with pytest.raises(TemplateError, match="SecurityError"):
        render(mutating, CHAT)


def test_syntax_error_is_one_line():
    with pytest.raises(TemplateError, match=r"chat template 'bad': line 1") as e:
        render(ChatTemplate("bad", "{% for m in messages %}{{ m }}"), CHAT)
    assert "\n" not in str(e.value)


def test_raise_exception_in_template():
    with pytest.raises(TemplateError, match="oasst template has no role tool"):
        render(BUILTIN_TEMPLATES["oasst"], [{"role": "tool", "content": "x"}], eos_token="</s>")


def test_templates_package_imports_nothing_heavy():
    code = ("import sys, oa_data.plugin, oa_data.templates; "
            "bad = [m for m in ('jinja2', 'transformers', 'torch', 'numpy') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_no_end_of_turn_token_is_a_clear_error(raw_tokenizers):
    bare = ChatTemplate("bare", "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}")
    with pytest.raises(TemplateError, match="no special token follows an assistant answer") as e:
        with_end_of_turn(bare, raw_tokenizers["llama"])
    assert "data.end_of_turn" in e.value.hint


def test_template_that_never_renders_answers(tok):
    users_only = ChatTemplate("users-only", "{% for m in messages %}{% if m['role'] == 'user' %}"
                              "{{ m['content'] + eos_token }}{% endif %}{% endfor %}", tok.eos_token)
    with pytest.raises(RecordError, match=r"data.jsonl: record 4: message 1 \(assistant\).*does not render"):
        encode_messages(CHAT[1:3], tok, users_only, DataSettings(), index=4, source="data.jsonl")


def test_template_changing_content_is_rejected(tok):
    upper = ChatTemplate("upper", "{% for m in messages %}{{ m['content'] | upper + eos_token }}{% endfor %}",
                         tok.eos_token)
    with pytest.raises(RecordError, match="record 2: message 0 .*changes the message text"):
        encode_messages(CHAT[1:3], tok, upper, DataSettings(), index=2)


def test_prefix_inconsistent_template_is_rejected(tok):
    # the last message is marked: a conversation's rendering does not extend the rendering of its prefixes
    odd = ChatTemplate("odd", "{% for m in messages %}{% if loop.last %}[LAST]{% endif %}"
                       "{{ m['content'] + eos_token }}{% endfor %}", tok.eos_token)
    with pytest.raises(RecordError, match=r"record 0: message 0 \(user\): .*renders it differently when more"):
        encode_messages(CHAT[1:3], tok, odd, DataSettings(), index=0)


def test_missing_end_of_turn_on_last_message_is_caught_by_the_cross_check(tok):
    # the end of turn is left out after the last message: the answer's turn is cut short when it is last
    odd = ChatTemplate("odd", "{% for m in messages %}{{ m['role'] + ': ' + m['content'] }}"
                       "{% if not loop.last %}{{ eos_token }}{% endif %}{% endfor %}", tok.eos_token)
    with pytest.raises(RecordError, match=r"record 0: loss masks .* disagree at token \d+ .*message 1\)"):
        encode_messages(CHAT[1:4], tok, odd, DataSettings(), index=0)


def test_disagreeing_masks_are_reported(tok):
    # the generation prompt stops before the role name, so prefix rendering would supervise "assistant\n"
    skewed = ChatTemplate(
        "skewed",
        "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>\n' }}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|im_start|>' }}{% endif %}", "<|im_end|>")
    with pytest.raises(RecordError, match="record 9: loss masks from message boundaries and from prefix rendering disagree"):
        encode_messages(CHAT[1:3], tok, skewed, DataSettings(), index=9)


QWEN_STYLE = """{%- if messages[0]['role'] == 'system' %}
    {{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}
{%- else %}
    {{- '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}
{%- endif %}
{%- for message in messages %}
    {%- if (message.role == "user") or (message.role == "system" and not loop.first) or (message.role == "assistant") %}
        {{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\\n' }}
{%- endif %}
"""


def test_template_with_default_system_prompt_and_whitespace_control(chat_tokenizers, runs):
    import copy

    tok = copy.deepcopy(chat_tokenizers["gpt2"])
    tok.chat_template = QWEN_STYLE
    template = resolve_template(DataSettings(chat_template="tokenizer"), tok)
    assert template.end_of_turn == "<|im_end|>"
    msgs = CHAT[1:3]
    assert render(template, msgs) == tok.apply_chat_template(msgs, tokenize=False)
    assert render(template, msgs).startswith("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n")
    for chat in (msgs, CHAT):
        enc = encode_messages(chat, tok, template, DataSettings(only_answer_loss=True))
        assert runs(enc, tok) == [f"{chat[-1]['content']}<|im_end|>"]


def test_end_of_turn_inferred_from_tokens_still_to_be_added(raw_tokenizers):
    chatml = BUILTIN_TEMPLATES["chatml"].jinja
    settings = DataSettings(chat_template_jinja=chatml, add_special_tokens=["<|im_start|>", "<|im_end|>"])
    assert resolve_template(settings, raw_tokenizers["gpt2"]).end_of_turn == "<|im_end|>"


@pytest.mark.parametrize("family", ["llama", "gpt2"])
@pytest.mark.parametrize("data", [
    {"chat_template": "chatml"}, {"chat_template": "llama-3"}, {"chat_template": "oasst"}, {"chat_template": "llama-2"},
    {"prefix_template": "<|im_start|>{role}\n", "suffix_template": "<|im_end|>\n",
     "role_tag_mapping": {"user": "human \"q\" ü", "assistant": "bot"}},
    {"chat_template_jinja": ZEPHYR},
])
def test_the_saved_tokenizer_renders_prompts_as_training_did(tmp_path, raw_tokenizers, family, data):
    """The run's tokenizer carries the training template (variables inlined), so plain transformers'
    ``apply_chat_template`` on the saved folder renders exactly what oa rendered (and vLLM, which uses it)."""
    import copy

    import yaml
    from transformers import AutoTokenizer

    from oa_core.config import load_config
    from oa_data.templates import template_variables
    from oa_data.tokenizer import prepare_run_tokenizer

    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump({"method": "sft", "model": {"path": "unused"}, "data": data,
                                    "datasets": [{"path": "unused.jsonl", "format": "openai"}]}))
    cfg = load_config(path).config
    prepared = prepare_run_tokenizer(cfg, copy.deepcopy(raw_tokenizers[family]))
    prepared.tokenizer.save_pretrained(tmp_path / "saved")
    saved = AutoTokenizer.from_pretrained(tmp_path / "saved")
    variables = template_variables(prepared.tokenizer)
    for messages, generation in ((CHAT, False), (CHAT[:4], True)):
        ours = render(prepared.template, messages, generation, **variables)
        assert saved.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation) == ours
