"""CLIP teachers for the reinforcement tool: open_clip, transformers and user objects behind one interface.

A teacher is given as a spec string:

* ``open_clip:<model>/<pretrained>`` (``open_clip:ViT-L-14/openai``), ``open_clip:hf-hub:<repo>`` or
  ``open_clip:local-dir:<folder>``: loaded with ``open_clip.create_model_and_transforms``.
* ``hf:<repo or folder>`` or a bare repo id / folder: loaded with ``transformers.AutoModel.from_pretrained`` plus its
  processor (CLIP, SigLIP, MobileCLIP, e.g. a local ``MobileCLIPModel.save_pretrained`` folder that also holds the
  processor: anything with ``get_image_features`` and ``get_text_features``).

or as an object: :func:`teacher_from_transformers` / :func:`teacher_from_open_clip` wrap a model already in memory,
and any object with the :class:`TeacherModel` interface is accepted as it is.

The teacher never preprocesses images itself: the reinforcement tool renders each augmented view at the DR crop size
(224, bicubic) and :meth:`Teacher.pixel_values` resizes it to the teacher's resolution (bicubic, only if smaller, as
Apple's generator does; a larger teacher is refused) and normalises with the teacher's own mean/std. Embeddings are
returned L2-normalised in float32.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Protocol, Sequence, Union, runtime_checkable

import PIL.Image
import torch

from .augment_replay import _normalize_size, to_normalized_tensor

OPEN_CLIP_PREFIX = "open_clip:"
HF_PREFIX = "hf:"


@runtime_checkable
class TeacherModel(Protocol):
    """What ``reinforce(teachers=[...])`` accepts besides spec strings.

    ``name``: recorded as the teacher's ``model`` in ``config.json`` (a rerun into the same output must use the same
    name). ``image_size``: the (height, width) or side the image tower takes; it must not exceed the crop size.
    ``image_mean`` / ``image_std``: its normalisation. ``encode_image`` gets float32 pixel values [B, 3, H, W]
    (on the CPU) and ``encode_text`` a list of strings; both return [B, D] embeddings on any device and dtype
    (the tool L2-normalises them). An optional float attribute ``logit_scale`` is used when the caller gives none.
    """

    name: str
    image_size: Union[int, Sequence[int]]
    image_mean: Sequence[float]
    image_std: Sequence[float]

    def encode_image(self, pixel_values: torch.Tensor) -> torch.Tensor: ...

    def encode_text(self, texts: list[str]) -> torch.Tensor: ...


def parse_open_clip_spec(spec: str) -> tuple[str, Optional[str]]:
    """``open_clip:ViT-L-14/openai`` -> ("ViT-L-14", "openai"); schema'd names (hf-hub:, local-dir:) keep no tag."""
    body = spec[len(OPEN_CLIP_PREFIX):]
    if not body:
        raise ValueError(f"teacher spec {spec!r} names no model; use e.g. 'open_clip:ViT-L-14/openai'")
    if body.startswith(("hf-hub:", "local-dir:")):
        return body, None
    name, _, pretrained = body.partition("/")
    return name, (pretrained or None)


def _size_from_processor(processor: Any, name: str) -> tuple[int, int]:
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
    raise ValueError(f"teacher {name!r}: cannot read the input resolution from its image processor "
                     f"({type(processor).__name__}: crop_size={getattr(processor, 'crop_size', None)}, "
                     f"size={getattr(processor, 'size', None)})")


def _features(output: Any) -> torch.Tensor:
    # transformers >= 5 returns a BaseModelOutputWithPooling whose pooler_output is the projected embedding;
    # older versions (and some remote code) return the tensor directly.
    return output if isinstance(output, torch.Tensor) else output.pooler_output


def _module_device(obj: Any) -> torch.device:
    if isinstance(obj, torch.nn.Module):
        parameter = next(obj.parameters(), None)
        if parameter is not None:
            return parameter.device
    return torch.device("cpu")


