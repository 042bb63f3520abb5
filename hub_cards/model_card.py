"""Model cards (`README.md`) for MobileCLIP checkpoints: converted Apple weights, fine-tunes and models trained here.

    card = generate_model_card("out/mobileclip-s0", repo_id="org/mobileclip-s0")   # converted Apple weights
    card = generate_model_card(model, "mobileclip-s0", processor=processor, repo_id="org/s0-ft",
                               converted_from_apple=False, base_model="apple/MobileCLIP-S0",
                               eval_results=[{"dataset": "held-out", "metrics": {"eval/image_to_text_r1": 0.41}}],
                               training={"data": "org/my-reinforced", "teachers": [...], "hyperparameters": {...}})
    card.write("out/mobileclip-s0")        # README.md + the widget images (and LICENSE) it references
    validate_card(card)                    # the Hub's metadata check (POST {HF_ENDPOINT}/api/validate-yaml)

Licence, preprocessing and Apple's published results come from `PRETRAINED_TAGS`; there is no default licence: a
model that is not (derived from) Apple's weights needs `license=`. Custom-code models get no live widget on the Hub,
so every widget example carries a static `output` computed by running the model through its processor here.
"""

from __future__ import annotations

import io
import os
import re
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from huggingface_hub import EvalResult, ModelCard, ModelCardData, constants
from PIL import Image

from modeling_mobileclip.configuration_mobileclip import MOBILECLIP_VARIANTS, PRETRAINED_TAGS, resolve_variant

from .common import (
    APPLE_ATTRIBUTION_NOTICE,
    APPLE_LICENSE_NAME,
    BIBTEX,
    CODE_LICENSE,
    PAPERS,
    check_repo_id,
    licence_line,
    normalise_licence,
    teacher_rows,
)
from .endpoint import endpoint_files
from .remote_code import explain_remote_code_refusal

MODEL_CARD_TEMPLATE = Path(__file__).with_name("model_card.md.j2")
PIPELINE_TAG = "zero-shot-image-classification"
HUB_LICENCES_URL = "https://huggingface.co/docs/hub/repositories-licenses"  # the Hub's licence ids and their texts
MODEL_TAGS = ("mobileclip", "clip", "zero-shot-image-classification", "custom_code")
HYPOTHESIS_TEMPLATE = "This is a photo of {}."  # the zero-shot pipeline's default, so widget outputs match it
WIDGET_DIR = "widget"
LICENSE_FILE = "LICENSE"  # where a copy of the weights' licence agreement goes in the repo
# What Apple trained each family on (ml-mobileclip README / training configs; docs/datacompdr.md section 1).
APPLE_TRAINING_DATASETS = {"mobileclip": ["apple/DataCompDR-1B"], "mobileclip2": ["apple/DFNDR-2B"]}
COPYRIGHT_YEAR = {"mobileclip": "2024", "mobileclip2": "2025"}
TRAINING_KEYS = ("data", "teachers", "hyperparameters", "command")
_APPLE_HUB_IDS = {tag["hub_id"]: name for name, tag in PRETRAINED_TAGS.items()}


class MobileCLIPModelCard(ModelCard):
    """A `ModelCard` that also carries the files its metadata and text reference (widget images, the licence
    agreement) and its target repo. `write(folder)` writes `README.md` plus those files; `push_model_to_hub` calls
    it."""

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
    """One widget entry: its path in the repo (a PNG), the image itself, the labels and a title."""

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


def widget_url(repo_id: str | None, path: str) -> str:
    """The widget `src` of a file stored in the repo: its resolve URL (the Hub page fetches it from the browser, so a
    bare relative path would not resolve); the relative path while the repo is unknown."""
    return f"{constants.ENDPOINT}/{repo_id}/resolve/main/{path}" if repo_id else path


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
        if license is not None and normalise_licence(license) != licence:
            raise ValueError(f"license={license!r} for converted Apple weights; they cannot be relicensed and keep "
                             f"{licence} (PRETRAINED_TAGS[{variant!r}]). Drop the license argument.")
        return licence, variant
    base_variant = _APPLE_HUB_IDS.get(base_model) if isinstance(base_model, str) else None
    if base_variant is not None:  # a fine-tune of Apple's weights is a derivative: the AMLR terms follow it
        licence = _apple_licence(base_variant)
        if license is not None and normalise_licence(license) != licence:
            raise ValueError(f"license={license!r}, but base_model={base_model!r} is Apple's and its derivatives stay "
                             f"under {licence['license_name']} ({licence['license_link']}). Drop the license "
                             "argument.")
        return licence, base_variant
    if license is None:
        raise ValueError("No licence for these weights: they are not converted from Apple's (converted_from_apple="
                         f"False) and base_model={base_model!r} is not one of Apple's repos. Pass license= (e.g. "
                         "'apache-2.0', or {'license': 'other', 'license_name': ..., 'license_link': ...}); if they "
                         "derive from Apple's weights, pass base_model='apple/MobileCLIP-...' instead.")
    licence = normalise_licence(license)
    return licence, (variant if licence.get("license_name") == APPLE_LICENSE_NAME else None)


