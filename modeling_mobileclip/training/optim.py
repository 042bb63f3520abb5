"""Optimizer and learning-rate schedule of MobileCLIP's reference training.

The released scripts run open_clip's `training/main.py` with `--lr 1e-3 --beta2 0.95 --wd 0.2 --warmup 1000` and the
cosine schedule; everything else is open_clip's default (beta1 0.9, eps by model name, AdamW with two groups).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

__all__ = ["build_optimizer", "default_adam_eps", "exclude_from_weight_decay", "param_groups",
           "warmup_cosine_factor", "warmup_cosine_schedule"]


def default_adam_eps(model_name: str) -> float:
    """open_clip's eps rule: 1e-6 if the model *name* contains "vit" (case-insensitive), else 1e-8.

    It looks at the name only, so "MobileCLIP-B" (a ViT image tower) gets 1e-8 in the reference run; kept for parity.
    """
    return 1e-6 if "vit" in model_name.lower() else 1e-8


def exclude_from_weight_decay(name: str, param: torch.Tensor, extra_no_decay: Sequence[str] = ()) -> bool:
    """open_clip's rule: no decay for any param with ndim < 2 (biases, norm weights, gains, 1-D layer scales, 0-d
    logit_scale) or whose name contains "bn", "ln", "bias" or "logit_scale"; plus any name containing one of
    `extra_no_decay`.

    Parameters with ndim >= 2 that other codebases exempt are decayed here, as in the reference run: layer scales of
    shape (dim, 1) / (dim, 1, 1) (MCi, timm fastvit `gamma`), position embeddings, timm's 3-D `cls_token`. Pass e.g.
    `extra_no_decay=("layer_scale", "gamma", "position_embedding")` to exempt them on purpose.
    """
    return (param.ndim < 2 or "bn" in name or "ln" in name or "bias" in name or "logit_scale" in name
            or any(s in name for s in extra_no_decay))


def param_groups(model: torch.nn.Module, weight_decay: float = 0.2,
                 extra_no_decay: Sequence[str] = ()) -> list[dict]:
    """Two AdamW groups, `{"name": "no_decay", weight_decay 0}` and `{"name": "decay", weight_decay}`.

    Frozen parameters (requires_grad False) are left out; an empty group is dropped.
    """
    no_decay, decay = [], []
    for name, param in model.named_parameters():
        if param.requires_grad:
            (no_decay if exclude_from_weight_decay(name, param, extra_no_decay) else decay).append(param)
    groups = [{"name": "no_decay", "params": no_decay, "weight_decay": 0.0},
              {"name": "decay", "params": decay, "weight_decay": weight_decay}]
    return [g for g in groups if g["params"]]


def build_optimizer(
    model: torch.nn.Module,
    model_name: str,
    *,
    lr: float = 1e-3,
    betas: tuple[float, float] = (0.9, 0.95),
    eps: float | None = None,
    weight_decay: float = 0.2,
    extra_no_decay: Sequence[str] = (),
) -> torch.optim.AdamW:
    """AdamW as in the reference scripts; `eps=None` applies `default_adam_eps(model_name)`."""
    groups = param_groups(model, weight_decay, extra_no_decay)
    if not groups:
        raise ValueError(f"{type(model).__name__} has no trainable parameters (all have requires_grad=False); "
                         f"unfreeze at least one before building the optimizer.")
    return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=default_adam_eps(model_name) if eps is None else eps)


def warmup_cosine_factor(step: int, warmup_steps: int, total_steps: int) -> float:
    """Multiplier of the base lr at optimizer step `step` (0-based), as open_clip's `cosine_lr`.

    Linear warmup `(step + 1) / warmup_steps`, then `0.5 * (1 + cos(pi * e / (total_steps - warmup_steps)))` with
    `e = step - warmup_steps`. Departure: clamped at 0 from `total_steps` on (open_clip's cosine would rise again).
    """
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = min(step - warmup_steps, total_steps - warmup_steps) / (total_steps - warmup_steps)
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def warmup_cosine_schedule(optimizer: torch.optim.Optimizer, *, warmup_steps: int,
                           total_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """LambdaLR over `warmup_cosine_factor`; call `scheduler.step()` once per optimizer step.

    `total_steps` counts optimizer steps (batches / gradient-accumulation steps). Under accelerate, a scheduler passed
    through `accelerator.prepare` is stepped `num_processes` times per call unless `split_batches=True`; count
    `total_steps` and `warmup_steps` accordingly, or leave the scheduler out of `prepare`.
    """
    if not 0 <= warmup_steps < total_steps:
        raise ValueError(f"Got warmup_steps={warmup_steps}, total_steps={total_steps}; expected "
                         f"0 <= warmup_steps < total_steps (the reference uses 1000 warmup steps).")
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: warmup_cosine_factor(step, warmup_steps, total_steps))
