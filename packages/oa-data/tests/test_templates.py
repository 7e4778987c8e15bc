"""Chat templates: golden renderings and supervised text, the official templates they follow, resolution order,
sandboxing, errors."""

from __future__ import annotations

import copy
import subprocess
import sys

import pytest

from oa_core.errors import OAError, RecordError
from oa_data.settings import DataSettings
from oa_data.special_tokens import add_special_tokens
from oa_data.templates import (
    BUILTIN_TEMPLATES,
    ChatTemplate,
    TemplateError,
    render,
    resolve_template,
    template_variables,
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

RENDERED = {  # <s> and </s> stand for the tokenizer's bos and eos
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
    "mistral": "<s>[INST] Be brief.\n\nHello[/INST] Hi there!</s>[INST] Bye[/INST] See you.</s>",
    "gemma": "<s><start_of_turn>user\nBe brief.\n\nHello<end_of_turn>\n<start_of_turn>model\nHi there!<end_of_turn>\n"
    "<start_of_turn>user\nBye<end_of_turn>\n<start_of_turn>model\nSee you.<end_of_turn>\n",
    "phi-3": "<|system|>\nBe brief.<|end|>\n<|user|>\nHello<|end|>\n<|assistant|>\nHi there!<|end|>\n"
    "<|user|>\nBye<|end|>\n<|assistant|>\nSee you.<|end|>\n",
    "qwen2.5": "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHello<|im_end|>\n"
    "<|im_start|>assistant\nHi there!<|im_end|>\n<|im_start|>user\nBye<|im_end|>\n"
    "<|im_start|>assistant\nSee you.<|im_end|>\n",
    "zephyr": "<|system|>\nBe brief.</s>\n<|user|>\nHello</s>\n<|assistant|>\nHi there!</s>\n<|user|>\nBye</s>\n"
    "<|assistant|>\nSee you.</s>\n",
    "alpaca": "<s>Be brief.\n\n### Instruction:\nHello\n\n### Response:\nHi there!</s>\n\n"
    "### Instruction:\nBye\n\n### Response:\nSee you.</s>",
}

# CHAT[:4] with the generation prompt
GENERATION = {
    "chatml": "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHello<|im_end|>\n"
    "<|im_start|>assistant\nHi there!<|im_end|>\n<|im_start|>user\nBye<|im_end|>\n<|im_start|>assistant\n",
    "llama-3": "<s><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>"
    "<|start_header_id|>user<|end_header_id|>\n\nHello<|eot_id|>"
    "<|start_header_id|>assistant<|end_header_id|>\n\nHi there!<|eot_id|>"
    "<|start_header_id|>user<|end_header_id|>\n\nBye<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n",
    "oasst": "<|system|>Be brief.</s><|prompter|>Hello</s><|assistant|>Hi there!</s><|prompter|>Bye</s><|assistant|>",
    "llama-2": "<s>[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nHello [/INST] Hi there! </s><s>[INST] Bye [/INST]",
    "mistral": "<s>[INST] Be brief.\n\nHello[/INST] Hi there!</s>[INST] Bye[/INST]",
    "gemma": "<s><start_of_turn>user\nBe brief.\n\nHello<end_of_turn>\n<start_of_turn>model\nHi there!<end_of_turn>\n"
    "<start_of_turn>user\nBye<end_of_turn>\n<start_of_turn>model\n",
    "phi-3": "<|system|>\nBe brief.<|end|>\n<|user|>\nHello<|end|>\n<|assistant|>\nHi there!<|end|>\n"
    "<|user|>\nBye<|end|>\n<|assistant|>\n",
    "qwen2.5": "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHello<|im_end|>\n"
    "<|im_start|>assistant\nHi there!<|im_end|>\n<|im_start|>user\nBye<|im_end|>\n<|im_start|>assistant\n",
    "zephyr": "<|system|>\nBe brief.</s>\n<|user|>\nHello</s>\n<|assistant|>\nHi there!</s>\n<|user|>\nBye</s>\n"
    "<|assistant|>\n",
    "alpaca": "<s>Be brief.\n\n### Instruction:\nHello\n\n### Response:\nHi there!</s>\n\n"
    "### Instruction:\nBye\n\n### Response:\n",
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
    ("mistral", "llama"): ["Hi there!</s>", "See you.</s>"],
    ("mistral", "gpt2"): [" Hi there!<|endoftext|>", " See you.<|endoftext|>"],
    ("gemma", "llama"): ["Hi there!<end_of_turn>", "See you.<end_of_turn>"],
    ("gemma", "gpt2"): ["Hi there!<end_of_turn>", "See you.<end_of_turn>"],
    ("phi-3", "llama"): ["Hi there!<|end|>", "See you.<|end|>"],
    ("phi-3", "gpt2"): ["Hi there!<|end|>", "See you.<|end|>"],
    ("qwen2.5", "llama"): ["Hi there!<|im_end|>", "See you.<|im_end|>"],
    ("qwen2.5", "gpt2"): ["Hi there!<|im_end|>", "See you.<|im_end|>"],
    ("zephyr", "llama"): ["Hi there!</s>", "See you.</s>"],
    ("zephyr", "gpt2"): ["Hi there!<|endoftext|>", "See you.<|endoftext|>"],
    ("alpaca", "llama"): ["Hi there!</s>", "See you.</s>"],
    ("alpaca", "gpt2"): ["Hi there!<|endoftext|>", "See you.<|endoftext|>"],
}

ZEPHYR = (
    "{% for message in messages %}{{ '<|' + message['role'] + '|>\n' + message['content'] + eos_token + '\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}"
)


def _empty(folder):
    """An empty data file: configs name real paths (they are checked), these tests never read it."""
    path = folder / "empty.jsonl"
    path.write_text("")
    return path


@pytest.fixture(scope="module")
def run_tokenizer(raw_tokenizers):
    """``run_tokenizer(name, family)``: the family's tokenizer with the built-in template's special tokens added, as a
    run adds them."""
    made = {}

    def get(name, family):
        if (name, family) not in made:
            tok = copy.deepcopy(raw_tokenizers[family])
            add_special_tokens(tok, BUILTIN_TEMPLATES[name].special_tokens)
            made[name, family] = tok
        return made[name, family]

    return get


def with_tokens_of(text: str, tok) -> str:
    return text.replace("<s>", tok.bos_token).replace("</s>", tok.eos_token)


@pytest.mark.parametrize("family", ["llama", "gpt2"])
@pytest.mark.parametrize("name", sorted(BUILTIN_TEMPLATES))
def test_builtin_golden(name, family, run_tokenizer, runs):
    tok = run_tokenizer(name, family)
    template = with_end_of_turn(BUILTIN_TEMPLATES[name], tok)
    variables = template_variables(tok)
    assert render(template, CHAT, **variables) == with_tokens_of(RENDERED[name], tok)
    assert render(template, CHAT[:4], add_generation_prompt=True, **variables) == with_tokens_of(GENERATION[name], tok)
    enc = encode_messages(CHAT, tok, template, DataSettings())
    assert runs(enc, tok) == SUPERVISED[(name, family)]


def test_builtins_are_registered_through_the_hook():
    from oa_core.plugins import PluginManager

    registry = PluginManager().registry()
    assert {"chatml", "llama-3", "oasst", "llama-2", "mistral", "gemma", "phi-3", "qwen2.5", "zephyr",
            "alpaca"} <= set(registry.names("chat_template"))
    assert registry.get("chat_template", "chatml") is BUILTIN_TEMPLATES["chatml"]


# The official chat templates, pasted as published (each tokenizer_config.json's "chat_template").
# mistralai/Mistral-7B-Instruct-v0.3 (copied from zhudotexe/kani, kani/prompts/impl/mistral.py)
OFFICIAL_MISTRAL = r"""{%- if messages[0]["role"] == "system" %}
    {%- set system_message = messages[0]["content"] %}
    {%- set loop_messages = messages[1:] %}
{%- else %}
    {%- set loop_messages = messages %}
{%- endif %}
{%- if not tools is defined %}
    {%- set tools = none %}
{%- endif %}
{%- set user_messages = loop_messages | selectattr("role", "equalto", "user") | list %}

{#- This block checks for alternating user/assistant messages, skipping tool calling messages #}
{%- set ns = namespace() %}
{%- set ns.index = 0 %}
{%- for message in loop_messages %}
    {%- if not (message.role == "tool" or message.role == "tool_results" or (message.tool_calls is defined and message.tool_calls is not none)) %}
        {%- if (message["role"] == "user") != (ns.index % 2 == 0) %}
            {{- raise_exception("After the optional system message, conversation roles must alternate user/assistant/user/assistant/...") }}
        {%- endif %}
        {%- set ns.index = ns.index + 1 %}
    {%- endif %}
{%- endfor %}

{{- bos_token }}
{%- for message in loop_messages %}
    {%- if message["role"] == "user" %}
        {%- if tools is not none and (message == user_messages[-1]) %}
            {{- "[AVAILABLE_TOOLS] [" }}
            {%- for tool in tools %}
                {%- set tool = tool.function %}
                {{- '{"type": "function", "function": {' }}
                {%- for key, val in tool.items() if key != "return" %}
                    {%- if val is string %}
                        {{- '"' + key + '": "' + val + '"' }}
                    {%- else %}
                        {{- '"' + key + '": ' + val|tojson }}
                    {%- endif %}
                    {%- if not loop.last %}
                        {{- ", " }}
                    {%- endif %}
                {%- endfor %}
                {{- "}}" }}
                {%- if not loop.last %}
                    {{- ", " }}
                {%- else %}
                    {{- "]" }}
                {%- endif %}
            {%- endfor %}
            {{- "[/AVAILABLE_TOOLS]" }}
            {%- endif %}
        {%- if loop.last and system_message is defined %}
            {{- "[INST] " + system_message + "\n\n" + message["content"] + "[/INST]" }}
        {%- else %}
            {{- "[INST] " + message["content"] + "[/INST]" }}
        {%- endif %}
    {%- elif message.tool_calls is defined and message.tool_calls is not none %}
        {{- "[TOOL_CALLS] [" }}
        {%- for tool_call in message.tool_calls %}
            {%- set out = tool_call.function|tojson %}
            {{- out[:-1] }}
            {%- if not tool_call.id is defined or tool_call.id|length != 9 %}
                {{- raise_exception("Tool call IDs should be alphanumeric strings with length 9!") }}
            {%- endif %}
            {{- ', "id": "' + tool_call.id + '"}' }}
            {%- if not loop.last %}
                {{- ", " }}
            {%- else %}
                {{- "]" + eos_token }}
            {%- endif %}
        {%- endfor %}
    {%- elif message["role"] == "assistant" %}
        {{- " " + message["content"]|trim + eos_token}}
    {%- elif message["role"] == "tool_results" or message["role"] == "tool" %}
        {%- if message.content is defined and message.content.content is defined %}
            {%- set content = message.content.content %}
        {%- else %}
            {%- set content = message.content %}
        {%- endif %}
        {{- '[TOOL_RESULTS] {"content": ' + content|string + ", " }}
        {%- if not message.tool_call_id is defined or message.tool_call_id|length != 9 %}
            {{- raise_exception("Tool call IDs should be alphanumeric strings with length 9!") }}
        {%- endif %}
        {{- '"call_id": "' + message.tool_call_id + '"}[/TOOL_RESULTS]' }}
    {%- else %}
        {{- raise_exception("Only user and assistant roles are supported, with the exception of an initial optional system message!") }}
    {%- endif %}
{%- endfor %}
"""

# google/gemma-3-*-it (as printed from tokenizer.chat_template in unslothai/unsloth, unsloth/chat_templates.py)
OFFICIAL_GEMMA = r"""{{ bos_token }}
{%- if messages[0]['role'] == 'system' -%}
    {%- if messages[0]['content'] is string -%}
        {%- set first_user_prefix = messages[0]['content'] + '\n\n' -%}
    {%- else -%}
        {%- set first_user_prefix = messages[0]['content'][0]['text'] + '\n\n' -%}
    {%- endif -%}
    {%- set loop_messages = messages[1:] -%}
{%- else -%}
    {%- set first_user_prefix = "" -%}
    {%- set loop_messages = messages -%}
{%- endif -%}
{%- for message in loop_messages -%}
    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}
        {{ raise_exception("Conversation roles must alternate user/assistant/user/assistant/...") }}
    {%- endif -%}
    {%- if (message['role'] == 'assistant') -%}
        {%- set role = "model" -%}
    {%- else -%}
        {%- set role = message['role'] -%}
    {%- endif -%}
    {{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else "") }}
    {%- if message['content'] is string -%}
        {{ message['content'] | trim }}
    {%- elif message['content'] is iterable -%}
        {%- for item in message['content'] -%}
            {%- if item['type'] == 'image' -%}
                {{ '<start_of_image>' }}
            {%- elif item['type'] == 'text' -%}
                {{ item['text'] | trim }}
            {%- endif -%}
        {%- endfor -%}
    {%- else -%}
        {{ raise_exception("Invalid content type") }}
    {%- endif -%}
    {{ '<end_of_turn>\n' }}
{%- endfor -%}
{%- if add_generation_prompt -%}
    {{'<start_of_turn>model\n'}}
{%- endif -%}
"""

# microsoft/Phi-3-mini-4k-instruct (copied in openvinotoolkit/openvino.genai's tokenizer configs for its tests)
OFFICIAL_PHI3 = (
    "{% for message in messages %}{% if message['role'] == 'system' %}{{'<|system|>\n' + message['content'] + '<|end|>\n'}}"
    "{% elif message['role'] == 'user' %}{{'<|user|>\n' + message['content'] + '<|end|>\n'}}"
    "{% elif message['role'] == 'assistant' %}{{'<|assistant|>\n' + message['content'] + '<|end|>\n'}}{% endif %}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% else %}{{ eos_token }}{% endif %}"
)

# Qwen/Qwen2.5-*-Instruct (quoted in ShishirPatil/gorilla, bfcl/model_handler/oss_model/qwen_fc.py)
OFFICIAL_QWEN25 = r"""{%- if tools %}
    {{- '<|im_start|>system\n' }}
    {%- if messages[0]['role'] == 'system' %}
        {{- messages[0]['content'] }}
    {%- else %}
        {{- 'You are Qwen, created by Alibaba Cloud. You are a helpful assistant.' }}
    {%- endif %}
    {{- "\n\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\nYou are provided with function signatures within <tools></tools> XML tags:\n<tools>" }}
    {%- for tool in tools %}
        {{- "\n" }}
        {{- tool | tojson }}
    {%- endfor %}
    {{- "\n</tools>\n\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": <function-name>, \"arguments\": <args-json-object>}\n</tool_call><|im_end|>\n" }}
{%- else %}
    {%- if messages[0]['role'] == 'system' %}
        {{- '<|im_start|>system\n' + messages[0]['content'] + '<|im_end|>\n' }}
    {%- else %}
        {{- '<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n' }}
    {%- endif %}
{%- endif %}
{%- for message in messages %}
    {%- if (message.role == "user") or (message.role == "system" and not loop.first) or (message.role == "assistant" and not message.tool_calls) %}
        {{- '<|im_start|>' + message.role + '\n' + message.content + '<|im_end|>' + '\n' }}
    {%- elif message.role == "assistant" %}
        {{- '<|im_start|>' + message.role }}
        {%- if message.content %}
            {{- '\n' + message.content }}
        {%- endif %}
        {%- for tool_call in message.tool_calls %}
            {%- if tool_call.function is defined %}
                {%- set tool_call = tool_call.function %}
            {%- endif %}
            {{- '\n<tool_call>\n{"name": "' }}
            {{- tool_call.name }}
            {{- '", "arguments": ' }}
            {{- tool_call.arguments | tojson }}
            {{- '}\n</tool_call>' }}
        {%- endfor %}
        {{- '<|im_end|>\n' }}
    {%- elif message.role == "tool" %}
        {%- if (loop.index0 == 0) or (messages[loop.index0 - 1].role != "tool") %}
            {{- '<|im_start|>user' }}
        {%- endif %}
        {{- '\n<tool_response>\n' }}
        {{- message.content }}
        {{- '\n</tool_response>' }}
        {%- if loop.last or (messages[loop.index0 + 1].role != "tool") %}
            {{- '<|im_end|>\n' }}
        {%- endif %}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\n' }}
{%- endif %}
"""

# HuggingFaceH4/zephyr-7b-beta (the same text is huggingface/alignment-handbook's DEFAULT_CHAT_TEMPLATE,
# src/alignment/data.py)
OFFICIAL_ZEPHYR = (
    "{% for message in messages %}\n"
    "{% if message['role'] == 'user' %}\n{{ '<|user|>\n' + message['content'] + eos_token }}\n"
    "{% elif message['role'] == 'system' %}\n{{ '<|system|>\n' + message['content'] + eos_token }}\n"
    "{% elif message['role'] == 'assistant' %}\n{{ '<|assistant|>\n'  + message['content'] + eos_token }}\n"
    "{% endif %}\n{% if loop.last and add_generation_prompt %}\n{{ '<|assistant|>' }}\n{% endif %}\n{% endfor %}"
)

OFFICIAL = {"mistral": OFFICIAL_MISTRAL, "gemma": OFFICIAL_GEMMA, "phi-3": OFFICIAL_PHI3, "qwen2.5": OFFICIAL_QWEN25,
            "zephyr": OFFICIAL_ZEPHYR}
TOOL_CHAT = [CHAT[1], CHAT[2], {"role": "tool", "content": "sunny"}, {"role": "assistant", "content": "It is sunny."}]
PADDED = [{"role": m["role"], "content": f" {m['content']}\n "} for m in CHAT]  # what each template trims


def official_render(tok, name, messages, generation=False) -> str:
    return tok.apply_chat_template(messages, chat_template=OFFICIAL[name], tokenize=False,
                                   add_generation_prompt=generation)


@pytest.mark.parametrize("family", ["llama", "gpt2"])
@pytest.mark.parametrize("name", sorted(OFFICIAL))
def test_builtin_renders_as_the_official_template(name, family, run_tokenizer):
    """Hugging Face's rendering of the official template (transformers' ``apply_chat_template``) equals oa's, apart
    from the differences the README names (tested below)."""
    tok = run_tokenizer(name, family)
    chats = [CHAT[1:], CHAT[1:3], CHAT[1:2], PADDED[1:]]  # no system prompt: the official mistral moves it
    chats += [] if name == "mistral" else [CHAT, CHAT[:3], CHAT[:2], PADDED]
    chats += [TOOL_CHAT] if name == "qwen2.5" else []
    for messages in chats:
        for generation in (False, True):
            ours = render(BUILTIN_TEMPLATES[name], messages, generation, **template_variables(tok))
            if name == "phi-3" and not generation:
                ours += tok.eos_token  # the official ends the chat with eos
            assert official_render(tok, name, messages, generation) == ours


def test_mistral_puts_the_system_prompt_in_the_first_user_turn(run_tokenizer):
    tok = run_tokenizer("mistral", "llama")
    ours = BUILTIN_TEMPLATES["mistral"]
    # the official puts it before the last user message, so only a first question renders the same
    assert render(ours, CHAT[:2], True, **template_variables(tok)) == "<s>[INST] Be brief.\n\nHello[/INST]"
    assert official_render(tok, "mistral", CHAT[:2], True) == "<s>[INST] Be brief.\n\nHello[/INST]"
    assert official_render(tok, "mistral", CHAT[:4], True) == (
        "<s>[INST] Hello[/INST] Hi there!</s>[INST] Be brief.\n\nBye[/INST]")
    assert official_render(tok, "mistral", CHAT) == "<s>[INST] Hello[/INST] Hi there!</s>[INST] Bye[/INST] See you.</s>"


def test_qwen_default_system_prompt_and_tool_results(run_tokenizer, runs):
    tok = run_tokenizer("qwen2.5", "gpt2")
    template = BUILTIN_TEMPLATES["qwen2.5"]
    assert render(template, TOOL_CHAT) == (
        "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\nHi there!<|im_end|>\n"
        "<|im_start|>user\n<tool_response>\nsunny\n</tool_response><|im_end|>\n"
        "<|im_start|>assistant\nIt is sunny.<|im_end|>\n")
    enc = encode_messages(TOOL_CHAT, tok, template, DataSettings())
    assert runs(enc, tok) == ["Hi there!<|im_end|>", "It is sunny.<|im_end|>"]
    # consecutive tool results share one user turn, closed only by the last: the first renders differently once
    # another follows, so oa cannot cross-check the masks
    two_results = [*TOOL_CHAT[:3], {"role": "tool", "content": "22C"}, TOOL_CHAT[3]]
    assert "\n</tool_response>\n<tool_response>\n22C\n</tool_response><|im_end|>\n" in render(template, two_results)
    with pytest.raises(RecordError, match=r"message 2 \(tool\).*renders it differently when more messages follow"):
        encode_messages(two_results, tok, template, DataSettings())


REFUSED = [
    ("mistral", [CHAT[1], CHAT[3]], "conversation roles must alternate"),
    ("mistral", [*CHAT[1:3], {"role": "tool", "content": "sunny"}], "Only user and assistant roles are supported"),
    ("gemma", [CHAT[1], CHAT[3]], "Conversation roles must alternate"),
    ("gemma", [*CHAT[1:3], CHAT[0]], "Conversation roles must alternate"),
    ("gemma", [*CHAT[1:3], {"role": "tool", "content": "sunny"}], "Conversation roles must alternate"),
    ("alpaca", [*CHAT[1:3], {"role": "tool", "content": "sunny"}], "only user and assistant messages"),
]


@pytest.mark.parametrize(("name", "messages", "match"), REFUSED)
def test_roles_the_official_template_refuses_are_refused(name, messages, match, run_tokenizer):
    import jinja2

    tok = run_tokenizer(name, "llama")
    with pytest.raises(TemplateError, match=match):
        render(BUILTIN_TEMPLATES[name], messages, **template_variables(tok))
    if name in OFFICIAL:
        with pytest.raises(jinja2.TemplateError):
            official_render(tok, name, messages)


# tatsu-lab/stanford_alpaca, train.py: PROMPT_DICT["prompt_no_input"]; the answer follows it (then eos)
STANFORD_ALPACA_PROMPT = (
    "Below is an instruction that describes a task. "
    "Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Response:"
)


def test_alpaca_renders_the_stanford_prompt(run_tokenizer):
    from oa_data.formats.chat import parse_alpaca

    tok = run_tokenizer("alpaca", "llama")
    variables = template_variables(tok)
    template = BUILTIN_TEMPLATES["alpaca"]
    prompt = "<s>" + STANFORD_ALPACA_PROMPT.format(instruction="Hello")
    assert render(template, CHAT[1:2], True, **variables) == prompt + "\n"  # the answer on its own line
    assert render(template, CHAT[1:3], **variables) == prompt + "\nHi there!</s>"
    # oa's alpaca format puts the input into the instruction: no '### Input:' section
    row = parse_alpaca({"instruction": "Add", "input": "2 and 3", "output": "5"})
    assert render(template, row["messages"], **variables) == (
        "<s>" + STANFORD_ALPACA_PROMPT.format(instruction="Add\n\n2 and 3") + "\n5</s>")


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
                                        "datasets": [{"path": str(_empty(tmp_path)), "format": "turbo_chat"}]}))
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
    *({"chat_template": name} for name in sorted(BUILTIN_TEMPLATES)),
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
                                    "datasets": [{"path": str(_empty(tmp_path)), "format": "openai"}]}))
    cfg = load_config(path).config
    prepared = prepare_run_tokenizer(cfg, copy.deepcopy(raw_tokenizers[family]))
    prepared.tokenizer.save_pretrained(tmp_path / "saved")
    saved = AutoTokenizer.from_pretrained(tmp_path / "saved")
    variables = template_variables(prepared.tokenizer)
    for messages, generation in ((CHAT, False), (CHAT[:4], True)):
        ours = render(prepared.template, messages, generation, **variables)
        assert saved.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation) == ours