def _licence_texts(licence: dict, apple_variant: str | None, modification: str, license_file) -> tuple[str, str | None,
                                                                                                      bytes | None]:
    """(licence paragraph, Apple's attribution block or None, the agreement's bytes for LICENSE or None)."""
    agreement = None
    if license_file is not None:
        path = Path(license_file)
        if not path.is_file() or path.stat().st_size == 0:
            raise FileNotFoundError(f"license_file={str(path)!r} is not a non-empty file; pass the licence "
                                    "agreement's text (e.g. Apple's LICENSE_MODELS).")
        agreement = path.read_bytes()
    copy_note = (f"A copy of the agreement is in [`{LICENSE_FILE}`]({LICENSE_FILE})." if agreement is not None else
                 f"The licence's text is at {licence['license_link']}." if licence.get("license_link") else
                 f"The licence's text is the standard text of `{licence['license']}` (see {HUB_LICENCES_URL}).")
    if licence.get("license_name") != APPLE_LICENSE_NAME:
        return f"The weights are licensed under {licence_line(licence)}. {copy_note}", None, agreement
    if agreement is None:
        warnings.warn("The weights are under Apple's AMLR licence, which asks every redistribution to include a copy "
                      f"of the agreement: pass license_file= (the text of {licence['license_link']}) so the card "
                      f"ships it as {LICENSE_FILE}.", UserWarning, stacklevel=3)
    text = (f"The weights are licensed under the Apple Machine Learning Research Model License Agreement "
            f"([{APPLE_LICENSE_NAME}]({licence['license_link']})): research purposes only, not for commercial use. "
            f"Fine-tunes and other derivatives stay under the same terms. {copy_note}")
    if agreement is None:
        text += " Redistributions must include a copy of the agreement."
    year = COPYRIGHT_YEAR.get(_family(apple_variant), "2024-2025")
    original = PRETRAINED_TAGS[apple_variant]["hub_id"] if apple_variant else "Apple's MobileCLIP weights"
    attribution = (f"{APPLE_ATTRIBUTION_NOTICE}\n\nCopyright (C) {year} Apple Inc. All Rights Reserved.\n\n"
                   f"These weights are a Model Derivative of {original}. **Modified:** {modification}")
    return text, attribution, agreement


# ----------------------------------------------------------------------------------------------------------
# Inputs


def _load_model_and_processor(model_dir_or_model, processor, variant, trust_remote_code: bool):
    if isinstance(model_dir_or_model, (str, os.PathLike)):
        path = Path(model_dir_or_model)
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"model_dir_or_model={str(path)!r} is not a saved model folder (no config.json); "
                                    "pass a folder written by save_pretrained or a MobileCLIPModel.")
        from transformers import AutoModel, AutoProcessor

        import modeling_mobileclip  # noqa: F401  (registers the Auto classes)

        with explain_remote_code_refusal(str(path), "model_dir_or_model", "trust_remote_code=True"):
            model = AutoModel.from_pretrained(path, trust_remote_code=trust_remote_code)
            if processor is None:
                processor = AutoProcessor.from_pretrained(path, trust_remote_code=trust_remote_code)
        return model, processor, path
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


def _crop_size(image_processor) -> tuple[int, int]:
    crop = image_processor.crop_size
    return (crop["height"], crop["width"]) if isinstance(crop, Mapping) else (crop.height, crop.width)


def _resample_name(image_processor) -> str:
    """"bilinear", ... for the enum a processor is built with and for the int one reloaded from disk holds."""
    resample = image_processor.resample
    if isinstance(resample, int):  # PIL's Resampling is an IntEnum: a saved processor_config.json stores its value
        resample = Image.Resampling(resample)
    return getattr(resample, "name", str(resample)).lower()


