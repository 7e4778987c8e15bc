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

# Below: each model family's official chat template (the chat_template of its tokenizer_config.json on the hub),
# reduced to what oa passes (string contents, no tools); the README says where they differ.

MISTRAL = ChatTemplate(
    "mistral",
    "{% if messages and messages[0]['role'] == 'system' %}{% set system_message = messages[0]['content'] %}"
    "{% set loop_messages = messages[1:] %}{% else %}{% set loop_messages = messages %}{% endif %}"
    "{% for message in loop_messages if message['role'] not in ('tool', 'tool_results') %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('After the optional system "
    "message, conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% endfor %}"
    "{{ bos_token }}{% for message in loop_messages %}{% if message['role'] == 'user' %}"
    "{% if loop.first and system_message is defined %}"
    "{{ '[INST] ' + system_message + '\n\n' + message['content'] + '[/INST]' }}"
    "{% else %}{{ '[INST] ' + message['content'] + '[/INST]' }}{% endif %}"
    "{% elif message['role'] == 'assistant' %}{{ ' ' + message['content'] | trim + eos_token }}"
    "{% else %}{{ raise_exception('Only user and assistant roles are supported, with the exception of an initial "
    "optional system message!') }}{% endif %}{% endfor %}",
    end_of_turn=None,
    special_tokens=("[INST]", "[/INST]"),
    description="Mistral Instruct v0.3 (<s>[INST] user[/INST] answer</s>); the system prompt opens the first user "
    "turn, not the last; no tools",
)

GEMMA = ChatTemplate(
    "gemma",
    "{{ bos_token }}{% if messages and messages[0]['role'] == 'system' %}"
    "{% set first_user_prefix = messages[0]['content'] + '\n\n' %}{% set loop_messages = messages[1:] %}"
    "{% else %}{% set first_user_prefix = '' %}{% set loop_messages = messages %}{% endif %}"
    "{% for message in loop_messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if message['role'] == 'assistant' %}{% set role = 'model' %}"
    "{% else %}{% set role = message['role'] %}{% endif %}"
    "{{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else '') + message['content'] | trim"
    " + '<end_of_turn>\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<start_of_turn>model\n' }}{% endif %}",
    end_of_turn="<end_of_turn>",
    special_tokens=("<start_of_turn>", "<end_of_turn>"),
    description="Gemma 3 instruct (<start_of_turn>user|model ... <end_of_turn>; the system prompt opens the first "
    "user turn); text only",
)

PHI3 = ChatTemplate(
    "phi-3",
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}{{ '<|system|>\n' + message['content'] + '<|end|>\n' }}"
    "{% elif message['role'] == 'user' %}{{ '<|user|>\n' + message['content'] + '<|end|>\n' }}"
    "{% elif message['role'] == 'assistant' %}{{ '<|assistant|>\n' + message['content'] + '<|end|>\n' }}"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}",
    end_of_turn="<|end|>",
    special_tokens=("<|system|>", "<|user|>", "<|assistant|>", "<|end|>"),
    description="Phi-3 instruct (<|user|>\\n ... <|end|>); no eos after the last message",
)

QWEN25 = ChatTemplate(
    "qwen2.5",
    "{% if messages and messages[0]['role'] == 'system' %}"
    "{{ '<|im_start|>system\n' + messages[0]['content'] + '<|im_end|>\n' }}"
    "{% else %}"
    "{{ '<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n' }}"
    "{% endif %}{% for message in messages %}"
    "{% if message['role'] == 'user' or (message['role'] == 'system' and not loop.first)"
    " or message['role'] == 'assistant' %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{% elif message['role'] == 'tool' %}"
    "{% if loop.first or messages[loop.index0 - 1]['role'] != 'tool' %}{{ '<|im_start|>user' }}{% endif %}"
    "{{ '\n<tool_response>\n' + message['content'] + '\n</tool_response>' }}"
    "{% if loop.last or messages[loop.index0 + 1]['role'] != 'tool' %}{{ '<|im_end|>\n' }}{% endif %}"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}",
    end_of_turn="<|im_end|>",
    special_tokens=("<|im_start|>", "<|im_end|>"),
    description="Qwen2.5 instruct (ChatML, Qwen's default system prompt, tool results); no tool definitions or calls",
)

ZEPHYR = ChatTemplate(
    "zephyr",
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}{{ '<|user|>\n' + message['content'] + eos_token + '\n' }}"
    "{% elif message['role'] == 'system' %}{{ '<|system|>\n' + message['content'] + eos_token + '\n' }}"
    "{% elif message['role'] == 'assistant' %}{{ '<|assistant|>\n' + message['content'] + eos_token + '\n' }}"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}",
    end_of_turn=None,
    description="Zephyr (<|user|>\\n ... </s>: plain-text role tags, eos ends every turn)",
)

ALPACA_PREAMBLE = ("Below is an instruction that describes a task. "
                   "Write a response that appropriately completes the request.")

ALPACA = ChatTemplate(
    "alpaca",
    "{{ bos_token }}{% if messages and messages[0]['role'] == 'system' %}{{ messages[0]['content'] }}"
    "{% set loop_messages = messages[1:] %}{% else %}{{ '" + ALPACA_PREAMBLE + "' }}{% set loop_messages = messages %}"
    "{% endif %}{{ '\n\n' }}{% for message in loop_messages %}{% if not loop.first %}{{ '\n\n' }}{% endif %}"
    "{% if message['role'] == 'user' %}{{ '### Instruction:\n' + message['content'] }}"
    "{% elif message['role'] == 'assistant' %}{{ '### Response:\n' + message['content'] + eos_token }}"
    "{% else %}{{ raise_exception('alpaca template: only user and assistant messages after an optional system "
    "message, not ' + message['role']) }}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ ('\n\n' if loop_messages else '') + '### Response:\n' }}{% endif %}",
    end_of_turn=None,
    description="Alpaca (### Instruction:\\n ... ### Response:\\n answer</s>; a system message replaces the preamble)",
)

BUILTIN_TEMPLATES: dict[str, ChatTemplate] = {
    t.name: t for t in (CHATML, LLAMA3, OASST, LLAMA2, MISTRAL, GEMMA, PHI3, QWEN25, ZEPHYR, ALPACA)
}
