"""CLIP teachers for the reinforcement tool: open_clip and transformers CLIP-like models behind one interface.

A teacher is named by a spec string:

* ``open_clip:<model>/<pretrained>`` (``open_clip:ViT-L-14/openai``), ``open_clip:hf-hub:<repo>`` or
  ``open_clip:local-dir:<folder>``: loaded with ``open_clip.create_model_and_transforms``.
* ``hf:<repo or folder>`` or a bare repo id / folder: loaded with ``transformers.AutoModel.from_pretrained`` plus
  ``AutoImageProcessor`` / ``AutoTokenizer`` (CLIP, SigLIP, MobileCLIP: anything with ``get_image_features`` and
  ``get_text_features``).

The teacher never preprocesses images itself: the reinforcement tool renders each augmented view at the DR crop size
(224, bicubic) and :meth:`Teacher.pixel_values` resizes it to the teacher's resolution (bicubic, only if smaller, as
Apple's generator does; a larger teacher is refused) and normalises with the teacher's own mean/std. Embeddings are
returned L2-normalised in float32.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

import PIL.Image
import torch

from .augment_replay import _normalize_size, to_normalized_tensor

OPEN_CLIP_PREFIX = "open_clip:"
HF_PREFIX = "hf:"


def parse_open_clip_spec(spec: str) -> tuple[str, Optional[str]]:
    """``open_clip:ViT-L-14/openai`` -> ("ViT-L-14", "openai"); schema'd names (hf-hub:, local-dir:) keep no tag."""
    body = spec[len(OPEN_CLIP_PREFIX):]
    if not body:
        raise ValueError(f"teacher spec {spec!r} names no model; use e.g. 'open_clip:ViT-L-14/openai'")
    if body.startswith(("hf-hub:", "local-dir:")):
        return body, None
    name, _, pretrained = body.partition("/")
    return name, (pretrained or None)


def _size_from_processor(processor: Any, spec: str) -> tuple[int, int]:
    """The teacher's input resolution from a transformers image processor (crop size if it centre-crops)."""
    for attribute in ("crop_size", "size"):
        if attribute == "crop_size" and not getattr(processor, "do_center_crop", False):
            continue
        size = getattr(processor, attribute, None)
        if size is None:
            continue
        size = dict(size) if not isinstance(size, int) else {"height": size, "width": size}
        if size.get("height") and size.get("width"):
            return int(size["height"]), int(size["width"])
        if size.get("shortest_edge"):
            return int(size["shortest_edge"]), int(size["shortest_edge"])
    raise ValueError(f"teacher {spec!r}: cannot read the input resolution from its image processor "
                     f"({type(processor).__name__}: crop_size={getattr(processor, 'crop_size', None)}, "
                     f"size={getattr(processor, 'size', None)})")


def _features(output: Any) -> torch.Tensor:
    # transformers >= 5 returns a BaseModelOutputWithPooling whose pooler_output is the projected embedding;
    # older versions (and some remote code) return the tensor directly.
    return output if isinstance(output, torch.Tensor) else output.pooler_output


