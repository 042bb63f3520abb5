"""Training losses of MobileCLIP's multi-modal reinforced training (DataCompDR / DFNDR).

For one kind of caption (ground truth or synthetic), with f_i, g_j the student's L2-normalised image/text
embeddings and s the student's exponentiated (and clamped) logit scale:

    L_img = s * F @ G.T                    L_txt = s * G @ F.T
    C     = 1/2 * [CE_hard(L_img, diag) + CE_hard(L_txt, diag)]                  (CLIP contrastive term)
    P_img = 1/K * sum_k softmax_rows(tau_k * A_k @ B_k.T)                         (teacher targets: average of
    P_txt = 1/K * sum_k softmax_rows(tau_k * B_k @ A_k.T)                          per-teacher softmaxes)
    D     = 1/2 * [CE(P_img, L_img) + CE(P_txt, L_txt)],   CE(P, L) = -mean_rows sum_cols P * log_softmax(L)
    loss  = w0 * C + w1 * D

where A_k, B_k are teacher k's slices of the stored image/text embeddings (widths `teacher_dims`, e.g. [768, 768]).
The reference sums this over the ground-truth and the synthetic captions of the batch (`mobileclip_loss` with
`syn_text_features`); the "mix synthetic captions" ablation and plain data use a single term (no `syn_*`).

Multi-process (`--local-loss --gather-with-grad` in the reference): every rank computes its local rows against the
columns gathered from all ranks, with labels offset by `rank * local_batch`. The student features are gathered with
gradients, so after backward each rank holds d(sum_r loss_r)/d(own features); DDP (accelerate) then averages the
parameter gradients over ranks. Hence, for equal local batches, the mean over ranks of the per-rank losses equals the
loss of one process on the global batch, and the DDP-averaged gradients equal that process's gradients
(tests/test_losses.py checks both with two real gloo processes).

The loss runs in float32 (float64 inputs stay float64) with autocast disabled, whatever the input dtype: bf16 logits
would be quantised to ~0.4 at s = 100. This departs from the reference, which computes logits under AMP.
NaN or inf in the inputs propagate into the returned parts; nothing here checks for them, because a check would
force a device sync every step. Test `torch.isfinite(total_loss(parts))` in the training loop if needed.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

import torch
import torch.distributed as dist
import torch.nn.functional as F

__all__ = [
    "clip_loss",
    "distill_loss",
    "gather_with_grad",
    "mobileclip_loss",
    "resolve_rank_world_size",
    "total_loss",
]


def resolve_rank_world_size(rank: int | None = None, world_size: int | None = None) -> tuple[int, int]:
    """Returns `(rank, world_size)`: the values passed in, or torch.distributed's if both are None.

    Without an initialised process group and with nothing passed in, this is `(0, 1)`. Passing `world_size=1` under a
    process group is allowed and means "no gather": each rank then uses only its local batch as negatives.
    """
    initialised = dist.is_available() and dist.is_initialized()
    if rank is None and world_size is None:
        return (dist.get_rank(), dist.get_world_size()) if initialised else (0, 1)
    if rank is None or world_size is None:
        raise ValueError(
            f"Got rank={rank!r} and world_size={world_size!r}; pass both (e.g. rank=accelerator.process_index, "
            f"world_size=accelerator.num_processes) or neither (then they are read from torch.distributed)."
        )
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"Got rank={rank} and world_size={world_size}; expected world_size >= 1 and "
                         f"0 <= rank < world_size.")
    if world_size > 1:
        if not initialised:
            raise ValueError(
                f"world_size={world_size} needs an initialised torch.distributed process group to gather features, "
                f"but none is; create the Accelerator (or call torch.distributed.init_process_group) first, "
                f"or pass world_size=1 for a local-only loss."
            )
        if (rank, world_size) != (dist.get_rank(), dist.get_world_size()):
            raise ValueError(
                f"Got rank={rank}, world_size={world_size}, but the default process group has rank "
                f"{dist.get_rank()} of {dist.get_world_size()}; pass accelerator.process_index and "
                f"accelerator.num_processes."
            )
    return rank, world_size


class _AllGatherWithGrad(torch.autograd.Function):
    """Concatenates every rank's tensor along dim 0; the backward pass returns this rank's slot of the summed grads."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor, rank: int, world_size: int) -> torch.Tensor:
        tensor = tensor.contiguous()
        ctx.rank, ctx.rows = rank, tensor.shape[0]
        slots = [torch.empty_like(tensor) for _ in range(world_size)]
        dist.all_gather(slots, tensor)
        return torch.cat(slots, dim=0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        # Every rank's loss used our rows as columns, so our gradient is the sum over ranks of their gradients for
        # our slot. all_reduce + slice (instead of reduce_scatter) because gloo has no reduce_scatter; the clone
        # keeps the in-place collective off autograd's buffer.
        grad = grad.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad[ctx.rank * ctx.rows:(ctx.rank + 1) * ctx.rows], None, None


def gather_with_grad(tensor: torch.Tensor, rank: int, world_size: int) -> torch.Tensor:
    """All-gathers `tensor` ([b, ...], the same b on every rank) into [world_size * b, ...], keeping autograd.

    Written here instead of `torch.distributed.nn.functional.all_gather`, which torch 2.14 deprecates (FutureWarning)
    and whose gloo backward goes through all_to_all; the gradient semantics are the same (sum over ranks).
    Unlike `accelerator.gather`, gradients flow back to every rank's own features.
    """
    if world_size == 1:
        return tensor
    return _AllGatherWithGrad.apply(tensor, rank, world_size)


def _gather_no_grad(tensor: torch.Tensor, world_size: int) -> torch.Tensor:
    if world_size == 1:
        return tensor
    slots = [torch.empty_like(tensor) for _ in range(world_size)]
    dist.all_gather(slots, tensor.contiguous())
    return torch.cat(slots, dim=0)


def _compute_dtype(*tensors: torch.Tensor) -> torch.dtype:
    dtype = torch.float32
    for t in tensors:
        dtype = torch.promote_types(dtype, t.dtype)
    return dtype


def _check_features(name: str, tensor, batch: int | None, width: int | None) -> None:
    if not isinstance(tensor, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape [batch, dim], got {type(tensor).__name__}.")
    if tensor.ndim != 2 or not tensor.is_floating_point() or tensor.shape[0] == 0:
        raise ValueError(f"{name} must be a non-empty floating-point tensor of shape [batch, dim], got shape "
                         f"{tuple(tensor.shape)} and dtype {tensor.dtype}.")
    if batch is not None and tensor.shape[0] != batch:
        raise ValueError(f"{name} has {tensor.shape[0]} rows but image_features has {batch}; every feature tensor "
                         f"holds one row per image of the local batch.")
    if width is not None and tensor.shape[1] != width:
        raise ValueError(f"{name} has width {tensor.shape[1]}, expected {width} (the width of image_features).")


def _check_teacher_config(teacher_dims, teacher_logit_scales) -> tuple[list[int], list[float]]:
    if teacher_dims is None or teacher_logit_scales is None:
        raise ValueError(
            f"Distillation needs teacher_dims and teacher_logit_scales, got {teacher_dims!r} and "
            f"{teacher_logit_scales!r}; pass e.g. teacher_dims=[768, 768], teacher_logit_scales=[100.0, 100.0] "
            f"(DataCompDR) or [70.0, 60.0] (DFNDR), or set the distillation weight to 0."
        )
    dims = _as_list("teacher_dims", teacher_dims, "e.g. [768, 768]")
    scales = [float(t) for t in _as_list("teacher_logit_scales", teacher_logit_scales, "e.g. [100.0, 100.0]")]
    if not dims or any(not isinstance(d, numbers.Integral) or isinstance(d, bool) or d <= 0 for d in dims):
        raise ValueError(f"teacher_dims={teacher_dims!r}: expected a non-empty list of positive ints, one width per "
                         f"teacher (e.g. [768, 768]).")
    dims = [int(d) for d in dims]
    if len(scales) != len(dims):
        raise ValueError(
            f"teacher_logit_scales has {len(scales)} values ({teacher_logit_scales!r}) but teacher_dims declares "
            f"{len(dims)} teachers ({teacher_dims!r}); pass one scale per teacher, e.g. "
            f"{[scales[0]] * len(dims) if scales else [100.0] * len(dims)}."
        )
    if any(not math.isfinite(t) or t <= 0 for t in scales):
        raise ValueError(f"teacher_logit_scales={teacher_logit_scales!r}: expected finite positive multipliers "
                         f"(e.g. 100.0, not its log).")
    return dims, scales


def _check_teacher(name: str, tensor, batch: int, dims: list[int]) -> None:
    if tensor is None:
        raise ValueError(f"{name} is None but the distillation weight is > 0; pass the teacher embeddings from the "
                         f"reinforced dataset, or set the distillation weight to 0.")
    _check_features(name, tensor, batch, None)
    if tensor.shape[1] != sum(dims):
        raise ValueError(
            f"{name} has width {tensor.shape[1]}, but teacher_dims={dims} sums to {sum(dims)}; pass the per-teacher "
            f"widths of the stored embeddings (e.g. [768, 768] for a 1536-wide DataCompDR embedding)."
        )


def _normalize_per_teacher(tensor: torch.Tensor, dims: list[int]) -> torch.Tensor:
    return torch.cat([F.normalize(part, dim=1) for part in tensor.split(dims, dim=1)], dim=1)


def _teacher_targets(rows: torch.Tensor, cols: torch.Tensor, dims: list[int], scales: list[float]) -> torch.Tensor:
    # Average of the per-teacher softmaxes (`--distill-average-after-softmax` in every released script), not a
    # softmax of averaged logits.
    probs = None
    for rows_k, cols_k, tau in zip(rows.split(dims, dim=1), cols.split(dims, dim=1), scales):
        p = torch.softmax(tau * rows_k @ cols_k.T, dim=1)
        probs = p if probs is None else probs + p
    return probs / len(dims)


def _soft_cross_entropy(target_probs: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    return -(target_probs * torch.log_softmax(logits, dim=1)).sum(dim=1).mean()


def mobileclip_loss(
    image_features: torch.Tensor,
    text_features: torch.Tensor,
    logit_scale: torch.Tensor | float,
    *,
    loss_weights: Sequence[float],
    syn_text_features: torch.Tensor | None = None,
    teacher_image_emb: torch.Tensor | None = None,
    teacher_text_emb: torch.Tensor | None = None,
    teacher_syn_text_emb: torch.Tensor | None = None,
    teacher_dims: Sequence[int] | None = None,
    teacher_logit_scales: Sequence[float] | None = None,
    normalize_teacher: bool = True,
    rank: int | None = None,
    world_size: int | None = None,
) -> dict[str, torch.Tensor]:
    """MobileCLIP's reinforced-training loss; returns its weighted parts, which sum to the total.

    Args:
        image_features: [b, d] student image embeddings of the local batch, L2-normalised (the model's
            `image_embeds`; not re-normalised here).
        text_features: [b, d] student embeddings of the ground-truth captions (or, in the mixing ablation, of
            whichever caption each sample drew), row i belonging to image i.
        logit_scale: the student's `exp(logit_scale)` clamped at 100, i.e. the model output's `logit_scale`
            (a 0-d/1-element tensor, kept in the graph, or a float).
        loss_weights: `(w0, w1)` = weights of the contrastive and distillation terms (`--distill-loss-weights`;
            the paper's `(1 - lambda, lambda)`), both >= 0. A zero weight skips that term entirely.
        syn_text_features: [b, d] student embeddings of one synthetic caption per image. When given, the loss is the
            reference two-term sum over ground-truth and synthetic captions; encode both in one text forward and
            split it, e.g. `gt, syn = out.text_embeds.split(b)`.
        teacher_image_emb, teacher_text_emb, teacher_syn_text_emb: [b, sum(teacher_dims)] stored teacher
            embeddings (the image row of the replayed augmentation; the caption rows matching the student's texts).
            Needed only when w1 > 0. They are detached.
        teacher_dims: per-teacher widths of the teacher embeddings, e.g. `[768, 768]`.
        teacher_logit_scales: one multiplier tau_k per teacher, e.g. `[100.0, 100.0]` (DataCompDR) or
            `[70.0, 60.0]` (DFNDR).
        normalize_teacher: L2-normalise each teacher's slice again (default). The stored slices are unit-norm
            already, so this is a no-op to ~1e-7 for float32 data; bf16-stored 768-d slices have norms off by up to
            ~5e-4 (~0.1 in a logit at tau = 100), and embeddings from another tool may not be normalised at all.
            It costs O(b * sum(teacher_dims)). False uses the embeddings exactly as given.
        rank, world_size: this process's index and the number of processes (`accelerator.process_index`,
            `accelerator.num_processes`), or None for both to read torch.distributed. With world_size > 1 every
            rank must pass the same local batch size b (drop_last / accelerate's even_batches).

    Returns:
        With `syn_text_features`: `contrastive_loss_gt`, `distill_loss_gt`, `contrastive_loss_syn`,
        `distill_loss_syn`; without: `contrastive_loss`, `distill_loss`. Each is already multiplied by its weight;
        keys of zero-weight terms are absent. The total is `total_loss(parts)` (= `sum(parts.values())`); it is
        deliberately not in the dict, so summing the dict never counts it twice.
    """
    w_clip, w_kd = _check_weights(loss_weights)
    rank, world_size = resolve_rank_world_size(rank, world_size)

    _check_features("image_features", image_features, None, None)
    batch, width = image_features.shape
    _check_features("text_features", text_features, batch, width)
    two_terms = syn_text_features is not None
    if two_terms:
        _check_features("syn_text_features", syn_text_features, batch, width)
    elif teacher_syn_text_emb is not None:
        raise ValueError("teacher_syn_text_emb was given without syn_text_features; pass the student's synthetic-"
                         "caption embeddings too, or drop teacher_syn_text_emb for the single-term loss.")
    scale = _check_logit_scale(logit_scale)
    if w_kd:
        dims, taus = _check_teacher_config(teacher_dims, teacher_logit_scales)
        _check_teacher("teacher_image_emb", teacher_image_emb, batch, dims)
        _check_teacher("teacher_text_emb", teacher_text_emb, batch, dims)
        if two_terms:
            _check_teacher("teacher_syn_text_emb", teacher_syn_text_emb, batch, dims)

    student = [image_features, text_features] + ([syn_text_features] if two_terms else [])
    dtype = _compute_dtype(*student)
    device = image_features.device
    with torch.autocast(device_type=device.type, enabled=False):
        # One collective for all student features: [img | gt text | syn text] side by side.
        local = torch.cat([t.to(dtype) for t in student], dim=1)
        local_parts = local.split(width, dim=1)
        gathered_parts = gather_with_grad(local, rank, world_size).split(width, dim=1)
        img, img_all = local_parts[0], gathered_parts[0]
        scale = scale.to(device=device, dtype=dtype) if isinstance(scale, torch.Tensor) else scale
        # Local row i is global column rank * b + i.
        labels = torch.arange(batch, device=device) + rank * batch

        if w_kd:
            with torch.no_grad():
                teachers = [teacher_image_emb, teacher_text_emb] + ([teacher_syn_text_emb] if two_terms else [])
                t_dtype = _compute_dtype(*teachers)
                t_local = [t.detach().to(device=device, dtype=t_dtype) for t in teachers]
                if normalize_teacher:
                    t_local = [_normalize_per_teacher(t, dims) for t in t_local]
                t_width = sum(dims)
                t_all = _gather_no_grad(torch.cat(t_local, dim=1), world_size).split(t_width, dim=1)

        parts: dict[str, torch.Tensor] = {}
        captions = ["gt", "syn"] if two_terms else [""]
        for i, caption in enumerate(captions, start=1):
            suffix = f"_{caption}" if caption else ""
            txt, txt_all = local_parts[i], gathered_parts[i]
            logits_img = scale * img @ txt_all.T
            logits_txt = scale * txt @ img_all.T
            if w_clip:
                contrastive = (F.cross_entropy(logits_img, labels) + F.cross_entropy(logits_txt, labels)) / 2
                parts[f"contrastive_loss{suffix}"] = w_clip * contrastive
            if w_kd:
                with torch.no_grad():
                    p_img = _teacher_targets(t_local[0], t_all[i], dims, taus).to(dtype)
                    p_txt = _teacher_targets(t_local[i], t_all[0], dims, taus).to(dtype)
                distill = (_soft_cross_entropy(p_img, logits_img) + _soft_cross_entropy(p_txt, logits_txt)) / 2
                parts[f"distill_loss{suffix}"] = w_kd * distill
    return parts


def clip_loss(
    image_features: torch.Tensor,
    text_features: torch.Tensor,
    logit_scale: torch.Tensor | float,
    *,
    rank: int | None = None,
    world_size: int | None = None,
) -> dict[str, torch.Tensor]:
    """Plain CLIP loss C (no teacher): `{"contrastive_loss": C}`. Arguments as in `mobileclip_loss`."""
    return mobileclip_loss(image_features, text_features, logit_scale, loss_weights=(1.0, 0.0),
                           rank=rank, world_size=world_size)


def distill_loss(
    image_features: torch.Tensor,
    text_features: torch.Tensor,
    logit_scale: torch.Tensor | float,
    teacher_image_emb: torch.Tensor,
    teacher_text_emb: torch.Tensor,
    *,
    teacher_dims: Sequence[int],
    teacher_logit_scales: Sequence[float],
    normalize_teacher: bool = True,
    rank: int | None = None,
    world_size: int | None = None,
) -> dict[str, torch.Tensor]:
    """Distillation term D alone for one kind of caption: `{"distill_loss": D}`. Arguments as in `mobileclip_loss`."""
    return mobileclip_loss(image_features, text_features, logit_scale, loss_weights=(0.0, 1.0),
                           teacher_image_emb=teacher_image_emb, teacher_text_emb=teacher_text_emb,
                           teacher_dims=teacher_dims, teacher_logit_scales=teacher_logit_scales,
                           normalize_teacher=normalize_teacher, rank=rank, world_size=world_size)


def total_loss(parts: dict[str, torch.Tensor]) -> torch.Tensor:
    """Sum of the parts returned by `mobileclip_loss` / `clip_loss` / `distill_loss` (what to call backward on)."""
    if not parts:
        raise ValueError("parts is empty; expected the dict returned by mobileclip_loss.")
    return sum(parts.values())


def _as_list(name: str, value, example: str) -> list:
    try:
        if isinstance(value, (str, bytes)):
            raise TypeError
        return list(value.tolist() if hasattr(value, "tolist") else value)  # tolist: tensors and NumPy arrays
    except TypeError:
        raise ValueError(f"{name}={value!r}: expected a list with one entry per item, {example}.") from None


def _check_weights(loss_weights) -> tuple[float, float]:
    weights = [float(w) for w in _as_list("loss_weights", loss_weights, "(w_contrastive, w_distill)")]
    if len(weights) != 2 or any(not math.isfinite(w) or w < 0 for w in weights) or not any(weights):
        raise ValueError(
            f"loss_weights={loss_weights!r}: expected (w_contrastive, w_distill), two finite weights >= 0, not both "
            f"0; e.g. (0.0, 1.0) for MobileCLIP-S*, (0.25, 0.75) for MobileCLIP-B, (1.0, 0.0) for plain CLIP."
        )
    return weights[0], weights[1]


def _check_logit_scale(logit_scale):
    if isinstance(logit_scale, torch.Tensor):
        if logit_scale.numel() != 1:
            raise ValueError(f"logit_scale must be a scalar (the model output's exp(logit_scale)), got shape "
                             f"{tuple(logit_scale.shape)}.")
        return logit_scale.reshape(())
    if isinstance(logit_scale, (int, float)) and not isinstance(logit_scale, bool):
        return float(logit_scale)
    raise TypeError(f"logit_scale must be a scalar tensor or a float, got {type(logit_scale).__name__}.")
