"""Built-in named chat templates."""

from __future__ import annotations

from oa_core.extensions import ChatTemplate

CHATML = ChatTemplate(
    "chatml",
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}",
    end_of_turn="<|im_end|>",
    special_tokens=("<|im_start|>", "<|im_end|>"),
    description="ChatML (<|im_start|>role ... <|im_end|>)",
)

LLAMA3 = ChatTemplate(
    "llama-3",
    "{{ bos_token }}{% for message in messages %}"
    "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' + message['content'] | trim + '<|eot_id|>' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}",
    end_of_turn="<|eot_id|>",
    special_tokens=("<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"),
    description="Llama 3 instruct (header ids, <|eot_id|>)",
)

OASST = ChatTemplate(
    "oasst",
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}{{ '<|system|>' }}{% elif message['role'] == 'user' %}{{ '<|prompter|>' }}"
    "{% elif message['role'] == 'assistant' %}{{ '<|assistant|>' }}"
    "{% else %}{{ raise_exception('oasst template has no role ' + message['role']) }}{% endif %}"
    "{{ message['content'] + eos_token }}{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>' }}{% endif %}",
    end_of_turn=None,
    special_tokens=("<|system|>", "<|prompter|>", "<|assistant|>"),
    description="Open-Assistant (<|prompter|>...</s><|assistant|>...</s>)",
)

LLAMA2 = ChatTemplate(
    "llama-2",
    "{% if messages and messages[0]['role'] == 'system' %}{% set system = messages[0]['content'] %}"
    "{% set loop_messages = messages[1:] %}{% else %}{% set system = none %}{% set loop_messages = messages %}{% endif %}"
    "{% for message in loop_messages %}"
    "{% if message['role'] == 'user' %}{% if loop.index0 == 0 and system is not none %}"
    "{{ bos_token + '[INST] <<SYS>>\n' + system + '\n<</SYS>>\n\n' + message['content'] | trim + ' [/INST]' }}"
    "{% else %}{{ bos_token + '[INST] ' + message['content'] | trim + ' [/INST]' }}{% endif %}"
    "{% elif message['role'] == 'assistant' %}{{ ' ' + message['content'] | trim + ' ' + eos_token }}"
    "{% else %}{{ raise_exception('llama-2 template has no role ' + message['role']) }}{% endif %}{% endfor %}",
    end_of_turn=None,
    description="Llama 2 chat ([INST] ... [/INST] answer </s>)",
)

BUILTIN_TEMPLATES: dict[str, ChatTemplate] = {t.name: t for t in (CHATML, LLAMA3, OASST, LLAMA2)}
