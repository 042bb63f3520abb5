"""Gradients in their parameter's memory layout, so that DDP copies them into its buckets without a warning.

DDP lays each gradient bucket out with the strides of its parameters and warns once per run ("Grad strides do not
match bucket view strides ...") when a gradient arrives with other strides, since it then copies element by element.
PyTorch's conv1d weight gradient is such a case: for MobileCLIP's text RepMixer / ConvFFN weights, [32, 1, 11]
(strides (11, 11, 1)) comes back with strides (11, 1, 1) and [64, 32, 1] ((32, 1, 1)) with (32, 1, 32). Both are
"contiguous" to PyTorch, which ignores the stride of a size-1 dimension (so autograd keeps them as they are), but not
to DDP, which compares every stride. The parameters are contiguous already; what differs is the gradient's layout,
so each such gradient is re-laid out as its parameter before it reaches DDP: one copy of a few small kernels per
step, only where the strides differ.
"""

from __future__ import annotations

import torch


def _in_layout_of(param: torch.nn.Parameter):
    def hook(grad: torch.Tensor) -> torch.Tensor:
        if grad.stride() == param.stride():
            return grad
        return torch.empty_strided(param.shape, param.stride(), dtype=grad.dtype, device=grad.device).copy_(grad)

    return hook


def match_gradient_layouts(model: torch.nn.Module) -> int:
    """Register the re-layout hook on every parameter that has a size-1 dimension (the only ones whose gradients
    can differ in strides while counting as contiguous); returns how many. Call it before DDP wraps the model."""
    params = [p for p in model.parameters() if p.requires_grad and p.dim() > 1 and 1 in p.shape]
    for param in params:
        param.register_hook(_in_layout_of(param))
    return len(params)