def _check_processor_matches_tag(processor, variant: str) -> None:
    """Converted weights reproduce Apple's outputs only with Apple's preprocessing: compare with PRETRAINED_TAGS."""
    tag, size = PRETRAINED_TAGS[variant], MOBILECLIP_VARIANTS[variant]["vision"]["image_size"]
    ip = processor.image_processor
    checks = {"image_mean": (tuple(np.round(ip.image_mean, 8)), tuple(np.round(tag["image_mean"], 8))),
              "image_std": (tuple(np.round(ip.image_std, 8)), tuple(np.round(tag["image_std"], 8))),
              "crop_size": (_crop_size(ip), (size, size)),
              "resample": (_resample_name(ip), tag["resample"])}
    for name, (got, expected) in checks.items():
        if got != expected:
            raise ValueError(f"The processor's {name} is {got}, but PRETRAINED_TAGS[{variant!r}] says {expected}: "
                             f"converted weights would not reproduce Apple's results. Use "
                             f"MobileCLIPProcessor.from_variant({variant!r}).")


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", str(text).lower()).strip("-") or "dataset"


def metric_task(metric: str) -> str:
    """The model-index task of a metric name: zero-shot classification (`acc1`, `zeroshot_acc5`,
    `zeroshot_mean_per_class_recall`, ...) or image-text retrieval (`image_to_text_r1`, `mean_recall@1`, ...)."""
    name = metric.rsplit("/", 1)[-1]
    if name.startswith("zeroshot") or "acc" in name or "per_class" in name:
        return "zero-shot-image-classification"
    return "zero-shot-image-text-retrieval"


def _eval_results(eval_results) -> list[EvalResult]:
    """EvalResults from EvalResult objects, flat dicts, or result rows `{"dataset", "metrics", "key"?, "split"?}`
    (modeling_mobileclip.evaluation writes these; train_accelerate's `evaluate()` dict fits in "metrics", where a
    tracker namespace such as "eval/" is dropped from the metric names)."""
    results = []
    for i, item in enumerate(eval_results or []):
        if isinstance(item, EvalResult):
            results.append(item)
        elif isinstance(item, Mapping) and {"dataset", "metrics"} <= set(item) and isinstance(item["metrics"],
                                                                                              Mapping):
            for metric, value in item["metrics"].items():
                if metric == "main_metric" or isinstance(value, bool) or not isinstance(value, (int, float)):
                    continue
                name = metric.rsplit("/", 1)[-1]
                results.append(EvalResult(task_type=metric_task(name),
                                          dataset_type=item.get("key") or _slug(item["dataset"]),
                                          dataset_name=item["dataset"], metric_type=name, metric_value=float(value),
                                          dataset_split=item.get("split")))
        elif isinstance(item, Mapping) and {"dataset_type", "dataset_name", "metric_type", "metric_value"} <= set(item):
            results.append(EvalResult(**{"task_type": "zero-shot-image-classification", **item}))
        else:
            raise ValueError(f"eval_results[{i}] is {item!r}; expected a huggingface_hub.EvalResult, a dict with "
                             "dataset_type, dataset_name, metric_type, metric_value, or a results row "
                             "{'dataset', 'metrics', 'key'?, 'split'?} as written by modeling_mobileclip.evaluation.")
    return results


def _training_section(training: Mapping | None) -> dict | None:
    """What the card's "Training" section shows, checked: data, teachers (embedding order), hyperparameters, command."""
    if training is None:
        return None
    if not isinstance(training, Mapping) or set(training) - set(TRAINING_KEYS):
        raise ValueError(f"training={training!r}; give a dict with some of {', '.join(TRAINING_KEYS)} (unknown keys: "
                         f"{sorted(set(training) - set(TRAINING_KEYS)) if isinstance(training, Mapping) else '-'}).")
    data = training.get("data")
    data = [data] if isinstance(data, str) else list(data or [])
    hyperparameters = training.get("hyperparameters") or {}
    if not isinstance(hyperparameters, Mapping):
        raise ValueError(f"training['hyperparameters'] is {hyperparameters!r}; give a dict of name -> value.")
    teachers = training.get("teachers")
    return dict(data=", ".join(f"`{d}`" for d in data),
                teachers=teacher_rows(teachers, "training['teachers']") if teachers else [],
                hyperparameters=[dict(name=k, value=v) for k, v in hyperparameters.items()],
                command=training.get("command"))


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


def _preprocessing(variant: str | None, processor) -> dict:
    """Image size, resample, mean and std as the card states them: the variant's (rule 15; the processor was checked
    against them for converted weights), else the processor's."""
    if variant is not None:
        tag = PRETRAINED_TAGS[variant]
        size, mean, std, resample = (MOBILECLIP_VARIANTS[variant]["vision"]["image_size"], tag["image_mean"],
                                     tag["image_std"], tag["resample"])
    else:
        ip = processor.image_processor
        size, mean, std, resample = _crop_size(ip)[0], ip.image_mean, ip.image_std, _resample_name(ip)
    return dict(image_size=size, resample=resample, image_mean=[round(float(v), 8) for v in mean],
                image_std=[round(float(v), 8) for v in std])


