"""The ``kernels:`` config section (no torch here: it is imported by the plugin module)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from oa_core.errors import OAError

KERNELS = ("gelu", "geglu", "swiglu", "rmsnorm", "rope", "fused_linear_ce")


class KernelsSettings(BaseModel):
    """Per-kernel switches and the startup self-test of the ``kernels.*`` model patches."""

    model_config = ConfigDict(extra="forbid")
    gelu: bool = Field(True, description="GELU / bias+GELU activations (kernels.gelu); false: left as they are, "
                       "also by kernels.all")
    geglu: bool = Field(True, description="GeGLU MLPs gelu(gate)*up (kernels.geglu); false: left as they are, "
                        "also by kernels.all")
    swiglu: bool = Field(True, description="SwiGLU MLPs silu(gate)*up (kernels.swiglu): on switches the kernel on "
                         "where the patch is applied")
    rmsnorm: bool = Field(True, description="RMSNorm layers, computed as Llama's (kernels.rmsnorm): on switches the "
                          "kernel on where the patch is applied")
    rope: bool = Field(True, description="rotary embeddings of q and k (kernels.rope); false: left as they are, "
                       "also by kernels.all")
    fused_linear_ce: bool = Field(True, description="LM head + cross-entropy without full logits "
                                  "(kernels.fused_linear_ce); false: left as they are, also by kernels.all")
    linear_ce_vocab_parts: int | None = Field(
        None, ge=1, description="fused linear CE: force N vocabulary parts (default: the cheaper plan within "
        "Liger's logits memory)",
    )
    linear_ce_chunk_size: int | None = Field(None, ge=1, description="fused linear CE: force rows per chunk "
                                             "(default: the cheaper plan within Liger's logits memory)")
    self_test: bool = Field(True, description="check each kernel against its reference on the model's shapes first")
    on_failure: Literal["fallback", "error"] = Field(
        "fallback", description="a failed self-test: keep the model's own code (fallback) or stop (error)"
    )
    tolerance: float = Field(2e-2, gt=0, description="self-test: max |kernel - reference| / max |reference|")


def settings_from(options: dict) -> KernelsSettings:
    """Validate patch options (the ``kernels:`` section's fields) into settings; one-line error on bad keys."""
    try:
        return KernelsSettings(**options)
    except ValidationError as e:
        err = e.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        raise OAError(f"kernels.{where}: {err['msg']}", hint=f"allowed keys: {', '.join(KernelsSettings.model_fields)}") from None
