"""Config sections of the model provider: ``peft``, ``freeze`` and ``new_tokens`` (pydantic only, no torch)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PeftSettings(_Strict):
    """Parameter-efficient fine-tuning through ``peft``; ``method: none`` is full fine-tuning."""

    method: Literal["none", "lora", "qlora", "prefix", "prompt", "ptuning"] = "none"
    # LoRA / QLoRA
    r: int = Field(8, ge=1, description="LoRA rank")
    alpha: float = Field(
        16.0, gt=0, description="LoRA alpha (scaling = alpha / r, or alpha / sqrt(r) with rsLoRA)"
    )
    dropout: float = Field(0.05, ge=0, lt=1)
    target_modules: list[str] | Literal["all-linear"] = Field(
        "all-linear", description="module names (e.g. q_proj, v_proj) or 'all-linear'"
    )
    use_rslora: bool = False
    use_dora: bool = False
    bias: Literal["none", "all", "lora_only"] = "none"
    modules_to_save: list[str] = Field(default_factory=list, description="modules trained fully and saved")
    # QLoRA
    quant_type: Literal["nf4", "fp4"] = "nf4"
    double_quant: bool = True
    compute_dtype: Literal["bfloat16", "float16", "float32"] = "bfloat16"
    # prefix / prompt / p-tuning
    num_virtual_tokens: int = Field(20, ge=1)
    prefix_projection: bool = Field(False, description="prefix tuning: reparameterize through an MLP")
    prompt_init_text: str | None = Field(
        None, description="prompt tuning: initialise from this text's embeddings"
    )
    encoder_hidden_size: int | None = Field(
        None, ge=1, description="prefix projection / p-tuning encoder width"
    )
    encoder_type: Literal["MLP", "LSTM"] = Field("MLP", description="p-tuning prompt encoder")

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

    embeddings: bool = False
    layer_norms: bool = False
    attention: bool = False
    feed_forward: bool = False
    other: bool = False
    first_n_layers: int = Field(0, ge=0)
    layers_not_to_freeze: list[int] = Field(default_factory=list, description="block indices kept trainable")

    @property
    def active(self) -> bool:
        return self != FreezeSettings()


class NewToken(_Strict):
    """One token to add, and how its embedding row is initialised."""

    token: str = Field(min_length=1)
    init: Literal["copy", "mean_of", "mean_all"] = Field(
        "mean_all",
        description="copy: the row of token `source`; mean_of: mean of the rows of `source`'s tokens; "
        "mean_all: mean of all existing rows",
    )
    source: str | None = None

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