@dataclass
class Teacher:
    """One loaded teacher (it has the :class:`TeacherModel` interface). ``encode_*`` return L2-normalised float32
    embeddings on the CPU; ``image_features`` / ``text_features`` are the raw forwards on ``device``."""

    name: str  # config.json "model"
    library: str  # "open_clip", "transformers" or "object"
    image_features: Callable[[torch.Tensor], Any]
    text_features: Callable[[list[str]], Any]
    image_size: tuple[int, int]
    image_mean: tuple[float, ...]
    image_std: tuple[float, ...]
    device: torch.device
    spec: Optional[str] = None  # the spec string it was loaded from (None for objects)
    pretrained: Optional[str] = None
    logit_scale: Optional[float] = None
    embedding_dim: int = 0
    context_length: Optional[int] = None
    autocast_dtype: Optional[torch.dtype] = None
    _resize: int = field(default=PIL.Image.Resampling.BICUBIC, repr=False)

    # ---- preprocessing (views are PIL images at the DR crop size)
    def check_crop_size(self, crop_size: int | Sequence[int]) -> None:
        crop_h, crop_w = _normalize_size(crop_size, "crop size")
        if self.image_size[0] > crop_h or self.image_size[1] > crop_w:
            raise ValueError(
                f"teacher {self.name!r} takes {self.image_size[0]}x{self.image_size[1]} inputs, larger than the "
                f"augmentation crop size {crop_h}x{crop_w}: its views would be upsampled (Apple's generator asserts "
                f"teacher size <= crop size). Use --crop-size {max(self.image_size)} or a teacher at <= {crop_h} px."
            )

    def pixel_values(self, view: PIL.Image.Image) -> torch.Tensor:
        """Resize a DR view to the teacher's resolution (bicubic, only if it differs) and normalise."""
        height, width = self.image_size
        if view.size != (width, height):
            view = view.resize((width, height), self._resize)
        return to_normalized_tensor(view, self.image_mean, self.image_std)

    def _autocast(self):
        enabled = self.autocast_dtype is not None
        return torch.autocast(self.device.type, dtype=self.autocast_dtype or torch.float32, enabled=enabled)

    # ---- forwards
    @torch.inference_mode()
    def encode_image(self, pixel_values: torch.Tensor) -> torch.Tensor:
        with self._autocast():
            features = _features(self.image_features(pixel_values.to(self.device)))
        return torch.nn.functional.normalize(features.float(), dim=-1).cpu()

    @torch.inference_mode()
    def encode_text(self, texts: list[str]) -> torch.Tensor:
        with self._autocast():
            features = _features(self.text_features(list(texts)))
        return torch.nn.functional.normalize(features.float(), dim=-1).cpu()

    def describe(self) -> dict:
        """Loader-compatible teacher entry of ``config.json`` (exactly the keys the datacompdr builder accepts)."""
        return {"model": self.name, "pretrained": self.pretrained, "embedding_dim": self.embedding_dim,
                "logit_scale": self.logit_scale}

    def details(self) -> dict:
        """How this teacher saw its inputs (``config.json`` ``teacher_details``), enough to recompute a block."""
        return {"spec": self.spec, "library": self.library, "image_size": list(self.image_size),
                "mean": [float(m) for m in self.image_mean], "std": [float(s) for s in self.image_std],
                "resize_interpolation": "bicubic", "context_length": self.context_length}


def teacher_from_open_clip(model: torch.nn.Module, tokenizer: Any, name: str, pretrained: Optional[str] = None,
                           spec: Optional[str] = None) -> Teacher:
    """A teacher from an open_clip CLIP in memory (its preprocessing is read from ``model.visual.preprocess_cfg``)."""
    cfg = dict(getattr(model.visual, "preprocess_cfg", {}) or {})
    size = cfg.get("size", getattr(model.visual, "image_size", None))
    if size is None:
        raise ValueError(f"teacher {name!r}: open_clip model has no preprocess size")
    device = _module_device(model)
    model.eval()
    return Teacher(name=name, library="open_clip", image_features=model.encode_image,
                   text_features=lambda texts: model.encode_text(tokenizer(texts).to(device)),
                   image_size=_normalize_size(tuple(size) if isinstance(size, list) else size),
                   image_mean=tuple(cfg.get("mean", (0.48145466, 0.4578275, 0.40821073))),
                   image_std=tuple(cfg.get("std", (0.26862954, 0.26130258, 0.27577711))), device=device,
                   spec=spec, pretrained=pretrained, context_length=getattr(tokenizer, "context_length", None))


def teacher_from_transformers(model: torch.nn.Module, processor: Any, name: str, image_processor: Any = None,
                              spec: Optional[str] = None) -> Teacher:
    """A teacher from a transformers CLIP-like model in memory and its processor (or tokenizer + ``image_processor``).

    Texts go through the processor's own text path (MobileCLIP's zeroes the padding), padded to the context length;
    the image processor gives the resolution and mean/std.
    """
    if not (hasattr(model, "get_image_features") and hasattr(model, "get_text_features")):
        raise ValueError(f"teacher {name!r} is a {type(model).__name__}, which has no get_image_features / "
                         f"get_text_features; give a CLIP-like model (CLIP, SigLIP, MobileCLIP) or an open_clip one")
    tokenizer = getattr(processor, "tokenizer", processor)
    image_processor = image_processor if image_processor is not None else getattr(processor, "image_processor", None)
    if image_processor is None or not hasattr(tokenizer, "model_max_length"):
        raise ValueError(f"teacher {name!r}: need a processor with an image processor and a tokenizer (or pass "
                         f"image_processor=); got {type(processor).__name__}")
    text_config = getattr(model.config, "text_config", model.config)
    context_length = getattr(text_config, "max_position_embeddings", None)
    if tokenizer.model_max_length and tokenizer.model_max_length < 10**6:
        context_length = min(context_length or tokenizer.model_max_length, tokenizer.model_max_length)
    if not context_length:
        raise ValueError(f"teacher {name!r}: cannot tell the text context length (no max_position_embeddings and "
                         f"no tokenizer.model_max_length)")
    # SigLIP was trained without an attention mask on max_length padding; CLIP's causal mask makes padding harmless.
    keep = {"input_ids"} if "siglip" in model.config.model_type else {"input_ids", "attention_mask"}
    text_encoder = processor if hasattr(processor, "tokenizer") else tokenizer
    device = _module_device(model)
    model.eval()

    def text_features(texts: list[str]) -> Any:
        encoded = text_encoder(text=texts, padding="max_length", truncation=True, max_length=context_length,
                               return_tensors="pt")
        return model.get_text_features(**{k: v.to(device) for k, v in encoded.items() if k in keep})

    return Teacher(name=name, library="transformers",
                   image_features=lambda pixel_values: model.get_image_features(pixel_values=pixel_values),
                   text_features=text_features, image_size=_size_from_processor(image_processor, name),
                   image_mean=tuple(float(m) for m in image_processor.image_mean),
                   image_std=tuple(float(s) for s in image_processor.image_std), device=device, spec=spec,
                   context_length=context_length)