@dataclass
class Teacher:
    """One loaded teacher. ``encode_*`` return L2-normalised float32 embeddings on the CPU."""

    spec: str
    library: str  # "open_clip" or "transformers"
    model: torch.nn.Module
    tokenize: Any  # list[str] -> dict of tensors for the text tower
    image_size: tuple[int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    device: torch.device
    logit_scale: Optional[float] = None
    embedding_dim: int = 0
    model_name: str = ""
    pretrained: Optional[str] = None
    context_length: Optional[int] = None
    autocast_dtype: Optional[torch.dtype] = None
    _resize: int = field(default=PIL.Image.Resampling.BICUBIC, repr=False)

    # ---- preprocessing (views are PIL images at the DR crop size)
    def check_crop_size(self, crop_size: int | Sequence[int]) -> None:
        crop_h, crop_w = _normalize_size(crop_size, "crop size")
        if self.image_size[0] > crop_h or self.image_size[1] > crop_w:
            raise ValueError(
                f"teacher {self.spec!r} takes {self.image_size[0]}x{self.image_size[1]} inputs, larger than the "
                f"augmentation crop size {crop_h}x{crop_w}: its views would be upsampled (Apple's generator asserts "
                f"teacher size <= crop size). Use --crop-size {max(self.image_size)} or a teacher at <= {crop_h} px."
            )

    def pixel_values(self, view: PIL.Image.Image) -> torch.Tensor:
        """Resize a DR view to the teacher's resolution (bicubic, only if it differs) and normalise."""
        height, width = self.image_size
        if view.size != (width, height):
            view = view.resize((width, height), self._resize)
        return to_normalized_tensor(view, self.mean, self.std)

    def _autocast(self):
        enabled = self.autocast_dtype is not None
        return torch.autocast(self.device.type, dtype=self.autocast_dtype or torch.float32, enabled=enabled)

    # ---- forwards
    @torch.inference_mode()
    def encode_image(self, pixel_values: torch.Tensor) -> torch.Tensor:
        pixel_values = pixel_values.to(self.device)
        with self._autocast():
            if self.library == "open_clip":
                features = self.model.encode_image(pixel_values)
            else:
                features = _features(self.model.get_image_features(pixel_values=pixel_values))
        return torch.nn.functional.normalize(features.float(), dim=-1).cpu()

    @torch.inference_mode()
    def encode_text(self, texts: list[str]) -> torch.Tensor:
        tokens = {k: v.to(self.device) for k, v in self.tokenize(texts).items()}
        with self._autocast():
            if self.library == "open_clip":
                features = self.model.encode_text(tokens["input_ids"])
            else:
                features = _features(self.model.get_text_features(**tokens))
        return torch.nn.functional.normalize(features.float(), dim=-1).cpu()

    def describe(self) -> dict:
        """Loader-compatible teacher entry of ``config.json`` (exactly the keys the datacompdr builder accepts)."""
        return {"model": self.model_name, "pretrained": self.pretrained, "embedding_dim": self.embedding_dim,
                "logit_scale": self.logit_scale}

    def details(self) -> dict:
        """How this teacher saw its inputs (``config.json`` ``teacher_details``), enough to recompute a block."""
        return {"spec": self.spec, "library": self.library, "image_size": list(self.image_size),
                "mean": [float(m) for m in self.mean], "std": [float(s) for s in self.std],
                "resize_interpolation": "bicubic", "context_length": self.context_length}


def _load_open_clip(spec: str, device: torch.device) -> Teacher:
    import open_clip

    name, pretrained = parse_open_clip_spec(spec)
    model, _, _ = open_clip.create_model_and_transforms(name, pretrained=pretrained, device=device)
    model.eval()
    cfg = dict(getattr(model.visual, "preprocess_cfg", {}) or {})
    size = cfg.get("size", getattr(model.visual, "image_size", None))
    if size is None:
        raise ValueError(f"teacher {spec!r}: open_clip model has no preprocess size")
    tokenizer = open_clip.get_tokenizer(name)
    context_length = getattr(tokenizer, "context_length", None)

    def tokenize(texts: list[str]) -> dict:
        return {"input_ids": tokenizer(texts)}

    return Teacher(spec=spec, library="open_clip", model=model, tokenize=tokenize,
                   image_size=_normalize_size(tuple(size) if isinstance(size, list) else size),
                   mean=tuple(cfg.get("mean", (0.48145466, 0.4578275, 0.40821073))),
                   std=tuple(cfg.get("std", (0.26862954, 0.26130258, 0.27577711))), device=device,
                   model_name=name, pretrained=pretrained, context_length=context_length)


def _load_transformers(spec: str, device: torch.device, trust_remote_code: bool) -> Teacher:
    import transformers

    import modeling_mobileclip  # noqa: F401  (registers MobileCLIP with the Auto classes)

    path = spec[len(HF_PREFIX):] if spec.startswith(HF_PREFIX) else spec
    model = transformers.AutoModel.from_pretrained(path, trust_remote_code=trust_remote_code).to(device).eval()
    if not (hasattr(model, "get_image_features") and hasattr(model, "get_text_features")):
        raise ValueError(f"teacher {spec!r} loads as {type(model).__name__}, which has no get_image_features / "
                         f"get_text_features; give a CLIP-like model (CLIP, SigLIP, MobileCLIP) or an open_clip: spec")
    image_processor = transformers.AutoImageProcessor.from_pretrained(path, trust_remote_code=trust_remote_code)
    tokenizer = transformers.AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    text_config = getattr(model.config, "text_config", model.config)
    context_length = getattr(text_config, "max_position_embeddings", None)
    if tokenizer.model_max_length and tokenizer.model_max_length < 10**6:
        context_length = min(context_length or tokenizer.model_max_length, tokenizer.model_max_length)
    if not context_length:
        raise ValueError(f"teacher {spec!r}: cannot tell the text context length (no max_position_embeddings and "
                         f"no tokenizer.model_max_length)")

    def tokenize(texts: list[str]) -> dict:
        # padding="max_length": SigLIP was trained with it, and CLIP's causal mask makes it equivalent there.
        encoded = tokenizer(texts, padding="max_length", truncation=True, max_length=context_length,
                            return_tensors="pt")
        keep = {"input_ids", "attention_mask"} if "siglip" not in model.config.model_type else {"input_ids"}
        return {k: v for k, v in encoded.items() if k in keep}

    return Teacher(spec=spec, library="transformers", model=model, tokenize=tokenize,
                   image_size=_size_from_processor(image_processor, spec),
                   mean=tuple(float(m) for m in image_processor.image_mean),
                   std=tuple(float(s) for s in image_processor.image_std), device=device,
                   model_name=path, pretrained=None, context_length=context_length)


def load_teacher(spec: str, device: torch.device | str = "cpu", logit_scale: Optional[float] = None,
                 dtype: Optional[torch.dtype] = None, trust_remote_code: bool = False) -> Teacher:
    """Load one teacher from its spec string (see the module docstring) and measure its embedding width."""
    device = torch.device(device)
    if spec.startswith(OPEN_CLIP_PREFIX):
        teacher = _load_open_clip(spec, device)
    elif spec.startswith(HF_PREFIX) or os.path.isdir(spec) or "/" in spec:
        teacher = _load_transformers(spec, device, trust_remote_code)
    else:
        raise ValueError(f"teacher spec {spec!r} is not understood; use 'open_clip:<model>/<pretrained>', "
                         f"'open_clip:hf-hub:<repo>', 'open_clip:local-dir:<folder>', 'hf:<repo>' or a transformers "
                         f"repo id / folder")
    teacher.logit_scale = None if logit_scale is None else float(logit_scale)
    teacher.autocast_dtype = dtype if dtype not in (None, torch.float32) else None
    height, width = teacher.image_size
    probe = teacher.encode_image(torch.zeros(1, 3, height, width))
    teacher.embedding_dim = int(probe.shape[-1])
    text_dim = int(teacher.encode_text(["a"]).shape[-1])
    if text_dim != teacher.embedding_dim:
        raise ValueError(f"teacher {spec!r}: image embeddings are {teacher.embedding_dim}-d but text embeddings "
                         f"{text_dim}-d; a CLIP teacher needs a shared embedding space")
    return teacher


__all__ = ["Teacher", "load_teacher", "parse_open_clip_spec"]