def _provenance(variant, converted_from_apple, base_models, datasets, model_name, modification) -> dict:
    """Title, summary, the "Weights" row and the modification notice for converted, fine-tuned and trained weights."""
    display = PRETRAINED_TAGS[variant]["hub_id"].split("/")[-1] if variant else None
    if converted_from_apple:
        tag = PRETRAINED_TAGS[variant]
        return dict(
            title=f"{display} (transformers)",
            summary=(f"Apple's {display} image-text model, from {PAPERS[_family(variant)]}, converted to transformers: "
                     "zero-shot image classification and image/text embeddings."),
            provenance=(f"Apple's `{tag['checkpoint']}` ({tag['checkpoint_format']} format, published as "
                        f"[{tag['hub_id']}](https://huggingface.co/{tag['hub_id']})), converted to transformers"),
            modification=modification or ("converted from Apple's checkpoint to the transformers format by "
                                          "mobileclip-hf (parameter names and layout changed); the weight values were "
                                          "not retrained."))
    if base_models:
        return dict(
            title=model_name,
            summary=f"A {display or 'MobileCLIP'} model fine-tuned from {', '.join(base_models)}.",
            provenance=f"fine-tuned from {', '.join(f'`{b}`' for b in base_models)}",
            modification=modification or f"fine-tuned from {', '.join(base_models)}" + (
                f" on {', '.join(datasets)}." if datasets else "."))
    return dict(
        title=model_name,
        summary=f"A MobileCLIP image-text model{' with the ' + display + ' architecture' if display else ''}.",
        provenance="trained from scratch" + (f" on {', '.join(datasets)}" if datasets else ""),
        modification=modification or "trained with mobileclip-hf.")


# ----------------------------------------------------------------------------------------------------------


