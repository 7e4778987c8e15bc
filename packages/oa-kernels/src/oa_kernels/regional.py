"""Regional compilation (the model patch ``compile.layers``): every decoder layer of a transformers model through
``torch.compile``, the layers sharing one compiled graph (they run the same code on same-shaped weights).

Inside a compiled layer oa's Triton kernels step aside for their PyTorch references, which the compiler fuses
itself (:func:`oa_kernels.runtime.use_triton`); the kernels outside the layers (the fused LM head and loss) keep
running. The embeddings, the final norm and the head stay eager.
"""

from __future__ import annotations

from typing import Any

from oa_core.extensions import PatchResult


def decoder_layers(model: Any) -> list[Any]:
    """The modules of the classes the model names in ``_no_split_modules`` (transformers' decoder layer classes),
    in model order."""
    names = set(getattr(model, "_no_split_modules", None) or ())
    return [m for m in model.modules() if type(m).__name__ in names]


def compile_layers(model: Any, **_) -> PatchResult:
    """``layer.compile()`` for every decoder layer (compiled on first use; shapes that change between batches
    recompile once and then run with dynamic shapes)."""
    layers = decoder_layers(model)
    if not layers:
        return PatchResult("no decoder layers found (the model names no layer class in _no_split_modules)",
                           applied=False)
    for layer in layers:
        layer.compile()
    return PatchResult(f"{len(layers)} {type(layers[0]).__name__} layers compiled (torch.compile, regional)")
