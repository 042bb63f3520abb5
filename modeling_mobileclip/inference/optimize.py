"""`optimize_for_inference`: one call that puts a MobileCLIP model on the fastest path its machine supports.

It fuses the re-parameterisable branches (exact), casts both towers to the plan's precision, stores the MCi tower's
weights channels-last, and compiles each tower with inductor, weights frozen as constants. The towers take inputs as
before (float32 pixels on the CPU are cast, and moved to the model's device, inside the compiled call) and return
their pooled features in float32, so the projections, `get_image_features`, `get_text_features`, `forward` and the
zero-shot pipeline see float32 embeddings whatever the towers computed in.
"""

import logging

import torch
from torch import nn
from transformers.utils import ModelOutput

from .. import MobileCLIPModel
from .machine import describe_machine
from .plan import choose_plan

logger = logging.getLogger(__name__)

# Inductor options of the compiled towers: freezing turns the weights into constants, so convolution + BatchNorm
# leftovers + activation fold into one pre-packed oneDNN call on the CPU. It applies under torch.no_grad() /
# inference_mode (the pipeline's and any evaluation's mode); with gradients on, the towers compile without it.
COMPILE_OPTIONS = {"freezing": True}


def _cast_pixels(dtype: torch.dtype, device: torch.device, memory_format: torch.memory_format):
    def hook(module, args, kwargs):
        if args:
            args = (args[0].to(device=device, dtype=dtype, memory_format=memory_format), *args[1:])
        elif kwargs.get("pixel_values") is not None:
            kwargs["pixel_values"] = kwargs["pixel_values"].to(device=device, dtype=dtype, memory_format=memory_format)
        return args, kwargs

    return hook


def _move_ids(device: torch.device):
    def hook(module, args, kwargs):
        args = tuple(arg.to(device) if isinstance(arg, torch.Tensor) else arg for arg in args)
        kwargs = {key: value.to(device) if isinstance(value, torch.Tensor) else value for key, value in kwargs.items()}
        return args, kwargs

    return hook


def _pooled_as_float32(module, args, kwargs, output):
    # The projections stay float32 (a few hundred kFLOP): embeddings, logits and the pipeline's scores are float32.
    if isinstance(output, ModelOutput):
        if output.get("pooler_output") is not None:
            output["pooler_output"] = output["pooler_output"].float()
        return output
    return (output[0], output[1].float(), *output[2:])


def compile_for_inference(module: nn.Module, **options) -> nn.Module:
    """`module.compile()` in place with inductor and frozen weights (state-dict names unchanged); any nn.Module,
    so a benchmark gives a peer model the same treatment."""
    module.compile(options={**COMPILE_OPTIONS, **options})
    return module


def _remove_previous_hooks(model: MobileCLIPModel) -> None:
    for handle in getattr(model, "_inference_hook_handles", ()):
        handle.remove()
    model._inference_hook_handles = []


@torch.no_grad()
def optimize_for_inference(model: MobileCLIPModel, *, device: str | torch.device | None = None,
                           dtype: str | torch.dtype = "auto", compile: bool | str = "auto",
                           memory_format: str = "auto") -> MobileCLIPModel:
    """Put `model` on the fastest inference path of `device` (default: where the model is), in place; returns it.

    "auto" chooses from the machine (`choose_plan`): on a CPU with AMX or AVX512-BF16 bfloat16, else float32; on CUDA
    bfloat16 (float16 without bf16 support); channels-last for MCi towers; compilation where a kernel compiler exists.
    Any other value forces that choice. The plan is logged and kept as `model.inference_plan`.

    Normalised embeddings stay within 1e-5 (float32) / 1e-2 (bfloat16) of the un-fused float32 model's.
    `save_pretrained` afterwards writes the fused weights in the plan's precision (they load fused, with
    `from_pretrained`); the compiled code and the input casts are not saved: call this again after loading.
    """
    if not isinstance(model, MobileCLIPModel):
        raise TypeError(f"optimize_for_inference takes a MobileCLIPModel, got {type(model).__name__}; load one "
                         "with MobileCLIPModel.from_pretrained(...) (a pipeline's model is `pipe.model`).")
    target = torch.device(device) if device is not None else next(model.parameters()).device
    plan = choose_plan(model.config, describe_machine(target), dtype=dtype, compile=compile,
                       memory_format=memory_format)
    model.reparameterize()
    _remove_previous_hooks(model)
    compute_dtype = plan.torch_dtype
    layout = torch.channels_last if plan.memory_format == "channels_last" else torch.contiguous_format
    model.to(target)
    model.vision_model.to(dtype=compute_dtype, memory_format=layout)
    model.text_model.to(dtype=compute_dtype)
    model.visual_projection.float()
    model.text_projection.float()
    hooks = [model.vision_model.register_forward_pre_hook(_cast_pixels(compute_dtype, target, layout),
                                                          with_kwargs=True),
             model.text_model.register_forward_pre_hook(_move_ids(target), with_kwargs=True)]
    hooks += [tower.register_forward_hook(_pooled_as_float32, with_kwargs=True)
              for tower in (model.vision_model, model.text_model)]
    model._inference_hook_handles = hooks
    if plan.compile:
        compile_for_inference(model.vision_model)
        compile_for_inference(model.text_model)
    model.inference_plan = plan
    logger.info("optimize_for_inference: %s", plan)
    return model

