"""Adding special tokens and making pad distinct from eos."""

from __future__ import annotations

import copy

from oa_data.settings import DataSettings
from oa_data.special_tokens import prepare_tokenizer
from oa_data.templates import BUILTIN_TEMPLATES
from oa_data.tokenize import encode_messages


def test_llama_gets_template_tokens_and_unk_as_pad(raw_tokenizers, runs):
    tok = copy.deepcopy(raw_tokenizers["llama"])
    before = len(tok)
    changes = prepare_tokenizer(tok, ["<tool>"], template=BUILTIN_TEMPLATES["chatml"])
    assert changes.added == ["<|im_start|>", "<|im_end|>", "<tool>"]
    assert changes.vocab_size == len(tok) == before + 3
    assert tok.pad_token == "<unk>" and changes.pad_token == "<unk>" and tok.pad_token_id != tok.eos_token_id
    assert any("no pad token" in n for n in changes.notes)
    for t in changes.added:
        assert len(tok("a" + t + "b", add_special_tokens=False)["input_ids"]) == 3
    # the end-of-turn token is one token, and it is supervised
    enc = encode_messages([{"role": "user", "content": "Hello"}, {"role": "assistant", "content": "Hi there!"}],
                          tok, BUILTIN_TEMPLATES["chatml"], DataSettings())
    assert runs(enc, tok) == ["Hi there!<|im_end|>"]
    assert enc.labels[-2] == tok.convert_tokens_to_ids("<|im_end|>")
    again = prepare_tokenizer(tok, ["<tool>"], template=BUILTIN_TEMPLATES["chatml"])
    assert not again.changed and again.vocab_size == len(tok)


def test_gpt2_pad_equal_to_eos_gets_a_new_pad(raw_tokenizers):
    tok = copy.deepcopy(raw_tokenizers["gpt2"])
    tok.pad_token = tok.eos_token
    before = len(tok)
    changes = prepare_tokenizer(tok)
    assert changes.added == ["<pad>"] and changes.pad_token == "<pad>"
    assert tok.pad_token_id == before and tok.pad_token_id != tok.eos_token_id
    assert any("pad was the eos token" in n for n in changes.notes)


def test_existing_special_tokens_are_not_added_twice(raw_tokenizers):
    tok = copy.deepcopy(raw_tokenizers["gpt2"])
    changes = prepare_tokenizer(tok, ["<|endoftext|>"], template=BUILTIN_TEMPLATES["oasst"])
    assert changes.added == ["<|system|>", "<|prompter|>", "<|assistant|>", "<pad>"]


def test_multi_token_end_of_turn_is_noted(raw_tokenizers):
    from oa_data.templates import turbo_template

    tok = copy.deepcopy(raw_tokenizers["llama"])
    turbo = turbo_template("### {role}:\n", "\n### End\n")
    assert turbo.end_of_turn == "### End"
    changes = prepare_tokenizer(tok, template=turbo)
    assert any("'### End' is several tokens" in n for n in changes.notes)
    changes = prepare_tokenizer(tok, ["### End"], template=turbo)
    assert changes.added == ["### End"] and not any("several tokens" in n for n in changes.notes)