def _teacher_from_object(obj: TeacherModel) -> Teacher:
    missing = [a for a in ("name", "image_size", "image_mean", "image_std", "encode_image", "encode_text")
               if not hasattr(obj, a)]
    if missing:
        raise ValueError(f"teacher object {type(obj).__name__} lacks {missing}; a teacher is a spec string or an "
                         f"object with the dataset_scripts.teachers.TeacherModel interface")
    scale = getattr(obj, "logit_scale", None)
    return Teacher(name=str(obj.name), library="object", image_features=obj.encode_image,
                   text_features=obj.encode_text, image_size=_normalize_size(obj.image_size, "teacher image_size"),
                   image_mean=tuple(float(m) for m in obj.image_mean),
                   image_std=tuple(float(s) for s in obj.image_std), device=torch.device("cpu"),
                   logit_scale=float(scale) if isinstance(scale, (int, float)) else None)


def _load_open_clip(spec: str, device: torch.device) -> Teacher:
    import open_clip

    name, pretrained = parse_open_clip_spec(spec)
    model, _, _ = open_clip.create_model_and_transforms(name, pretrained=pretrained, device=device)
    return teacher_from_open_clip(model, open_clip.get_tokenizer(name), name, pretrained, spec=spec)


def _load_transformers(spec: str, device: torch.device, trust_remote_code: bool) -> Teacher:
    import transformers

    import modeling_mobileclip  # noqa: F401  (registers MobileCLIP with the Auto classes)

    path = spec[len(HF_PREFIX):] if spec.startswith(HF_PREFIX) else spec
    model = transformers.AutoModel.from_pretrained(path, trust_remote_code=trust_remote_code).to(device)
    try:
        processor = transformers.AutoProcessor.from_pretrained(path, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as err:
        raise ValueError(f"teacher {spec!r}: no processor found next to the model ({err}); save it with "
                         f"processor.save_pretrained(<folder>) so the teacher's resolution, mean/std and tokenizer "
                         f"are known") from None
    return teacher_from_transformers(model, processor, path, spec=spec)


def load_teacher(spec: Union[str, TeacherModel], device: torch.device | str = "cpu",
                 logit_scale: Optional[float] = None, dtype: Optional[torch.dtype] = None,
                 trust_remote_code: bool = False) -> Teacher:
    """A :class:`Teacher` from a spec string (see the module docstring) or an object; measures its embedding width.

    ``logit_scale`` (the distillation logit scale recorded in ``config.json``) overrides the object's own; ``dtype``
    (bf16/fp16) runs the forwards under autocast.
    """
    device = torch.device(device)
    if isinstance(spec, Teacher):
        teacher = dataclasses.replace(spec)
    elif not isinstance(spec, str):
        teacher = _teacher_from_object(spec)
    elif spec.startswith(OPEN_CLIP_PREFIX):
        teacher = _load_open_clip(spec, device)
    elif spec.startswith(HF_PREFIX) or os.path.isdir(spec) or "/" in spec:
        teacher = _load_transformers(spec, device, trust_remote_code)
    else:
        raise ValueError(f"teacher spec {spec!r} is not understood; use 'open_clip:<model>/<pretrained>', "
                         f"'open_clip:hf-hub:<repo>', 'open_clip:local-dir:<folder>', 'hf:<repo>' or a transformers "
                         f"repo id / folder")
    if logit_scale is not None:
        teacher.logit_scale = float(logit_scale)
    if dtype not in (None, torch.float32):
        teacher.autocast_dtype = dtype
    height, width = teacher.image_size
    probe = teacher.encode_image(torch.zeros(1, 3, height, width))
    text_probe = teacher.encode_text(["a"])
    if probe.ndim != 2 or text_probe.ndim != 2 or probe.shape[-1] != text_probe.shape[-1]:
        raise ValueError(f"teacher {teacher.name!r}: image embeddings have shape {tuple(probe.shape)} and text "
                         f"embeddings {tuple(text_probe.shape)}; a CLIP teacher returns [batch, D] for both, in a "
                         f"shared D-dimensional space")
    teacher.embedding_dim = int(probe.shape[-1])
    return teacher


__all__ = ["Teacher", "TeacherModel", "load_teacher", "parse_open_clip_spec", "teacher_from_open_clip",
           "teacher_from_transformers"]
