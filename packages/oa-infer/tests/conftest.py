"""Shared by the oa-infer tests: tiny random-init Llamas saved locally (causal LMs, a reward model), chat
tokenizers as oa-train saves them, adapters trained by hand; nothing downloads."""

from __future__ import annotations

import copy

import pytest
import torch

BASE_VOCAB = 32000


def _chat_tokenizer(tokenizer, name: str = "chatml"):
    """A copy of ``tokenizer`` prepared as oa-train's tokenizer step does: the template's special tokens added, a
    pad distinct from eos, the template saved as ``chat_template``."""
    from oa_data.special_tokens import prepare_tokenizer
    from oa_data.templates import BUILTIN_TEMPLATES, standalone_jinja

    tok = copy.deepcopy(tokenizer)
    template = BUILTIN_TEMPLATES[name]
    prepare_tokenizer(tok, (), template)
    tok.chat_template = standalone_jinja(template)
    return tok


@pytest.fixture(scope="session")
def chatml_tok(llama_tok):
    """The Llama-2 tokenizer with ChatML (<|im_start|> 32000, <|im_end|> 32001): copy it before changing it."""
    return _chat_tokenizer(llama_tok)


@pytest.fixture(scope="session")
def bases(tmp_path_factory, tiny_llama_config) -> dict[str, str]:
    """Base model folders: ``tied`` and ``untied`` (float32), ``bf16`` (tied, saved in bfloat16)."""
    from transformers import LlamaForCausalLM

    root = tmp_path_factory.mktemp("bases")
    out = {}
    for i, (name, tie, dtype) in enumerate(
        (("tied", True, torch.float32), ("untied", False, torch.float32), ("bf16", True, torch.bfloat16))
    ):
        torch.manual_seed(i)
        LlamaForCausalLM(tiny_llama_config(tie_word_embeddings=tie)).to(dtype).save_pretrained(root / name)
        out[name] = str(root / name)
    return out


def _train_adapter(base_dir: str, out_dir, tokenizer, *, target_modules=("q_proj", "v_proj"), modules_to_save=None,
                  new_tokens: bool = True, quantization=None, seed: int = 0, method: str = "lora",
                  pad_to_multiple_of: int | None = None):
    """An adapter on the base in ``base_dir`` as oa-train makes one (LoRA, new-token rows as trainable tokens on
    the input embeddings and an untied head), its weights moved off their initialisation as training would; saved
    with ``tokenizer`` into ``out_dir``. ``quantization``: a quantization config the base pretends to have been
    loaded with (QLoRA); ``pad_to_multiple_of``: of the resized embeddings. Returns the peft model (eval mode): the reference for base + adapter."""
    from peft import LoraConfig, PromptTuningConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from oa_infer.adapters import record_quantization

    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    if quantization is not None:
        model.config.quantization_config = quantization
    model.resize_token_embeddings(len(tokenizer), pad_to_multiple_of=pad_to_multiple_of, mean_resizing=False)
    if method == "prompt":
        config = PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=4)
    else:
        ids = list(range(BASE_VOCAB, len(tokenizer))) if new_tokens else []
        layers = {"embed_tokens": ids} if ids else {}
        untied = model.lm_head.weight.data_ptr() != model.model.embed_tokens.weight.data_ptr()
        if ids and untied and "lm_head" not in (modules_to_save or ()):
            layers["lm_head"] = ids
        config = LoraConfig(target_modules=list(target_modules), modules_to_save=modules_to_save,
                            trainable_token_indices=layers or None)
    peft_model = get_peft_model(model, config)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, p in peft_model.named_parameters():
            if p.requires_grad:
                p.add_(0.05 * torch.randn(p.shape, generator=gen))
    peft_model.save_pretrained(out_dir, save_embedding_layers=False)
    record_quantization(peft_model, out_dir)
    tokenizer.save_pretrained(out_dir)
    return peft_model.eval()


@pytest.fixture(scope="session")
def prompt_ids(chatml_tok):
    """A rendered ChatML prompt (with the generation prompt) as input ids."""
    from oa_infer.prompting import chat_template, render_prompt

    text = render_prompt(chat_template(chatml_tok), chatml_tok, [{"role": "user", "content": "Name three colours."}])
    return chatml_tok(text, add_special_tokens=False, return_tensors="pt")["input_ids"]


@pytest.fixture(scope="session")
def chat_tokenizer():
    """``chat_tokenizer(tokenizer, template_name="chatml")``: a prepared copy (see ``_chat_tokenizer``)."""
    return _chat_tokenizer


@pytest.fixture(scope="session")
def train_adapter():
    """``train_adapter(base_dir, out_dir, tokenizer, **options) -> peft model`` (see ``_train_adapter``)."""
    return _train_adapter


CHAT = ("{% for m in messages %}{{ m['role'] + ': ' + m['content'] + '\n' }}{% endfor %}"
        "{% if add_generation_prompt %}{{ 'assistant:' }}{% endif %}")


@pytest.fixture
def chat_tok(llama_tok):
    """A copy of the Llama-2 tokenizer with a chat template and pad = unk (as oa's load_tokenizer sets it)."""
    import copy

    tok = copy.deepcopy(llama_tok)
    tok.chat_template = CHAT
    tok.pad_token = tok.unk_token
    return tok


@pytest.fixture(scope="session")
def tiny_lm(tiny_llama_config):
    """A tiny random Llama (eval mode); do not change it in place."""
    import torch
    from transformers import LlamaForCausalLM

    torch.manual_seed(0)
    return LlamaForCausalLM(tiny_llama_config()).eval()


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory, tiny_lm, llama_tok) -> str:
    """``tiny_lm`` saved with the tokenizer and its chat template (as oa-train saves a model)."""
    import copy

    path = tmp_path_factory.mktemp("tiny-lm")
    tiny_lm.save_pretrained(path)
    tok = copy.deepcopy(llama_tok)
    tok.chat_template = CHAT
    tok.save_pretrained(path)
    return str(path)


@pytest.fixture(scope="session")
def reward_dir(tmp_path_factory, tiny_llama_config, llama_tok) -> str:
    """A tiny random reward model (LlamaForSequenceClassification, num_labels 1) saved with the tokenizer."""
    import copy

    import torch
    from transformers import LlamaForSequenceClassification

    path = tmp_path_factory.mktemp("tiny-rm")
    torch.manual_seed(1)
    LlamaForSequenceClassification(tiny_llama_config(num_labels=1)).save_pretrained(path)
    tok = copy.deepcopy(llama_tok)
    tok.chat_template = CHAT
    tok.save_pretrained(path)
    return str(path)


@pytest.fixture
def write_jsonl():
    """``write_jsonl(path, rows) -> str``."""
    import json

    def write(path, rows) -> str:
        with open(path, "w", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row) + "\n")
        return str(path)

    return write
