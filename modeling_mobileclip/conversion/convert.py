"""The converter's Python API: read the checkpoint(s), map the keys, build the model (optionally fused and cast).

    model, report = convert("mobileclip_s0.pt", "mobileclip-s0", fuse=True)
    save_converted(model, "./mobileclip-s0", variant="mobileclip-s0", report=report)   # output_folder.py
"""

import os
from dataclasses import dataclass, field

import torch

from ..configuration_mobileclip import MobileCLIPConfig, resolve_variant
from ..modeling_mobileclip import MobileCLIPModel
from .checkpoint import LoadedCheckpoint, read_checkpoint
from .mapping import convert_state_dict

DTYPES = {"fp32": torch.float32, "float32": torch.float32, "fp16": torch.float16, "float16": torch.float16,
          "bf16": torch.bfloat16, "bfloat16": torch.bfloat16}


@dataclass
class ConversionReport:
    variant: str | None
    sources: list[LoadedCheckpoint]
    dropped_zero_keys: list[str] = field(default_factory=list)  # "file: key" of checked all-zero biases
    num_parameters: int = 0
    fused: bool = False
    dtype: str = "fp32"



def build_model(config: MobileCLIPConfig, state_dict: dict[str, torch.Tensor], *, fuse: bool = False,
                dtype: torch.dtype = torch.float32) -> MobileCLIPModel:
    """Model with exactly these weights (built on the meta device, then the tensors are assigned, not copied);
    `fuse` re-parameterises in float32 before the cast to `dtype`."""
    with torch.device("meta"):
        model = MobileCLIPModel(config)
    model.load_state_dict(state_dict, strict=True, assign=True)
    left_on_meta = [name for name, tensor in [*model.named_parameters(), *model.named_buffers()] if tensor.is_meta]
    if left_on_meta:  # a non-persistent buffer would have to be re-created here
        raise RuntimeError(f"Tensors not restored from the state dict: {left_on_meta[:10]}")
    model.eval()
    if fuse:
        model.reparameterize()
    if dtype != torch.float32:
        model.to(dtype)
    return model


def convert(checkpoint: str | os.PathLike, variant: str | None = None, *, config: MobileCLIPConfig | None = None,
            text_checkpoint: str | os.PathLike | None = None, fuse: bool = False,
            dtype: str = "fp32") -> tuple[MobileCLIPModel, ConversionReport]:
    """Python API of the converter: read, map, build (optionally fuse and cast). Give a preset `variant` or a
    `config` (tests use reduced-depth configs of a preset's family)."""
    if (variant is None) == (config is None):
        raise ValueError("Pass exactly one of variant= (a preset name) or config=.")
    if dtype not in DTYPES:
        raise ValueError(f"dtype={dtype!r} is not supported; valid: {', '.join(DTYPES)}.")
    variant = resolve_variant(variant) if variant is not None else None
    config = MobileCLIPConfig.from_variant(variant) if variant is not None else config
    sources = [read_checkpoint(checkpoint)]
    if text_checkpoint is not None:
        sources.append(read_checkpoint(text_checkpoint))
    state_dict, dropped = convert_state_dict(sources, config, variant)
    model = build_model(config, state_dict, fuse=fuse, dtype=DTYPES[dtype])
    report = ConversionReport(variant=variant, sources=sources, dropped_zero_keys=dropped, fused=fuse,
                              dtype=str(DTYPES[dtype]).removeprefix("torch."),
                              num_parameters=sum(p.numel() for p in model.parameters()))
    return model, report
