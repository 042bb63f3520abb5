"""Hub model and dataset cards for MobileCLIP checkpoints and reinforced (DataCompDR-layout) datasets.

    card = generate_model_card("out/mobileclip-s0", repo_id="org/mobileclip-s0")   # converted Apple weights
    card = generate_model_card(model, "mobileclip-s0", processor=processor, repo_id="org/s0-ft",
                               converted_from_apple=False, base_model="apple/MobileCLIP-S0")  # a fine-tune
    card.write("out/mobileclip-s0")        # README.md + the widget images it references
    validate_card(card)                    # the Hub's metadata check (POST {HF_ENDPOINT}/api/validate-yaml)

    card = generate_dataset_card(json.load(open("reinforced/config.json")), repo_id="org/my-datacompdr",
                                 license="cc-by-nc-4.0")

Licence, preprocessing and Apple's published results come from `PRETRAINED_TAGS`; there is no default licence: a
model that is not (derived from) Apple's weights needs `license=`. Custom-code models get no live widget on the Hub,
so every widget example carries a static `output` computed by running the model through its processor here.
"""

from __future__ import annotations

import copy
import io
import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from huggingface_hub import DatasetCard, DatasetCardData, EvalResult, ModelCard, ModelCardData
from PIL import Image

from modeling_mobileclip.configuration_mobileclip import MOBILECLIP_VARIANTS, PRETRAINED_TAGS, resolve_variant

TEMPLATE_DIR = Path(__file__).parent
MODEL_CARD_TEMPLATE = TEMPLATE_DIR / "model_card.md.j2"
DATASET_CARD_TEMPLATE = TEMPLATE_DIR / "dataset_card.md.j2"

PIPELINE_TAG = "zero-shot-image-classification"
MODEL_TAGS = ("mobileclip", "clip", "zero-shot-image-classification", "custom_code")
HYPOTHESIS_TEMPLATE = "This is a photo of {}."  # the zero-shot pipeline's default, so widget outputs match it
WIDGET_DIR = "widget"
APPLE_LICENSE_NAME = "apple-amlr"
# What Apple trained each family on (ml-mobileclip README / training configs; docs/datacompdr.md section 1).
APPLE_TRAINING_DATASETS = {"mobileclip": ["apple/DataCompDR-1B"], "mobileclip2": ["apple/DFNDR-2B"]}
PAPERS = {
    "mobileclip": "MobileCLIP (Vasu et al., CVPR 2024, [arXiv:2311.17049](https://arxiv.org/abs/2311.17049))",
    "mobileclip2": "MobileCLIP2 (Faghri et al., TMLR 2025, [arXiv:2508.20691](https://arxiv.org/abs/2508.20691))",
}
COPYRIGHT_YEAR = {"mobileclip": "2024", "mobileclip2": "2025"}
BIBTEX = """@inproceedings{vasu2024mobileclip,
  title     = {MobileCLIP: Fast Image-Text Models through Multi-Modal Reinforced Training},
  author    = {Vasu, Pavan Kumar Anasosalu and Pouransari, Hadi and Faghri, Fartash and Vemulapalli, Raviteja and
               Tuzel, Oncel},
  booktitle = {Proceedings of the IEEE/CVF Conference on Computer Vision and Pattern Recognition (CVPR)},
  year      = {2024}
}

@article{faghri2025mobileclip2,
  title   = {MobileCLIP2: Improving Multi-Modal Reinforced Training},
  author  = {Faghri, Fartash and Vasu, Pavan Kumar Anasosalu and Koc, Cem and Shankar, Vaishaal and
             Toshev, Alexander T and Tuzel, Oncel and Pouransari, Hadi},
  journal = {Transactions on Machine Learning Research},
  year    = {2025},
  note    = {arXiv:2508.20691}
}"""
_APPLE_HUB_IDS = {tag["hub_id"]: name for name, tag in PRETRAINED_TAGS.items()}
_REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")


class MobileCLIPModelCard(ModelCard):
    """A `ModelCard` that also carries the files its metadata references (widget images) and its target repo.

    `write(folder)` writes `README.md` plus those files; `push_model_to_hub` / `push_folder_to_hub` call it.
    """

    assets: dict[str, bytes]
    repo_id: str | None

    def write(self, folder: str | os.PathLike) -> list[Path]:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        written = []
        for path, data in getattr(self, "assets", {}).items():
            target = folder / path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
            written.append(target)
        self.save(folder / "README.md")
        return [*written, folder / "README.md"]


# ----------------------------------------------------------------------------------------------------------
# Widget examples


@dataclass(frozen=True)
class WidgetExample:
    """One widget entry: a repo-relative PNG path, the image itself, the labels and a title."""

    src: str
    image: Image.Image
    candidate_labels: tuple[str, ...]
    example_title: str

    def png_bytes(self) -> bytes:
        buffer = io.BytesIO()
        self.image.save(buffer, format="PNG")
        return buffer.getvalue()


