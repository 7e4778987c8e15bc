"""Hook implementations of oa_kernels (registered through the ``oa`` entry point).

Imports nothing heavy: torch, triton and the kernels load when a patch is applied.
"""

from __future__ import annotations

import importlib

from oa_core import hookimpl
from oa_core.extensions import ModelPatch
from oa_kernels import architectures
from oa_kernels.settings import KernelsSettings

# patch name -> (function in oa_kernels.patches, kernel, description)
PATCHES = {
    "kernels.gelu": ("apply_gelu", "gelu", "Triton GELU (erf or tanh, as the model uses) and bias+GELU"),
    "kernels.geglu": ("apply_geglu", "geglu", "Triton GeGLU MLP activation gelu(gate) * up"),
    "kernels.swiglu": ("apply_swiglu", "swiglu", "Triton SwiGLU MLP activation silu(gate) * up"),
    "kernels.rmsnorm": ("apply_rmsnorm", "rmsnorm", "Triton RMSNorm (Llama's: fp32 statistics, input-dtype output)"),
    "kernels.rope": ("apply_rope", "rope", "Triton rotary embedding of q and k in one launch"),
    "kernels.fused_linear_ce": ("apply_fused_linear_ce", "fused_linear_ce",
                                "LM head + cross-entropy in chunks, never the full-vocab logits"),
    "kernels.all": ("apply_all", None, "every kernel above that the model supports (switches: kernels: section)"),
}


def _lazy(function_name: str, module: str = "oa_kernels.patches"):
    def apply(model, **options):
        return getattr(importlib.import_module(module), function_name)(model, **options)

    apply.__name__ = function_name
    return apply


@hookimpl
def register_model_patches(register):
    for name, (function_name, kernel, description) in PATCHES.items():
        arch = architectures.BY_KERNEL.get(kernel, architectures.ANY)
        register(name, ModelPatch(apply=_lazy(function_name), architectures=arch, description=description))
    register("compile.layers", ModelPatch(
        apply=_lazy("compile_layers", "oa_kernels.regional"), description="torch.compile of every decoder layer (regional compilation; oa's "
        "kernels step aside inside it, the fused LM head + loss stays)"))


@hookimpl
def register_config_sections(register):
    register("kernels", KernelsSettings)
