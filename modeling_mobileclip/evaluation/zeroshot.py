"""Zero-shot classification and image<->text retrieval for CLIP-style models.

Written against the `transformers.CLIPModel` API, which `MobileCLIPModel` follows:
`get_image_features(pixel_values=...)` / `get_text_features(input_ids=..., attention_mask=...)` return the
projected, un-normalised embeddings (as a `BaseModelOutputWithPooling` whose `pooler_output` holds them, or
as a plain tensor), and `processor(images=...)` / `processor(text=...)` prepare the inputs.

The classifier follows the OpenAI / open_clip recipe used for Apple's published numbers: embed every
template filled with a class name, L2-normalise each embedding, average over templates, renormalise.
Metrics come from the `evaluate` modules in `metrics/` (next to this module), loaded offline by path;
templates and class names from `prompts.py`.

    classifier = zeroshot_classifier(model, processor, classnames, templates)          # (dim, n_classes)
    metrics = zeroshot_accuracy(model, processor, val_ds, classnames, templates)      # {"acc1", "acc5", ...}
    metrics = retrieval_recall(model, processor, coco_ds, caption_column="captions")  # {"mean_recall@1", ...}

Every function puts the model in eval mode for the duration of the call and restores its previous mode, so
the training loop can call them on the model it is training.
"""

import contextlib
from collections.abc import Iterable, Sequence
from pathlib import Path

import evaluate
import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from .prompts import PLACEHOLDER, check_classnames, check_templates

METRICS_DIR = Path(__file__).resolve().parent / "metrics"

# How many metric rows go to `evaluate` per `add_batch`: bounds the Arrow conversion's memory.
_METRIC_CHUNK = 2048


# ----------------------------------------------------------------------------------------------------------
# Metrics
# ----------------------------------------------------------------------------------------------------------


def load_metric(name: str) -> evaluate.EvaluationModule:
    """One of this package's `evaluate` metrics ("zeroshot_accuracy", "retrieval_recall"), loaded by path.

    Loading by directory works offline (`HF_HUB_OFFLINE=1`). `keep_in_memory` avoids cache files and their
    locks, so concurrent evaluations cannot collide.
    """
    path = METRICS_DIR / name
    if not (path / f"{name}.py").is_file():
        available = sorted(p.name for p in METRICS_DIR.iterdir() if (p / f"{p.name}.py").is_file())
        raise ValueError(f"No metric {name!r} in {METRICS_DIR}; available: {available}.")
    return evaluate.load(str(path), keep_in_memory=True)


def _compute_metric(name: str, predictions: torch.Tensor, references: np.ndarray, **kwargs) -> dict:
    metric = load_metric(name)
    predictions = predictions.float().cpu().numpy()
    for start in range(0, len(predictions), _METRIC_CHUNK):
        stop = start + _METRIC_CHUNK
        metric.add_batch(predictions=predictions[start:stop], references=references[start:stop])
    return metric.compute(**kwargs)


# ----------------------------------------------------------------------------------------------------------
# Features
# ----------------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _inference(model: torch.nn.Module):
    # BatchNorm in the MCi towers must use running statistics; restore the caller's mode afterwards.
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            yield
    finally:
        model.train(was_training)


def _resolve_device(model: torch.nn.Module, device: str | torch.device | None) -> torch.device:
    return torch.device(device) if device is not None else next(model.parameters()).device


def _embeddings(output) -> torch.Tensor:
    # transformers 5 returns BaseModelOutputWithPooling (projected embedding in pooler_output); 4.x a tensor.
    return output.pooler_output if hasattr(output, "pooler_output") else output


def _normalize(features: torch.Tensor) -> torch.Tensor:
    # Normalise (and later compare) in fp32, so bf16/fp16 only affects the towers, not the ranking arithmetic.
    return torch.nn.functional.normalize(features.float(), dim=-1)


def _text_max_length(model: torch.nn.Module) -> int | None:
    # Tokenizers built by hand keep a huge model_max_length; truncate to the text tower's context instead.
    text_config = getattr(getattr(model, "config", None), "text_config", None)
    return getattr(text_config, "max_position_embeddings", None)