def generate_model_card(model_dir_or_model, variant: str | None = None, *, repo_id: str | None = None,
                        processor=None, base_model: str | list[str] | None = None,
                        datasets: str | list[str] | None = None, eval_results: Sequence | None = None,
                        training: Mapping | None = None,
                        widget_images: Sequence[Mapping | WidgetExample] | None = None,
                        converted_from_apple: bool = True, license: str | Mapping | None = None,
                        license_file: str | os.PathLike | None = None,
                        modification: str | None = None, trust_remote_code: bool = False) -> MobileCLIPModelCard:
    """Model card (`README.md`) for a MobileCLIP checkpoint.

    Args:
        model_dir_or_model: A `MobileCLIPModel`, or the folder it was saved to (with its processor). When a folder
            is given, the files the card references (widget images, LICENSE) are written into it.
        variant: Preset name (`mobileclip-s0` ... `mobileclip2-l-14`); defaults to `model.config.variant`.
        repo_id: The repo the card is pushed to; the usage snippets and widget image URLs point at it.
        processor: The model's `MobileCLIPProcessor` (default: loaded from the folder, else `from_variant`).
        base_model: Hub id(s) of the model this one was fine-tuned from (with `converted_from_apple=False`).
        datasets: Hub ids of the training data for the metadata (default for converted weights: Apple's training
            set).
        eval_results: This checkpoint's results (`EvalResult`s, dicts, or result rows `{"dataset", "metrics"}` as
            written by `modeling_mobileclip.evaluation` or built from train_accelerate's `evaluate()`), written to
            `model-index` and a table.
        training: How the weights were trained, for the "Training" section: `{"data": Hub id(s) or paths,
            "teachers": [{"model", "pretrained", "embedding_dim", "logit_scale"}, ...] (embedding order),
            "hyperparameters": {name: value}, "command": the command line}`; every key optional.
        widget_images: Widget examples (dicts with image, candidate_labels, example_title, optional src); default:
            three generated images. Their static outputs are computed with the model.
        converted_from_apple: The weights are Apple's, converted: licence, attribution and datasets come from
            `PRETRAINED_TAGS[variant]`.
        license: Licence of weights that are not Apple's (required then; there is no default): a Hub licence id or
            `{"license": "other", "license_name": ..., "license_link": ...}`.
        license_file: The licence agreement's text, shipped as `LICENSE` (Apple's AMLR asks redistributions to
            include a copy; without it the card links the text and a UserWarning says so).
        modification: How these weights differ from Apple's (the derivative notice the AMLR asks for); a default
            describing the conversion or fine-tune is used.
        trust_remote_code: Run the Python files a saved folder's `auto_map` names (as transformers' flag does; never
            asked interactively). MobileCLIP folders load without it: the installed classes are used.
    """
    if variant is None:  # a saved folder's variant is known once it is loaded
        variant = getattr(getattr(model_dir_or_model, "config", None), "variant", None)
    variant = resolve_variant(variant) if variant is not None else None
    model, processor, model_dir = _load_model_and_processor(model_dir_or_model, processor, variant,
                                                               trust_remote_code)
    if variant is None and getattr(model.config, "variant", None) is not None:
        variant = resolve_variant(model.config.variant)
    if variant is not None and variant not in PRETRAINED_TAGS:
        raise ValueError(f"variant {variant!r} has no PRETRAINED_TAGS entry; valid: {', '.join(PRETRAINED_TAGS)}.")
    check_repo_id("repo_id", repo_id)
    base_models = [base_model] if isinstance(base_model, str) else list(base_model or [])
    for name in base_models:
        check_repo_id("base_model", name)
    licence, apple_variant = _resolve_licence(variant, converted_from_apple,
                                              base_models[0] if len(base_models) == 1 else base_model, license)
    if converted_from_apple:
        _check_processor_matches_tag(processor, variant)
    training_section = _training_section(training)
    results = _eval_results(eval_results)

    examples = _widget_examples(widget_images)
    widget, widget_rows = [], []
    outputs = zero_shot_scores(model, processor, [e.image for e in examples], [e.candidate_labels for e in examples])
    for example, output in zip(examples, outputs):
        widget.append({"src": widget_url(repo_id, example.src), "candidate_labels": ", ".join(example.candidate_labels),
                       "example_title": example.example_title, "output": output})
        widget_rows.append(dict(src=example.src, title=example.example_title,
                                labels=", ".join(example.candidate_labels), top_label=output[0]["label"],
                                top_score=f"{output[0]['score']:.4f}"))
    assets = {example.src: example.png_bytes() for example in examples}
    assets.update(endpoint_files(model.config.model_type))  # handler.py + requirements.txt for Inference Endpoints

    if datasets is None and converted_from_apple:
        datasets = APPLE_TRAINING_DATASETS[_family(variant)]
    datasets = [datasets] if isinstance(datasets, str) else (list(datasets) if datasets else None)
    for name in datasets or []:
        check_repo_id("datasets", name)
    family_tags = [_family(variant)] if variant and _family(variant) not in MODEL_TAGS else []
    model_name = repo_id.split("/")[-1] if repo_id else (variant or "mobileclip")
    card_data = ModelCardData(
        library_name="transformers", pipeline_tag=PIPELINE_TAG, tags=[*MODEL_TAGS, *family_tags], **licence,
        datasets=datasets, base_model=base_model if base_models else None, widget=widget,
        model_name=model_name if results else None, eval_results=results or None,
    )
    provenance = _provenance(variant, converted_from_apple, base_models, datasets, model_name, modification)
    licence_text, attribution, agreement = _licence_texts(licence, apple_variant, provenance["modification"],
                                                          license_file)
    if agreement is not None:
        assets[LICENSE_FILE] = agreement
    usage = examples[0]
    card = MobileCLIPModelCard.from_template(
        card_data, template_path=str(MODEL_CARD_TEMPLATE), custom_code=True,
        title=provenance["title"], summary=provenance["summary"], provenance=provenance["provenance"],
        architecture=_architecture(model.config), variant_label=f"`{variant}`" if variant else "custom configuration",
        params_image=_millions(model.vision_model, model.visual_projection),
        params_text=_millions(model.text_model, model.text_projection),
        **_preprocessing(variant, processor), context_length=model.config.text_config.max_position_embeddings,
        projection_dim=model.config.projection_dim, licence_line=licence_line(licence),
        repo_id=repo_id or "<namespace>/<model-name>",
        usage_example={"src": usage.src, "labels": repr(list(usage.candidate_labels))},
        widget_rows=widget_rows, training=training_section,
        eval_rows=[dict(dataset=r.dataset_name, split=r.dataset_split or "-", metric=r.metric_type,
                        value=f"{r.metric_value:.4f}" if isinstance(r.metric_value, float) else r.metric_value)
                   for r in results],
        published=_published(variant, converted_from_apple, bool(base_models)) if variant else None,
        licence_text=licence_text, apple_attribution=attribution, code_license=CODE_LICENSE, bibtex=BIBTEX,
    )
    card.assets, card.repo_id = assets, repo_id
    if model_dir is not None:
        for path, data in assets.items():
            (model_dir / path).parent.mkdir(parents=True, exist_ok=True)
            (model_dir / path).write_bytes(data)
    return card
