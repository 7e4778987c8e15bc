"""Parameter groups, layer freezing for full fine-tuning, and the trainable-parameter table."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from oa_core.errors import OAError
from oa_train.model.settings import FreezeSettings

GROUPS = ("embeddings", "layer_norms", "attention", "feed_forward", "other", "adapter")
_BLOCK = re.compile(r"(?:^|\.)(?:layers|h|layer|blocks|block)\.(\d+)(?:\.|$)")
_ADAPTER = ("lora_", "prompt_encoder", "trainable_tokens_", "modules_to_save", "prefix_encoder")
_FF = {"feed_forward", "ffn", "ff", "fc1", "fc2", "dense_h_to_4h", "dense_4h_to_h"}


def block_index(name: str) -> int | None:
    """The transformer block a parameter belongs to (``model.layers.3.mlp...`` -> 3), if any."""
    m = _BLOCK.search(name)
    return int(m.group(1)) if m else None


def _group(name: str, module, is_embedding: bool) -> str:
    if any(a in name for a in _ADAPTER):
        return "adapter"
    if is_embedding:
        return "embeddings"
    if "norm" in type(module).__name__.lower():
        return "layer_norms"
    parts = name.lower().split(".")[:-1]
    if any("attn" in p or "attention" in p for p in parts):
        return "attention"
    if any("mlp" in p or p in _FF for p in parts):
        return "feed_forward"
    return "other"


def parameter_groups(model) -> dict[str, str]:
    """Parameter name -> group (embeddings incl. the output head, layer_norms, attention, feed_forward,
    other, adapter), for every parameter ``model.named_parameters()`` lists."""
    import torch

    heads = [m for m in (model.get_input_embeddings(), _output_embeddings(model)) if m is not None]
    embedding_params = {id(p) for m in heads for p in m.parameters()}
    owner = {}
    for mod_name, module in model.named_modules():
        for p_name, _ in module.named_parameters(recurse=False):
            owner[f"{mod_name}.{p_name}" if mod_name else p_name] = module
    out = {}
    for name, param in model.named_parameters():
        module = owner.get(name)
        is_emb = isinstance(module, torch.nn.Embedding) or id(param) in embedding_params
        out[name] = _group(name, module, is_emb)
    return out


def _output_embeddings(model):
    try:
        return model.get_output_embeddings()
    except (AttributeError, NotImplementedError):
        return None


def _num_blocks(model, names) -> int:
    n = getattr(getattr(model, "config", None), "num_hidden_layers", None)
    found = [i for i in map(block_index, names) if i is not None]
    return int(n) if n else (max(found) + 1 if found else 0)


def apply_freeze(model, settings: FreezeSettings) -> TrainableReport:
    """Set ``requires_grad`` of every parameter from ``settings``; returns the trainable report."""
    groups = parameter_groups(model)
    n_blocks = _num_blocks(model, groups)
    bad = [i for i in settings.layers_not_to_freeze if i >= n_blocks]
    if bad:
        raise OAError(
            f"freeze.layers_not_to_freeze: block {bad[0]} does not exist (the model has {n_blocks})",
            hint=f"use indices 0..{n_blocks - 1}",
        )
    if settings.first_n_layers > n_blocks:
        raise OAError(
            f"freeze.first_n_layers: {settings.first_n_layers} is more than the model's {n_blocks} blocks",
            hint=f"use at most {n_blocks}",
        )
    keep = set(settings.layers_not_to_freeze)
    for name, param in model.named_parameters():
        block = block_index(name)
        if block in keep:
            param.requires_grad = True
        elif block is not None and block < settings.first_n_layers:
            param.requires_grad = False
        else:
            group = groups[name]
            param.requires_grad = not (group != "adapter" and getattr(settings, group))
    report = trainable_report(model)
    if report.trainable == 0:
        raise OAError(
            "freeze: these settings freeze every parameter, nothing would train",
            hint="leave a group trainable or list blocks in freeze.layers_not_to_freeze",
        )
    return report


@dataclass
class TrainableReport:
    """Trainable and total parameter counts, per group."""

    groups: dict[str, tuple[int, int]] = field(default_factory=dict)

    @property
    def trainable(self) -> int:
        return sum(t for t, _ in self.groups.values())

    @property
    def total(self) -> int:
        return sum(n for _, n in self.groups.values())

    def to_dict(self) -> dict:
        return {
            "groups": {g: {"trainable": t, "total": n} for g, (t, n) in self.groups.items()},
            "trainable": self.trainable,
            "total": self.total,
        }

    def render(self) -> str:
        """A plain-text table (one row per group, then the total)."""
        rows = [(g, t, n) for g, (t, n) in self.groups.items()] + [("total", self.trainable, self.total)]
        lines = [f"{'group':<14}{'trainable':>14}{'total':>14}{'%':>9}"]
        for g, t, n in rows:
            lines.append(f"{g:<14}{t:>14,}{n:>14,}{(100 * t / n if n else 0):>8.2f}%")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.render()


def trainable_report(model) -> TrainableReport:
    """Count trainable/total parameters per group (shared parameters counted once)."""
    counts = {g: [0, 0] for g in GROUPS}
    params = dict(model.named_parameters())
    for name, group in parameter_groups(model).items():
        n = params[name].numel()
        counts[group][1] += n
        if params[name].requires_grad:
            counts[group][0] += n
    return TrainableReport({g: (t, n) for g, (t, n) in counts.items() if n})