def encode_text(
    model: torch.nn.Module,
    processor,
    texts: Sequence[str],
    *,
    batch_size: int = 256,
    device: str | torch.device | None = None,
    progress: bool = False,
) -> torch.Tensor:
    """L2-normalised text embeddings, shape `(len(texts), dim)`, float32 on the CPU."""
    _check_batch_size(batch_size)
    device = _resolve_device(model, device)
    max_length = _text_max_length(model)
    length_kwargs = {"truncation": True, "max_length": max_length} if max_length else {"truncation": True}
    chunks = []
    with _inference(model):
        for start in tqdm(range(0, len(texts), batch_size), desc="texts", disable=not progress):
            chunk = list(texts[start : start + batch_size])
            batch = processor(text=chunk, padding=True, return_tensors="pt", **length_kwargs)
            inputs = {k: batch[k].to(device) for k in ("input_ids", "attention_mask") if k in batch}
            chunks.append(_normalize(_embeddings(model.get_text_features(**inputs))).cpu())
    if not chunks:
        raise ValueError("texts is empty; nothing to encode.")
    return torch.cat(chunks)


class _ImageCollator:
    """Turns a list of dataset rows (or PIL images) into `pixel_values`; picklable for DataLoader workers."""

    def __init__(self, processor, image_column: str | None):
        self.processor = processor
        self.image_column = image_column

    def __call__(self, items: list) -> torch.Tensor:
        images = [item[self.image_column] if self.image_column is not None else item for item in items]
        for image in images:
            if not isinstance(image, Image.Image):
                where = f"column {self.image_column!r}" if self.image_column is not None else "images"
                raise TypeError(
                    f"{where} holds {type(image).__name__}, expected a PIL image; cast the column with "
                    f"`dataset.cast_column(name, datasets.Image())`."
                )
        # Datasets mix grayscale, CMYK and RGBA images (ImageNet does); the towers expect 3 channels.
        images = [image if image.mode == "RGB" else image.convert("RGB") for image in images]
        return self.processor(images=images, return_tensors="pt")["pixel_values"]


def encode_images(
    model: torch.nn.Module,
    processor,
    images,
    *,
    image_column: str = "image",
    batch_size: int = 64,
    device: str | torch.device | None = None,
    num_workers: int = 0,
    progress: bool = False,
) -> torch.Tensor:
    """L2-normalised image embeddings, shape `(len(images), dim)`, float32 on the CPU.

    Args:
        images: a `datasets.Dataset` whose `image_column` holds images, or any sequence of PIL images
            (`image_column` is then ignored).
        num_workers: DataLoader workers that decode and preprocess images in parallel.
    """
    _check_batch_size(batch_size)
    device = _resolve_device(model, device)
    if hasattr(images, "column_names"):
        _check_column(images, image_column, "image")
        images = images.select_columns([image_column])  # decode only the images
    else:
        image_column = None  # a plain sequence of images
    loader = torch.utils.data.DataLoader(
        images, batch_size=batch_size, shuffle=False, num_workers=num_workers,
        collate_fn=_ImageCollator(processor, image_column),
    )
    dtype = next(model.parameters()).dtype
    chunks = []
    with _inference(model):
        for pixel_values in tqdm(loader, desc="images", disable=not progress):
            features = model.get_image_features(pixel_values=pixel_values.to(device=device, dtype=dtype))
            chunks.append(_normalize(_embeddings(features)).cpu())
    if not chunks:
        raise ValueError("images is empty; nothing to encode.")
    return torch.cat(chunks)


# ----------------------------------------------------------------------------------------------------------
# Zero-shot classification
# ----------------------------------------------------------------------------------------------------------


def zeroshot_classifier(
    model: torch.nn.Module,
    processor,
    classnames: Sequence[str],
    templates: Sequence[str],
    *,
    batch_size: int = 256,
    device: str | torch.device | None = None,
    progress: bool = False,
) -> torch.Tensor:
    """Zero-shot classifier weights, shape `(dim, n_classes)`, float32 on the CPU, unit-norm columns.

    Each class's column is the renormalised mean of its L2-normalised template embeddings.
    """
    classnames = check_classnames(classnames)
    templates = check_templates(templates)
    texts = [template.replace(PLACEHOLDER, name) for name in classnames for template in templates]
    embeddings = encode_text(model, processor, texts, batch_size=batch_size, device=device, progress=progress)
    per_class = embeddings.view(len(classnames), len(templates), -1).mean(dim=1)
    return _normalize(per_class).T.contiguous()


def zeroshot_logits(
    image_features: torch.Tensor, classifier: torch.Tensor, logit_scale: float | torch.Tensor | None = None
) -> torch.Tensor:
    """`(n_images, n_classes)` cosine similarities, times `logit_scale` (already exponentiated) if given.

    `image_features` must be L2-normalised (as `encode_images` returns them).
    """
    if image_features.shape[-1] != classifier.shape[0]:
        raise ValueError(
            f"image_features have dim {image_features.shape[-1]} but the classifier has dim {classifier.shape[0]}; "
            f"build both with the same model."
        )
    logits = image_features.float() @ classifier.float().to(image_features.device)
    return logits * logit_scale if logit_scale is not None else logits


