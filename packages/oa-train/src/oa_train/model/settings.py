"""Config sections of the model provider: ``peft``, ``freeze`` and ``new_tokens`` (pydantic only, no torch)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PeftSettings(_Strict):
    """Parameter-efficient fine-tuning through ``peft``; ``method: none`` is full fine-tuning."""

    method: Literal["none", "lora", "qlora", "prefix", "prompt", "ptuning"] = Field(
        "none", description="none: full fine-tuning (see freeze); lora: LoRA adapters on target_modules; qlora: LoRA "
        "on the base model loaded in 4 bit (bitsandbytes, CUDA GPU); prefix: prefix tuning; prompt: prompt tuning "
        "(trained virtual-token embeddings); ptuning: P-tuning (virtual tokens from a prompt encoder)")
    # LoRA / QLoRA
    r: int = Field(8, ge=1, description="LoRA rank")
    alpha: float = Field(
        16.0, gt=0, description="LoRA alpha (scaling = alpha / r, or alpha / sqrt(r) with rsLoRA)"
    )
    dropout: float = Field(0.05, ge=0, lt=1, description="LoRA dropout on the adapters' input")
    target_modules: list[str] | Literal["all-linear"] = Field(
        "all-linear", description="LoRA: module names (e.g. q_proj, v_proj) or 'all-linear' (every linear layer "
        "but the LM head)"
    )
    use_rslora: bool = Field(False, description="rank-stabilised LoRA: scaling alpha / sqrt(r)")
    use_dora: bool = Field(False, description="DoRA: weight-decomposed LoRA (a trained magnitude per output)")
    bias: Literal["none", "all", "lora_only"] = Field(
        "none", description="biases trained with LoRA: none; all (every bias); lora_only (those of the adapted "
        "modules)")
    modules_to_save: list[str] = Field(
        default_factory=list, description="modules trained fully and saved with the adapter (e.g. lm_head)")
    # QLoRA
    quant_type: Literal["nf4", "fp4"] = Field(
        "nf4", description="QLoRA: the 4-bit data type, nf4 (NormalFloat) or fp4 (4-bit float)")
    double_quant: bool = Field(True, description="QLoRA: quantize the quantization constants too (less memory)")
    compute_dtype: Literal["bfloat16", "float16", "float32"] = Field(
        "bfloat16", description="QLoRA: dtype of the computations with the 4-bit weights")
    # prefix / prompt / p-tuning
    num_virtual_tokens: int = Field(20, ge=1, description="prefix, prompt, ptuning: number of virtual tokens")
    prefix_projection: bool = Field(False, description="prefix tuning: reparameterize through an MLP")
    prompt_init_text: str | None = Field(
        None, description="prompt tuning: initialise from this text's embeddings"
    )
    encoder_hidden_size: int | None = Field(
        None, ge=1, description="hidden size of the prefix projection or of the p-tuning encoder (p-tuning default: "
        "the model's hidden size)"
    )
    encoder_type: Literal["MLP", "LSTM"] = Field("MLP", description="ptuning: the prompt encoder, an MLP or an LSTM")

    @property
    def is_lora(self) -> bool:
        return self.method in ("lora", "qlora")

    @property
    def is_prompt_learning(self) -> bool:
        return self.method in ("prefix", "prompt", "ptuning")


class FreezeSettings(_Strict):
    """Parameter freezing for full fine-tuning (as in the GPT-Neo fine-tuning project).

    Every parameter falls in one group (embeddings incl. the LM head, layer_norms, attention,
    feed_forward, other); ``True`` freezes the group. ``first_n_layers`` freezes whole transformer
    blocks 0..N-1; blocks listed in ``layers_not_to_freeze`` stay fully trainable whatever else is set.
    """

    embeddings: bool = Field(False, description="freeze the input embeddings and the LM head")
    layer_norms: bool = Field(False, description="freeze the normalization layers")
    attention: bool = Field(False, description="freeze the attention layers")
    feed_forward: bool = Field(False, description="freeze the MLP (feed-forward) layers")
    other: bool = Field(False, description="freeze every parameter in none of the groups above")
    first_n_layers: int = Field(
        0, ge=0, description="freeze transformer blocks 0..N-1 entirely (N at most the model's number of blocks)")
    layers_not_to_freeze: list[int] = Field(
        default_factory=list, description="block indices kept fully trainable, whatever else is set")

    @property
    def active(self) -> bool:
        return self != FreezeSettings()


class NewToken(_Strict):
    """One token to add, and how its embedding row is initialised."""

    token: str = Field(
        min_length=1, description="the token; added unless the tokenizer has it (a token it had before the run "
        "keeps its row)")
    init: Literal["copy", "mean_of", "mean_all"] = Field(
        "mean_all",
        description="copy: the row of token `source`; mean_of: mean of the rows of `source`'s tokens; "
        "mean_all: mean of all existing rows",
    )
    source: str | None = Field(
        None, description="copy: an existing single token; mean_of: a text whose tokens' rows are averaged; "
        "not with mean_all")

    @model_validator(mode="after")
    def _source(self) -> NewToken:
        if self.init in ("copy", "mean_of") and not self.source:
            raise ValueError(f"init '{self.init}' needs 'source'")
        if self.init == "mean_all" and self.source is not None:
            raise ValueError("init 'mean_all' takes no 'source'")
        return self


class NewTokenSettings(_Strict):
    """New (special) tokens added to the tokenizer, with the embeddings resized to match. A listed token may also
    be one the data adds (the chat template's, ``data.add_special_tokens``): its row gets the listed rule."""

    tokens: list[NewToken] = Field(default_factory=list, description="tokens to add or to initialise by a rule")
    default_init: Literal["random", "mean_all"] = Field(
        "random", description="rows of added tokens that are not listed (the chat template's, data.add_special_tokens, "
        "a pad): random = the model's own initialisation of new rows, mean_all = the mean of the existing rows")
    special: bool = Field(True, description="add as special tokens (never split, kept on decode)")
    pad_to_multiple_of: int | None = Field(
        None, ge=1, description="round the embedding rows up to a multiple"
    )

    @model_validator(mode="after")
    def _unique(self) -> NewTokenSettings:
        seen = [t.token for t in self.tokens]
        dupes = sorted({t for t in seen if seen.count(t) > 1})
        if dupes:
            raise ValueError(f"token listed twice: {', '.join(dupes)}")
        return self


SECTIONS: dict[str, type[BaseModel]] = {
    "peft": PeftSettings,
    "freeze": FreezeSettings,
    "new_tokens": NewTokenSettings,
}


def register_sections(register) -> None:
    """Register ``peft``, ``freeze`` and ``new_tokens`` (call from a ``register_config_sections`` hook)."""
    for name, model in SECTIONS.items():
        register(name, model)