def default_widget_examples(size: int = 64) -> list[WidgetExample]:
    """Small deterministic images (a solid colour, a gradient, a checkerboard) that need no download or licence."""
    solid = Image.new("RGB", (size, size), (220, 30, 30))
    ramp = np.linspace(0, 255, size, dtype=np.float64).round().astype(np.uint8)
    gradient = Image.fromarray(np.stack([np.tile(ramp, (size, 1))] * 3, axis=-1))
    cells = (np.add.outer(np.arange(size) // (size // 8), np.arange(size) // (size // 8)) % 2).astype(bool)
    checker = np.where(cells[..., None], np.array([30, 60, 200], np.uint8), np.array([240, 220, 40], np.uint8))
    return [
        WidgetExample(f"{WIDGET_DIR}/solid-red.png", solid, ("red", "green", "blue"), "A solid red square"),
        WidgetExample(f"{WIDGET_DIR}/grey-gradient.png", gradient, ("a gradient", "a checkerboard", "a photo of a cat"),
                      "A black-to-white gradient"),
        WidgetExample(f"{WIDGET_DIR}/checkerboard.png", Image.fromarray(checker),
                      ("a checkerboard", "a gradient", "a dog"), "A blue and yellow checkerboard"),
    ]


def _widget_examples(widget_images: Sequence[Mapping | WidgetExample] | None) -> list[WidgetExample]:
    if widget_images is None:
        return default_widget_examples()
    examples = []
    for i, spec in enumerate(widget_images):
        if isinstance(spec, WidgetExample):
            examples.append(spec)
            continue
        if not isinstance(spec, Mapping) or not {"image", "candidate_labels", "example_title"} <= set(spec):
            raise ValueError(f"widget_images[{i}] is {spec!r}; expected a WidgetExample or a dict with 'image' "
                             "(PIL image or file path), 'candidate_labels' (list or comma-separated string), "
                             "'example_title' and optionally 'src' (repo-relative .png path).")
        image = spec["image"]
        if isinstance(image, (str, os.PathLike)):
            image = Image.open(image)
        if not isinstance(image, Image.Image):
            raise TypeError(f"widget_images[{i}]['image'] is a {type(image).__name__}; pass a PIL image or a path.")
        labels = spec["candidate_labels"]
        labels = [s.strip() for s in labels.split(",")] if isinstance(labels, str) else [str(s) for s in labels]
        if len(labels) < 2 or any(not s or "," in s for s in labels):
            raise ValueError(f"widget_images[{i}]['candidate_labels'] is {spec['candidate_labels']!r}; give at least "
                             "two non-empty labels without commas (the widget joins them with ', ').")
        slug = re.sub(r"[^a-z0-9]+", "-", spec["example_title"].lower()).strip("-") or f"example-{i}"
        src = spec.get("src", f"{WIDGET_DIR}/{slug}.png")
        if src.startswith(("http://", "https://", "/")) or not src.endswith(".png"):
            raise ValueError(f"widget_images[{i}]['src'] is {src!r}; use a repo-relative path ending in .png (the "
                             "image is stored in the repo as PNG next to the card).")
        examples.append(WidgetExample(src, image.convert("RGB"), tuple(labels), spec["example_title"]))
    if len({e.src for e in examples}) != len(examples):
        raise ValueError(f"widget_images give duplicate src paths {[e.src for e in examples]}; make them unique.")
    return examples


@torch.no_grad()
def zero_shot_scores(model, processor, images: Sequence[Image.Image],
                     labels: Sequence[Sequence[str]]) -> list[list[dict]]:
    """What the zero-shot pipeline returns for each image with its own candidate labels, computed with the model and
    its processor (prompt `HYPOTHESIS_TEMPLATE`, softmax over that image's labels): `[{"label", "score"}]` sorted by
    score, rounded to 4 decimals. All images and prompts go through the model in one batch."""
    prompts = list(dict.fromkeys(HYPOTHESIS_TEMPLATE.format(label) for group in labels for label in group))
    inputs = processor(text=prompts, images=list(images), return_tensors="pt")
    parameter = next(model.parameters())
    inputs = {k: v.to(parameter.device, parameter.dtype if v.is_floating_point() else v.dtype)
              for k, v in inputs.items()}
    was_training = model.training
    model.eval()
    try:
        logits = model(**inputs).logits_per_image.float()
    finally:
        model.train(was_training)
    results = []
    for row, group in zip(logits, labels):
        columns = [prompts.index(HYPOTHESIS_TEMPLATE.format(label)) for label in group]
        probs = row[columns].softmax(dim=-1).tolist()
        ranked = sorted(zip(group, probs), key=lambda pair: -pair[1])
        results.append([{"label": label, "score": round(score, 4)} for label, score in ranked])
    return results


# ----------------------------------------------------------------------------------------------------------
# Licence


def _family(variant: str | None) -> str | None:
    if variant is None:
        return None
    return "mobileclip2" if variant.startswith("mobileclip2") else "mobileclip"


def _apple_licence(variant: str) -> dict:
    tag = PRETRAINED_TAGS[variant]
    return {"license": tag["license"], "license_name": tag["license_name"], "license_link": tag["license_link"]}


def _normalise_licence(license: str | Mapping) -> dict:
    if isinstance(license, str):
        if license == "other":
            raise ValueError("license='other' needs a name and a link: pass license={'license': 'other', "
                             "'license_name': ..., 'license_link': ...}.")
        return {"license": license}
    if isinstance(license, Mapping) and license.get("license"):
        unknown = set(license) - {"license", "license_name", "license_link"}
        if unknown:
            raise ValueError(f"license dict has unknown keys {sorted(unknown)}; use 'license', 'license_name', "
                             "'license_link'.")
        if license["license"] == "other" and not (license.get("license_name") and license.get("license_link")):
            raise ValueError(f"license={dict(license)!r}: 'other' needs both 'license_name' and 'license_link'.")
        return {k: license[k] for k in ("license", "license_name", "license_link") if license.get(k)}
    raise ValueError(f"license={license!r}; pass a Hub licence id such as 'apache-2.0' or a dict with 'license' "
                     "(and 'license_name'/'license_link' for 'other').")


def _resolve_licence(variant, converted_from_apple, base_model, license) -> tuple[dict, str | None]:
    """(licence fields, the Apple variant the weights derive from or None)."""
    if converted_from_apple:
        if variant is None:
            raise ValueError("converted_from_apple=True needs the variant (the model's config.variant is not set): "
                             f"pass variant= one of {', '.join(PRETRAINED_TAGS)}. For a model you trained, pass "
                             "converted_from_apple=False and license=.")
        if base_model is not None:
            raise ValueError(f"base_model={base_model!r} is for fine-tunes; a converted checkpoint records its source "
                             f"({PRETRAINED_TAGS[variant]['hub_id']}) in the card body. Pass "
                             "converted_from_apple=False for a fine-tune.")
        licence = _apple_licence(variant)
        if license is not None and _normalise_licence(license) != licence:
            raise ValueError(f"license={license!r} for converted Apple weights; they cannot be relicensed and keep "
                             f"{licence} (PRETRAINED_TAGS[{variant!r}]). Drop the license argument.")
        return licence, variant
    base_variant = _APPLE_HUB_IDS.get(base_model) if isinstance(base_model, str) else None
    if base_variant is not None:  # a fine-tune of Apple's weights is a derivative: the AMLR terms follow it
        licence = _apple_licence(base_variant)
        if license is not None and _normalise_licence(license) != licence:
            raise ValueError(f"license={license!r}, but base_model={base_model!r} is Apple's and its derivatives stay "
                             f"under {licence['license_name']} ({licence['license_link']}). Drop the license "
                             "argument.")
        return licence, base_variant
    if license is None:
        raise ValueError("No licence for these weights: they are not converted from Apple's (converted_from_apple="
                         f"False) and base_model={base_model!r} is not one of Apple's repos. Pass license= (e.g. "
                         "'apache-2.0', or {'license': 'other', 'license_name': ..., 'license_link': ...}); if they "
                         "derive from Apple's weights, pass base_model='apple/MobileCLIP-...' instead.")
    licence = _normalise_licence(license)
    return licence, (variant if licence.get("license_name") == APPLE_LICENSE_NAME else None)


def _apple_attribution(licence: dict, apple_variant: str | None, modification: str) -> str | None:
    if licence.get("license_name") != APPLE_LICENSE_NAME:
        return None
    year = COPYRIGHT_YEAR.get(_family(apple_variant), "2024-2025")
    original = PRETRAINED_TAGS[apple_variant]["hub_id"] if apple_variant else "Apple's MobileCLIP weights"
    return (f"Copyright (C) {year} Apple Inc. All Rights Reserved.\n\n"
            f"These weights are a derivative of {original}, distributed under the Apple Machine Learning Research "
            f"Model License ({licence['license_link']}), which is included by reference and applies to every copy: "
            f"use is limited to research purposes (non-commercial). **Modified:** {modification}")


# ----------------------------------------------------------------------------------------------------------
# Model card


def _load_model_and_processor(model_dir_or_model, processor, variant):
    if isinstance(model_dir_or_model, (str, os.PathLike)):
        path = Path(model_dir_or_model)
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"model_dir_or_model={str(path)!r} is not a saved model folder (no config.json); "
                                    "pass a folder written by save_pretrained or a MobileCLIPModel.")
        from transformers import AutoModel, AutoProcessor

        import modeling_mobileclip  # noqa: F401  (registers the Auto classes)

        model = AutoModel.from_pretrained(path)
        return model, processor if processor is not None else AutoProcessor.from_pretrained(path), path
    if not isinstance(model_dir_or_model, torch.nn.Module) or not hasattr(model_dir_or_model, "config"):
        raise TypeError(f"model_dir_or_model is a {type(model_dir_or_model).__name__}; pass a MobileCLIPModel or "
                        "the folder it was saved to.")
    if processor is None:
        if variant is None:
            raise ValueError("processor= is needed to run the widget examples for a model without a variant; pass "
                             "the MobileCLIPProcessor the model was trained/converted with.")
        from modeling_mobileclip import MobileCLIPProcessor

        processor = MobileCLIPProcessor.from_variant(variant)
    return model_dir_or_model, processor, None


def _check_processor_matches_tag(processor, variant: str) -> None:
    """Converted weights reproduce Apple's outputs only with Apple's preprocessing: compare with PRETRAINED_TAGS."""
    tag, size = PRETRAINED_TAGS[variant], MOBILECLIP_VARIANTS[variant]["vision"]["image_size"]
    ip = processor.image_processor
    crop = ip.crop_size
    crop = (crop["height"], crop["width"]) if isinstance(crop, Mapping) else (crop.height, crop.width)
    checks = {"image_mean": (tuple(np.round(ip.image_mean, 8)), tuple(np.round(tag["image_mean"], 8))),
              "image_std": (tuple(np.round(ip.image_std, 8)), tuple(np.round(tag["image_std"], 8))),
              "crop_size": (crop, (size, size)),
              "resample": (getattr(ip.resample, "name", str(ip.resample)).lower(), tag["resample"])}
    for name, (got, expected) in checks.items():
        if got != expected:
            raise ValueError(f"The processor's {name} is {got}, but PRETRAINED_TAGS[{variant!r}] says {expected}: "
                             f"converted weights would not reproduce Apple's results. Use "
                             f"MobileCLIPProcessor.from_variant({variant!r}).")


def _eval_results(eval_results) -> list[EvalResult]:
    results = []
    for i, item in enumerate(eval_results or []):
        if isinstance(item, EvalResult):
            results.append(item)
        elif isinstance(item, Mapping) and {"key", "dataset", "metrics"} <= set(item):  # a datacomp results row
            for metric, value in item["metrics"].items():
                if metric == "main_metric" or not isinstance(value, (int, float)):
                    continue
                task = "zero-shot-image-classification" if "acc" in metric else "zero-shot-image-text-retrieval"
                results.append(EvalResult(task_type=task, dataset_type=item["key"], dataset_name=item["dataset"],
                                          metric_type=metric, metric_value=float(value),
                                          dataset_split=item.get("split")))
        elif isinstance(item, Mapping) and {"dataset_type", "dataset_name", "metric_type", "metric_value"} <= set(item):
            results.append(EvalResult(**{"task_type": "zero-shot-image-classification", **item}))
        else:
            raise ValueError(f"eval_results[{i}] is {item!r}; expected a huggingface_hub.EvalResult, a dict with "
                             "dataset_type, dataset_name, metric_type, metric_value, or a results row "
                             "{'key', 'dataset', 'metrics'} as written by modeling_mobileclip.evaluate.")
    return results


def _architecture(config) -> str:
    vision, text = config.vision_config, config.text_config
    if vision.backbone == "fastvit":
        image = f"FastViT/MCi image tower ({len(vision.layers)} stages, widths {list(vision.embed_dims)})"
    else:
        image = f"ViT-{vision.patch_size} image tower ({vision.num_hidden_layers} layers, width {vision.hidden_size})"
    blocks = text.layer_block_types
    kinds = " with RepMixer blocks" if "repmixer" in blocks else ""
    mask = "causal" if text.causal else "bidirectional"
    return (f"{image} + {text.num_hidden_layers}-layer {mask} transformer text tower{kinds} (width "
            f"{text.hidden_size})")


def _millions(module: torch.nn.Module, *extra: torch.nn.Module) -> str:
    count = sum(p.numel() for m in (module, *extra) for p in m.parameters())
    return f"{count / 1e6:.3g}"


def _published(variant: str, converted: bool, fine_tuned: bool) -> dict:
    tag = PRETRAINED_TAGS[variant]
    results, name = tag["results"], tag["hub_id"].split("/")[-1]
    if converted:
        note = (f"Apple's numbers for the original {name} checkpoint, which these weights are converted from; "
                "they were not re-measured on this conversion.")
    elif fine_tuned:
        note = f"Apple's numbers for the base model {name}, **not** for this fine-tuned checkpoint."
    else:
        note = (f"Apple's numbers for its own {name} training run of this architecture; this checkpoint was "
                "trained separately and is not expected to match them.")
    return dict(name=name, note=note, seen=results["seen_samples_billion"],
                params=" + ".join(f"{v:g}" for v in results["params_m_image_text"]),
                latency=" + ".join(f"{v:g}" for v in results["latency_ms_image_text"]),
                top1=f"{results['imagenet_zeroshot_top1']:.1f}", avg38=f"{results['avg_38_datasets']:.1f}",
                paper=PAPERS[_family(variant)])


def generate_model_card(model_dir_or_model, variant: str | None = None, *, repo_id: str | None = None,
                        processor=None, base_model: str | list[str] | None = None,
                        datasets: str | list[str] | None = None, eval_results: Sequence | None = None,
                        widget_images: Sequence[Mapping | WidgetExample] | None = None,
                        converted_from_apple: bool = True, license: str | Mapping | None = None,
                        modification: str | None = None) -> MobileCLIPModelCard:
    """Model card (`README.md`) for a MobileCLIP checkpoint.

    Args:
        model_dir_or_model: A `MobileCLIPModel`, or the folder it was saved to (with its processor). When a folder
            is given, the widget images are written into it.
        variant: Preset name (`mobileclip-s0` ... `mobileclip2-l-14`); defaults to `model.config.variant`.
        repo_id: The repo the card is pushed to; the usage snippets load from it.
        processor: The model's `MobileCLIPProcessor` (default: loaded from the folder, else `from_variant`).
        base_model: Hub id(s) of the model this one was fine-tuned from (with `converted_from_apple=False`).
        datasets: Hub ids of the training data (default for converted weights: Apple's training set).
        eval_results: This checkpoint's results (`EvalResult`s, dicts, or `modeling_mobileclip.evaluate` rows),
            written to `model-index` and a table.
        widget_images: Widget examples (dicts with image, candidate_labels, example_title, optional src); default:
            three generated images. Their static outputs are computed with the model.
        converted_from_apple: The weights are Apple's, converted: licence, attribution and datasets come from
            `PRETRAINED_TAGS[variant]`.
        license: Licence of weights that are not Apple's (required then; there is no default): a Hub licence id or
            `{"license": "other", "license_name": ..., "license_link": ...}`.
        modification: How these weights differ from Apple's (the derivative notice the AMLR asks for); a default
            describing the conversion or fine-tune is used.
    """
    if variant is None:  # a saved folder's variant is known once it is loaded
        variant = getattr(getattr(model_dir_or_model, "config", None), "variant", None)
    variant = resolve_variant(variant) if variant is not None else None
    model, processor, model_dir = _load_model_and_processor(model_dir_or_model, processor, variant)
    if variant is None and getattr(model.config, "variant", None) is not None:
        variant = resolve_variant(model.config.variant)
    if variant is not None and variant not in PRETRAINED_TAGS:
        raise ValueError(f"variant {variant!r} has no PRETRAINED_TAGS entry; valid: {', '.join(PRETRAINED_TAGS)}.")
    if repo_id is not None and not _REPO_ID.match(repo_id):
        raise ValueError(f"repo_id={repo_id!r} is not a Hub repo id; use 'namespace/name'.")
    base_models = [base_model] if isinstance(base_model, str) else list(base_model or [])
    if any(not _REPO_ID.match(b) for b in base_models):
        raise ValueError(f"base_model={base_model!r} must be Hub repo id(s) 'namespace/name'.")
    licence, apple_variant = _resolve_licence(variant, converted_from_apple,
                                              base_models[0] if len(base_models) == 1 else base_model, license)
    if converted_from_apple:
        _check_processor_matches_tag(processor, variant)
    fine_tuned = not converted_from_apple and bool(base_models)

    examples = _widget_examples(widget_images)
    widget, widget_rows = [], []
    outputs = zero_shot_scores(model, processor, [e.image for e in examples], [e.candidate_labels for e in examples])
    for example, output in zip(examples, outputs):
        widget.append({"src": example.src, "candidate_labels": ", ".join(example.candidate_labels),
                       "example_title": example.example_title, "output": output})
        widget_rows.append(dict(src=example.src, title=example.example_title,
                                labels=", ".join(example.candidate_labels), top_label=output[0]["label"],
                                top_score=f"{output[0]['score']:.4f}"))
    assets = {example.src: example.png_bytes() for example in examples}

    if datasets is None and converted_from_apple:
        datasets = APPLE_TRAINING_DATASETS[_family(variant)]
    datasets = [datasets] if isinstance(datasets, str) else (list(datasets) if datasets else None)
    family_tags = [_family(variant)] if variant and _family(variant) not in MODEL_TAGS else []
    model_name = repo_id.split("/")[-1] if repo_id else (variant or "mobileclip")
    results = _eval_results(eval_results)
    card_data = ModelCardData(
        library_name="transformers", pipeline_tag=PIPELINE_TAG, tags=[*MODEL_TAGS, *family_tags], **licence,
        datasets=datasets, base_model=base_model if base_models else None, widget=widget,
        model_name=model_name if results else None, eval_results=results or None,
    )

    if variant is not None:  # preprocessing as the variant defines it (rule 15); checked against the processor above
        tag, size = PRETRAINED_TAGS[variant], MOBILECLIP_VARIANTS[variant]["vision"]["image_size"]
        mean, std, resample = tag["image_mean"], tag["image_std"], tag["resample"]
    else:
        ip = processor.image_processor
        crop = ip.crop_size
        size = crop["height"] if isinstance(crop, Mapping) else crop.height
        mean, std = ip.image_mean, ip.image_std
        resample = getattr(ip.resample, "name", str(ip.resample)).lower()
    display = PRETRAINED_TAGS[variant]["hub_id"].split("/")[-1] if variant else None
    if converted_from_apple:
        tag = PRETRAINED_TAGS[variant]
        provenance = (f"Apple's `{tag['checkpoint']}` ({tag['checkpoint_format']} format, published as "
                      f"[{tag['hub_id']}](https://huggingface.co/{tag['hub_id']})), converted to transformers")
        modification = modification or ("converted from Apple's checkpoint to the transformers format by "
                                         "mobileclip-hf (parameter names and layout changed); the weight values were "
                                         "not retrained.")
        title, summary = f"{display} (transformers)", (
            f"Apple's {display} image-text model, from {PAPERS[_family(variant)]}, converted to transformers: "
            "zero-shot image classification and image/text embeddings.")
    elif fine_tuned:
        provenance = f"fine-tuned from {', '.join(f'`{b}`' for b in base_models)}"
        modification = modification or f"fine-tuned from {', '.join(base_models)}" + (
            f" on {', '.join(datasets)}." if datasets else ".")
        title = model_name
        summary = f"A MobileCLIP{' ' + display if display else ''} model fine-tuned from {', '.join(base_models)}."
    else:
        provenance = "trained from scratch" + (f" on {', '.join(datasets)}" if datasets else "")
        modification = modification or "trained with mobileclip-hf."
        title = model_name
        summary = f"A MobileCLIP image-text model{' with the ' + display + ' architecture' if display else ''}."
    licence_line = (f"[{licence['license_name']}]({licence['license_link']})" if licence.get("license_name")
                    else f"`{licence['license']}`")
    if licence.get("license_name") == APPLE_LICENSE_NAME:
        licence_text = (f"The weights are licensed under the Apple Machine Learning Research Model License "
                        f"([{APPLE_LICENSE_NAME}]({licence['license_link']})): research purposes only, not for "
                        "commercial use. Fine-tunes and other derivatives stay under the same terms.")
    else:
        licence_text = f"The weights are licensed under {licence_line}."
    usage = examples[0]
    card = MobileCLIPModelCard.from_template(
        card_data, template_path=str(MODEL_CARD_TEMPLATE),
        title=title, summary=summary, custom_code=True,
        architecture=_architecture(model.config), variant_label=f"`{variant}`" if variant else "custom configuration",
        params_image=_millions(model.vision_model, model.visual_projection),
        params_text=_millions(model.text_model, model.text_projection),
        image_size=size, resample=resample, image_mean=[round(float(v), 8) for v in mean],
        image_std=[round(float(v), 8) for v in std], context_length=model.config.text_config.max_position_embeddings,
        projection_dim=model.config.projection_dim, provenance=provenance, licence_line=licence_line,
        repo_id=repo_id or "<namespace>/<model-name>",
        usage_example={"src": usage.src, "labels": repr(list(usage.candidate_labels))},
        widget_rows=widget_rows,
        eval_rows=[dict(dataset=r.dataset_name, split=r.dataset_split or "-", metric=r.metric_type,
                        value=f"{r.metric_value:.4f}" if isinstance(r.metric_value, float) else r.metric_value)
                   for r in results],
        published=_published(variant, converted_from_apple, fine_tuned) if variant else None,
        licence_text=licence_text, apple_attribution=_apple_attribution(licence, apple_variant, modification),
        bibtex=BIBTEX,
    )
    card.assets, card.repo_id = assets, repo_id
    if model_dir is not None:
        for path, data in assets.items():
            (model_dir / path).parent.mkdir(parents=True, exist_ok=True)
            (model_dir / path).write_bytes(data)
    return card


# ----------------------------------------------------------------------------------------------------------
# Dataset card


def _feature_schema(config: dict, total_dim: int):
    """`datasets.Features` the generic WebDataset loader needs for shards in the reinforced layout."""
    from datasets import Array2D, Features, Json, List, Value
    from datasets import Image as ImageFeature

    embedding_format = config.get("embedding_format", "npz")
    if embedding_format not in ("npz", "pth.gz"):
        raise ValueError(f"config['embedding_format'] is {embedding_format!r}; expected 'npz' or 'pth.gz'.")
    layout = config.get("layout", "v1")
    if layout not in ("v1", "raygen"):
        raise ValueError(f"config['layout'] is {layout!r}; expected 'v1' or 'raygen'.")
    syn_keys = config.get("syn_text_keys") or ["syn_text"]
    if isinstance(syn_keys, str) or not all(isinstance(k, str) and k for k in syn_keys):
        raise ValueError(f"config['syn_text_keys'] is {syn_keys!r}; give the list of synthetic-caption keys in "
                         "syn.json, e.g. ['syn_text'].")
    embedding = Array2D(shape=(None, total_dim), dtype="float32")
    embeddings = {"image_emb": embedding, "text_emb": embedding}
    if layout == "raygen":
        embeddings.update({f"{key}_emb": embedding for key in syn_keys})
    features, rows = {}, []
    image_field = config.get("image_field")
    if image_field:
        features[image_field] = ImageFeature()
        rows.append((image_field, "image", "the original image"))
    for name, feature, content in (
        ("url.txt", Value("string"), "image URL"),
        ("json", {"uid": Value("string"), "sha256": Value("string")}, "`uid` and the image's `sha256`"),
        ("syn.json", {key: List(Value("string")) for key in syn_keys}, "synthetic captions"),
        ("paug.json", {"param_aug": List(Json())},
         "per augmentation: `[[i, j, h, w] crop box, [[op, magnitude], ...] RandAugment ops]`"),
        (embedding_format, embeddings,
         f"float32 [n, {total_dim}]: `image_emb` one row per augmentation; `text_emb` ground-truth caption"
         + (" then one row per synthetic caption" if layout == "v1" else "; `<key>_emb` per synthetic caption")
         + (" (stored as bfloat16)" if embedding_format == "pth.gz" else "")),
    ):
        features[name] = feature
        rows.append((name, _describe_feature(feature), content))
    features["__key__"] = Value("string")
    features["__url__"] = Value("string")
    rows += [("__key__", "string", "sample key"), ("__url__", "string", "shard path")]
    return Features(features), [dict(name=n, type=t, content=c) for n, t, c in rows]


def _describe_feature(feature) -> str:
    if isinstance(feature, dict):
        return "struct{" + ", ".join(f"{k}: {_describe_feature(v)}" for k, v in feature.items()) + "}"
    kind = type(feature).__name__
    if kind == "Value":
        return feature.dtype
    if kind == "List":
        return f"list<{_describe_feature(feature.feature)}>"
    if kind == "Array2D":
        return f"{feature.dtype}[n, {feature.shape[1]}]"
    return kind.lower()


def _teachers(config: dict) -> list[dict]:
    teachers = config.get("teachers")
    if not isinstance(teachers, list) or not teachers:
        raise ValueError(f"config['teachers'] is {teachers!r}; the dataset card needs the teachers in embedding "
                         "order: [{'model', 'pretrained', 'embedding_dim', 'logit_scale'}, ...] (the reinforcement "
                         "tool's config.json).")
    start, rows = 0, []
    for i, teacher in enumerate(teachers):
        dim = teacher.get("embedding_dim") if isinstance(teacher, Mapping) else None
        if not isinstance(teacher, Mapping) or not teacher.get("model") or not isinstance(dim, int) or dim <= 0:
            raise ValueError(f"config['teachers'][{i}] is {teacher!r}; each teacher needs 'model' and a positive int "
                             "'embedding_dim' (optional 'pretrained', 'logit_scale').")
        rows.append(dict(model=teacher["model"], pretrained=teacher.get("pretrained") or "-", embedding_dim=dim,
                         columns=f"{start}:{start + dim}", logit_scale=teacher.get("logit_scale", "-")))
        start += dim
    return rows


def _size_category(n: int | None) -> str | None:
    if n is None:
        return None
    for bound, label in ((1e3, "n<1K"), (1e4, "1K<n<10K"), (1e5, "10K<n<100K"), (1e6, "100K<n<1M"),
                         (1e7, "1M<n<10M"), (1e8, "10M<n<100M"), (1e9, "100M<n<1B"), (1e10, "1B<n<10B")):
        if n < bound:
            return label
    return "n>1T" if n > 1e12 else "10B<n<100B"


def generate_dataset_card(config: dict, repo_id: str | None = None, *, license: str | Mapping | None = None,
                          pretty_name: str | None = None) -> DatasetCard:
    """Dataset card for reinforced shards, from the reinforcement run's config dict (its `config.json`).

    Read from `config`: `teachers` (required), `captioner` (str or {"model", "pretrained"}), `augmentation`,
    `num_augmentations`, `seed`, `layout` ("v1"/"raygen"), `embedding_format` ("npz"/"pth.gz"),
    `syn_text_key_regex` / `syn_text_keys`, `shard_pattern` (default "*.tar"), `image_field` (if the shards hold
    images), `num_samples`, `source_dataset`, `input_licenses` ({input name: licence}), `license`, `description`.
    The licence has no default: pass `license=` or set `config["license"]`.
    """
    if not isinstance(config, Mapping):
        raise TypeError(f"config is a {type(config).__name__}; pass the reinforcement run's config dict.")
    config = dict(copy.deepcopy(config))
    if repo_id is not None and not _REPO_ID.match(repo_id):
        raise ValueError(f"repo_id={repo_id!r} is not a Hub repo id; use 'namespace/name'.")
    license = license if license is not None else config.get("license")
    if license is None:
        raise ValueError("No licence for the dataset: pass license= or set config['license']. It must respect the "
                         "inputs' terms (source images and captions, teacher models, captioner), e.g. "
                         "'cc-by-nc-4.0'; there is no default.")
    licence = _normalise_licence(license)
    teachers = _teachers(config)
    total_dim = sum(t["embedding_dim"] for t in teachers)
    features, schema_rows = _feature_schema(config, total_dim)
    shard_pattern = config.get("shard_pattern", "*.tar")
    if not isinstance(shard_pattern, str) or not shard_pattern.endswith(".tar"):
        raise ValueError(f"config['shard_pattern'] is {shard_pattern!r}; give a glob of the tar shards relative to "
                         "the repo root, e.g. '*.tar' or 'shards/*.tar'.")
    captioner = config.get("captioner")
    if isinstance(captioner, Mapping):
        captioner = f"`{captioner.get('model')}`" + (f" ({captioner['pretrained']})" if captioner.get("pretrained")
                                                      else "")
    input_licenses = config.get("input_licenses") or {}
    if not isinstance(input_licenses, Mapping):
        raise TypeError(f"config['input_licenses'] is {input_licenses!r}; give {{input name: licence}}.")
    name = pretty_name or (repo_id.split("/")[-1] if repo_id else "Reinforced image-text dataset")
    card_data = DatasetCardData(
        pretty_name=name, **licence, task_categories=["zero-shot-image-classification"],
        tags=["mobileclip", "clip", "knowledge-distillation", "reinforced-dataset", "webdataset"],
        size_categories=_size_category(config.get("num_samples")),
        source_datasets=[config["source_dataset"]] if config.get("source_dataset") else None,
        configs=[{"config_name": "default", "data_files": [{"split": "train", "path": shard_pattern}]}],
        dataset_info={"features": features._to_yaml_list()},
    )
    syn_keys = config.get("syn_text_keys") or ["syn_text"]
    licence_line = (f"[{licence['license_name']}]({licence['license_link']})" if licence.get("license_name")
                    else f"`{licence['license']}`")
    return DatasetCard.from_template(
        card_data, template_path=str(DATASET_CARD_TEMPLATE),
        title=name, description=config.get("description", ""), repo_id=repo_id or "<namespace>/<dataset-name>",
        shard_pattern=shard_pattern, schema_rows=schema_rows, teachers=teachers, total_dim=total_dim,
        captioner=captioner or "not recorded in the config",
        syn_keys=", ".join(f"`{k}`" for k in syn_keys) + (f" (regex `{config['syn_text_key_regex']}`)"
                                                          if config.get("syn_text_key_regex") else ""),
        num_augmentations=config.get("num_augmentations", "not recorded"),
        num_augmentations_text=config.get("num_augmentations", "several"),
        seed=config.get("seed", "not recorded"), layout=config.get("layout", "v1"),
        embedding_format=config.get("embedding_format", "npz"), source_dataset=config.get("source_dataset"),
        augmentation_json=json.dumps(config.get("augmentation"), indent=2, sort_keys=True),
        licence_text=f"This dataset is released under {licence_line}.",
        input_licenses=[dict(name=k, license=v) for k, v in input_licenses.items()]
        or [dict(name="inputs", license="not recorded in the config: check the source data, teachers and "
                                         "captioner before use")],
        bibtex=BIBTEX,
    )


# ----------------------------------------------------------------------------------------------------------


def validate_card(card: ModelCard | DatasetCard, repo_type: str | None = None) -> None:
    """Check the card's metadata with the Hub (`POST {HF_ENDPOINT}/api/validate-yaml`); raise ValueError with the
    Hub's messages when it is rejected."""
    try:
        card.validate(repo_type=repo_type)
    except ValueError as err:
        raise ValueError(f"The Hub rejected the {repo_type or card.repo_type} card metadata: {err}") from err


__all__ = ["MobileCLIPModelCard", "WidgetExample", "default_widget_examples", "generate_dataset_card",
           "generate_model_card", "validate_card", "zero_shot_scores"]