def _logit_scale(model: torch.nn.Module) -> float | None:
    scale = getattr(model, "logit_scale", None)
    return float(scale.detach().float().exp()) if scale is not None else None


def zeroshot_accuracy(
    model: torch.nn.Module,
    processor,
    dataset,
    classnames: Sequence[str],
    templates: Sequence[str],
    *,
    image_column: str = "image",
    label_column: str = "label",
    batch_size: int = 64,
    device: str | torch.device | None = None,
    num_workers: int = 0,
    top_k: tuple[int, ...] = (1, 5),
    progress: bool = False,
) -> dict:
    """`{"acc1", "acc5", "mean_per_class_recall"}` of the zero-shot classifier on a `datasets.Dataset`.

    `classnames[i]` must name label `i` of `label_column`. `acc{k}` is None when there are fewer than k classes.
    """
    _check_column(dataset, label_column, "label")
    labels = np.asarray(list(dataset[label_column]), dtype=np.int64)
    classifier = zeroshot_classifier(
        model, processor, classnames, templates, batch_size=batch_size, device=device, progress=progress
    )
    features = encode_images(
        model, processor, dataset, image_column=image_column, batch_size=batch_size, device=device,
        num_workers=num_workers, progress=progress,
    )
    logits = zeroshot_logits(features, classifier, _logit_scale(model))
    return _compute_metric("zeroshot_accuracy", logits, labels, top_k=tuple(top_k))


# ----------------------------------------------------------------------------------------------------------
# Retrieval
# ----------------------------------------------------------------------------------------------------------


def captions_to_index(captions_per_image: Iterable[str | Sequence[str]]) -> tuple[list[str], np.ndarray]:
    """Flatten per-image captions into `(texts, text_to_image)`, where `texts[j]` describes image `text_to_image[j]`.

    Each entry is one caption (str) or a list of captions; an image with an empty list stays a distractor.
    """
    texts, text_to_image = [], []
    for image_index, captions in enumerate(captions_per_image):
        if isinstance(captions, str):
            captions = [captions]
        if not isinstance(captions, (list, tuple)) or not all(isinstance(c, str) for c in captions):
            raise TypeError(
                f"captions of image {image_index} are {type(captions).__name__} {str(captions)[:80]!r}; expected a "
                f"string or a list of strings (pick the caption column with --caption-column)."
            )
        texts.extend(captions)
        text_to_image.extend([image_index] * len(captions))
    if not texts:
        raise ValueError("The caption column holds no captions; retrieval needs at least one caption.")
    return texts, np.asarray(text_to_image, dtype=np.int64)


def retrieval_similarity(image_features: torch.Tensor, text_features: torch.Tensor) -> torch.Tensor:
    """`(n_texts, n_images)` cosine similarities of L2-normalised features (the metric's input layout)."""
    if image_features.shape[-1] != text_features.shape[-1]:
        raise ValueError(
            f"image_features have dim {image_features.shape[-1]} but text_features have dim "
            f"{text_features.shape[-1]}; encode both with the same model."
        )
    return text_features.float() @ image_features.float().T


def retrieval_recall(
    model: torch.nn.Module,
    processor,
    dataset,
    *,
    image_column: str = "image",
    caption_column: str = "caption",
    batch_size: int = 64,
    device: str | torch.device | None = None,
    num_workers: int = 0,
    k_values: tuple[int, ...] = (1, 5, 10),
    progress: bool = False,
) -> dict:
    """Image<->text recall@k on a `datasets.Dataset` of images with one caption or a list of captions each.

    Returns `image_retrieval_recall@k` (text -> image), `text_retrieval_recall@k` (image -> text) and
    `mean_recall@k` for each k.
    """
    _check_column(dataset, caption_column, "caption")
    texts, text_to_image = captions_to_index(list(dataset[caption_column]))
    image_features = encode_images(
        model, processor, dataset, image_column=image_column, batch_size=batch_size, device=device,
        num_workers=num_workers, progress=progress,
    )
    text_features = encode_text(model, processor, texts, batch_size=batch_size, device=device, progress=progress)
    similarity = retrieval_similarity(image_features, text_features)
    return _compute_metric("retrieval_recall", similarity, text_to_image, k_values=tuple(k_values))


# ----------------------------------------------------------------------------------------------------------
# Argument checks
# ----------------------------------------------------------------------------------------------------------


def _check_batch_size(batch_size: int) -> None:
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size={batch_size!r}; expected a positive integer.")


def _check_column(dataset, column: str, role: str) -> None:
    names = getattr(dataset, "column_names", None)
    if names is not None and column not in names:
        raise ValueError(f"The dataset has no {role} column {column!r}; its columns are {names}.")
