"""Optimizers and learning-rate schedules (schedules from transformers)."""

from __future__ import annotations

import torch


def param_groups(model, weight_decay: float) -> list[dict]:
    """No weight decay for biases and norm weights (1-d parameters)."""
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.ndim >= 2]
    rest = [p for p in params if p.ndim < 2]
    return [g for g in ({"params": decay, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0.0}) if g["params"]]


def build_optimizer(model, name: str, lr: float, weight_decay: float, betas: tuple[float, float], eps: float):
    """``adamw`` runs PyTorch's fused kernel (one launch for all parameters) when every parameter is on a GPU."""
    groups = param_groups(model, weight_decay)
    if name == "adamw":
        fused = all(p.is_cuda for g in groups for p in g["params"])
        return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps, fused=fused or None)
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr)  # plain SGD
    if name == "adafactor":
        from transformers.optimization import Adafactor

        return Adafactor(groups, lr=lr, scale_parameter=False, relative_step=False, warmup_init=False)
    raise ValueError(name)


def build_scheduler(optimizer, name: str, warmup_steps: int, total_steps: int):
    from transformers import get_scheduler

    return get_scheduler(name, optimizer, num_warmup_steps=warmup_steps, num_training_steps=total_steps)
