"""Evaluate a MobileCLIP checkpoint (or any model with the CLIPModel API): zero-shot classification or retrieval.

    python -m modeling_mobileclip.evaluate --model apple/mobileclip-s0 --task zeroshot-classification \\
        --dataset /data/imagenet/val --templates openai-imagenet --key imagenet1k --dataset-name "ImageNet 1k"
    python -m modeling_mobileclip.evaluate --model apple/mobileclip-s0 --task retrieval \\
        --dataset /data/flickr30k_test --caption-column caption --output results.jsonl

Each run writes one row in the datacomp format of Apple's `results/*.jsonl`,
`{"key": ..., "dataset": ..., "metrics": {..., "main_metric": ...}}`, to stdout and, with `--output`, appends it to
a JSONL file, so the numbers compare directly with the published ones.

Run it with `-m`: this module is called `evaluate`, and executing the file directly would put its folder on
`sys.path` ahead of the `evaluate` package it depends on.
"""

import argparse
import json
import os
import re
import sys
import time
from pathlib import Path

import datasets
import torch
from transformers import AutoModel, AutoProcessor

from .zeroshot import (
    TEMPLATE_SETS,
    load_classnames,
    load_templates,
    retrieval_recall,
    zeroshot_accuracy,
)


TASKS = ("zeroshot-classification", "retrieval")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
DEFAULT_MAIN_METRIC = {"zeroshot-classification": "acc1", "retrieval": "mean_recall@1"}
# What each task reports (the metric modules' keys for their default k), to check --main-metric up front.
TASK_METRICS = {
    "zeroshot-classification": ("acc1", "acc5", "mean_per_class_recall"),
    "retrieval": tuple(
        f"{kind}@{k}" for k in (1, 5, 10) for kind in ("image_retrieval_recall", "text_retrieval_recall", "mean_recall")
    ),
}

# Column names tried, in order, when the features do not say which column is which.
IMAGE_COLUMN_NAMES = ("image", "img", "jpg", "jpeg", "png", "webp")
LABEL_COLUMN_NAMES = ("label", "labels", "cls", "class")
CAPTION_COLUMN_NAMES = ("captions", "caption", "sentences", "texts", "text", "txt", "raw")
# Split used when --split is not given and the dataset has several.
SPLIT_PREFERENCE = ("test", "validation", "val")

_WORDNET_ID = re.compile(r"^n\d{8}$")


# ----------------------------------------------------------------------------------------------------------
# Arguments
# ----------------------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m modeling_mobileclip.evaluate",
        description="Zero-shot classification (top-1/top-5, mean per-class recall) or image<->text retrieval "
        "(recall@1/5/10) of a CLIP-style model; writes a datacomp-format JSONL row.",
    )
    parser.add_argument("--model", required=True, help="Model directory or hub id (weights, config and processor).")
    parser.add_argument("--task", required=True, choices=TASKS)
    parser.add_argument(
        "--dataset", required=True,
        help="An imagefolder directory, a save_to_disk directory, a .parquet file, or a hub dataset id.",
    )
    parser.add_argument("--split", help="Split to evaluate (default: the only split, else test, else validation).")
    parser.add_argument(
        "--templates", default="openai-imagenet",
        help=f"Prompt templates: a shipped set {sorted(TEMPLATE_SETS)} or a .json list / .txt file with '{{}}' "
        "where the class name goes (default: openai-imagenet, the 80 CLIP prompts).",
    )
    parser.add_argument(
        "--classnames",
        help="Class names by label index: 'imagenet' (the shipped OpenAI names) or a .json list / .txt file. "
        "Default: the label column's ClassLabel names with '_' read as a space; a 1000-class ImageNet labelling "
        "(WordNet ids or synset strings) gets the shipped names.",
    )
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="fp32")
    parser.add_argument("--device", default=None, help="Default: cuda if available, else cpu.")
    parser.add_argument(
        "--num-workers", type=int, default=min(4, os.cpu_count() or 1),
        help="DataLoader workers decoding and preprocessing images.",
    )
    parser.add_argument("--output", type=Path, help="JSONL file the result row is appended to.")
    parser.add_argument("--key", help="Row 'key', e.g. imagenet1k (default: the dataset's name).")
    parser.add_argument("--dataset-name", help="Row 'dataset', e.g. 'ImageNet 1k' (default: the key).")
    parser.add_argument(
        "--main-metric", help="Metric copied to 'main_metric' (default: acc1 for classification, mean_recall@1 "
        "for retrieval; datacomp uses mean_per_class_recall for e.g. Flowers and Pets).",
    )
    parser.add_argument("--image-column", help="Image column (default: the first Image feature).")
    parser.add_argument("--label-column", help="Label column (default: the first ClassLabel feature).")
    parser.add_argument("--caption-column", help="Caption column: a string or a list of strings per image.")
    parser.add_argument("--limit", type=int, help="Evaluate only the first N examples (smoke tests).")
    parser.add_argument("--cache-dir", help="datasets cache directory for building local/hub datasets.")
    parser.add_argument("--no-progress", action="store_true", help="Hide the progress bars.")
    return parser


def _check_args(args: argparse.Namespace) -> None:
    if args.batch_size < 1:
        raise ValueError(f"--batch-size {args.batch_size}; expected a positive integer.")
    if args.num_workers < 0:
        raise ValueError(f"--num-workers {args.num_workers}; expected 0 or more.")
    if args.limit is not None and args.limit < 1:
        raise ValueError(f"--limit {args.limit}; expected a positive number of examples.")
    if args.main_metric is not None and args.main_metric not in TASK_METRICS[args.task]:
        raise ValueError(
            f"--main-metric {args.main_metric!r} is not a metric of --task {args.task}; choose one of "
            f"{sorted(TASK_METRICS[args.task])}."
        )


# ----------------------------------------------------------------------------------------------------------
# Model and data
# ----------------------------------------------------------------------------------------------------------


def load_model_and_processor(model_path: str, dtype: torch.dtype, device: str):
    """`AutoModel` + `AutoProcessor` (remote code allowed), model in eval mode on `device` in `dtype`.

    Importing this package already registered MobileCLIP with the Auto classes (its `__init__` runs before
    this module), so local checkpoints without `auto_map` load too.
    """
    local = Path(model_path)
    if local.is_dir() and not (local / "config.json").is_file():
        raise FileNotFoundError(
            f"--model {model_path!r} is a directory without config.json; pass a directory written by "
            f"`model.save_pretrained(...)` or a hub id."
        )
    if local.exists() and not local.is_dir():
        raise ValueError(f"--model {model_path!r} is a file; pass the directory that holds config.json.")
    # The processor first: a missing one should fail before the weights are loaded.
    try:
        processor = AutoProcessor.from_pretrained(model_path, trust_remote_code=True)
    except OSError as err:
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(
            f"--model {model_path!r}: no processor could be loaded ({first_line}). Evaluation needs the image "
            f"processor and the tokenizer saved with the weights: run `processor.save_pretrained({model_path!r})`."
        ) from err
    missing = [part for part in ("image_processor", "tokenizer") if getattr(processor, part, None) is None]
    if missing:
        raise ValueError(
            f"--model {model_path!r}: AutoProcessor returned {type(processor).__name__} without {missing}; "
            f"evaluation needs both an image processor and a tokenizer. Save a full processor "
            f"(e.g. CLIPProcessor(image_processor=..., tokenizer=...).save_pretrained({model_path!r}))."
        )
    model = AutoModel.from_pretrained(model_path, trust_remote_code=True, dtype=dtype)
    missing = [name for name in ("get_image_features", "get_text_features") if not hasattr(model, name)]
    if missing:
        raise ValueError(
            f"--model {model_path!r} loaded as {type(model).__name__}, which lacks {missing}; pass a "
            f"CLIP-style dual encoder (MobileCLIPModel, CLIPModel)."
        )
    return model.to(device).eval(), processor


def _dataset_kind(spec: str) -> str:
    path = Path(spec)
    if path.is_dir() and ((path / "dataset_dict.json").is_file() or (path / "state.json").is_file()):
        return "saved"
    if path.is_file() and path.suffix == ".parquet":
        return "parquet"
    if path.is_dir():
        return "folder"
    if path.exists():
        raise ValueError(
            f"--dataset {spec!r} is a {path.suffix or 'suffix-less'} file; expected an imagefolder directory, a "
            f"save_to_disk directory, a .parquet file or a hub dataset id."
        )
    return "hub"


def _pick_split(available: list[str], split: str | None, spec: str) -> str:
    if split is not None:
        if split not in available:
            raise ValueError(f"--split {split!r} is not in --dataset {spec!r}; available splits: {available}.")
        return split
    if len(available) == 1:
        return available[0]
    for preferred in SPLIT_PREFERENCE:
        if preferred in available:
            return preferred
    raise ValueError(f"--dataset {spec!r} has splits {available}; choose one with --split.")


def load_eval_dataset(spec: str, split: str | None = None, cache_dir: str | None = None) -> datasets.Dataset:
    """One split of a local imagefolder, a `save_to_disk` directory, a parquet file or a hub dataset."""
    kind = _dataset_kind(spec)
    if kind == "saved":
        loaded = datasets.load_from_disk(spec)
        if isinstance(loaded, datasets.DatasetDict):
            return loaded[_pick_split(list(loaded), split, spec)]
        if split is not None:
            raise ValueError(f"--dataset {spec!r} is a single saved split; drop --split {split!r}.")
        return loaded
    if kind == "parquet":
        return datasets.load_dataset("parquet", data_files=spec, split="train", cache_dir=cache_dir)
    # Folder or hub id: read the split names first so only the chosen split is built (not ImageNet's train).
    available = datasets.get_dataset_split_names(spec, cache_dir=cache_dir)
    return datasets.load_dataset(spec, split=_pick_split(available, split, spec), cache_dir=cache_dir)


def _describe_columns(dataset: datasets.Dataset) -> str:
    return ", ".join(f"{name}: {type(feature).__name__}" for name, feature in dataset.features.items())


def _check_override(dataset: datasets.Dataset, column: str, flag: str, spec: str) -> str:
    if column not in dataset.column_names:
        raise ValueError(f"{flag} {column!r} is not a column of --dataset {spec!r}; columns: {dataset.column_names}.")
    return column


def resolve_image_column(dataset: datasets.Dataset, override: str | None, spec: str) -> str:
    if override:
        return _check_override(dataset, override, "--image-column", spec)
    for name, feature in dataset.features.items():
        if isinstance(feature, datasets.Image):
            return name
    for name in IMAGE_COLUMN_NAMES:
        if name in dataset.column_names:
            return name
    raise ValueError(
        f"--dataset {spec!r} has no image column ({_describe_columns(dataset)}); expected a datasets.Image "
        f"feature or one of {IMAGE_COLUMN_NAMES}. Pass --image-column NAME."
    )


def resolve_label_column(dataset: datasets.Dataset, override: str | None, spec: str) -> str:
    if override:
        return _check_override(dataset, override, "--label-column", spec)
    for name, feature in dataset.features.items():
        if isinstance(feature, datasets.ClassLabel):
            return name
    for name in LABEL_COLUMN_NAMES:
        feature = dataset.features.get(name)
        if isinstance(feature, datasets.Value) and feature.dtype.startswith(("int", "uint")):
            return name
    raise ValueError(
        f"--dataset {spec!r} has no label column ({_describe_columns(dataset)}): no ClassLabel feature and no "
        f"integer column named one of {LABEL_COLUMN_NAMES}. Zero-shot classification needs a class index per "
        f"image: use an imagefolder with one sub-folder per class, or pass --label-column NAME (with "
        f"--classnames FILE when it is not a ClassLabel)."
    )


def _is_imagenet1k(names: list[str]) -> bool:
    # The standard ImageNet-1k index order, labelled by WordNet id (an imagefolder of the val set) or by
    # synset strings (the hub's imagenet-1k, "tench, Tinca tinca"): neither reads well in a prompt.
    return len(names) == 1000 and (all(_WORDNET_ID.match(n) for n in names) or names[0].lower().startswith("tench,"))


def resolve_classnames(dataset: datasets.Dataset, label_column: str, option: str | None, spec: str) -> list[str]:
    feature = dataset.features[label_column]
    names = list(feature.names) if isinstance(feature, datasets.ClassLabel) else None
    if option is not None:
        classnames = load_classnames(option)
        if names is not None and len(classnames) != len(names):
            raise ValueError(
                f"--classnames {option!r} has {len(classnames)} names but the label column {label_column!r} of "
                f"--dataset {spec!r} has {len(names)} classes; pass one name per class index."
            )
        return classnames
    if names is None:
        raise ValueError(
            f"The label column {label_column!r} of --dataset {spec!r} is {feature!r}, not a ClassLabel, so it has no "
            f"class names; pass --classnames FILE (one name per label index) or --classnames imagenet."
        )
    if _is_imagenet1k(names):
        print("Labels are ImageNet-1k: using the shipped OpenAI class names.", file=sys.stderr)
        return load_classnames("imagenet")
    # Folder names such as "golden_retriever" become "golden retriever" in the prompts.
    return [name.replace("_", " ") for name in names]


def _is_text_feature(feature) -> bool:
    if isinstance(feature, list):  # the legacy `[Value("string")]` spelling of a list feature
        feature = feature[0] if len(feature) == 1 else None
    elif isinstance(feature, (datasets.List, datasets.LargeList)):
        feature = feature.feature
    return isinstance(feature, datasets.Value) and feature.dtype in ("string", "large_string")


def resolve_caption_column(dataset: datasets.Dataset, override: str | None, spec: str) -> str:
    if override:
        return _check_override(dataset, override, "--caption-column", spec)
    for name in CAPTION_COLUMN_NAMES:
        if name in dataset.column_names and _is_text_feature(dataset.features[name]):
            return name
    text_columns = [name for name, feature in dataset.features.items() if _is_text_feature(feature)]
    if len(text_columns) == 1:
        return text_columns[0]
    raise ValueError(
        f"--dataset {spec!r} has {'several' if text_columns else 'no'} caption columns ({_describe_columns(dataset)}); "
        f"retrieval needs a column with a string or a list of strings per image. Pass --caption-column NAME."
    )


# ----------------------------------------------------------------------------------------------------------
# Result row
# ----------------------------------------------------------------------------------------------------------


def _default_key(spec: str) -> str:
    path = Path(spec)
    if path.exists():
        return path.stem if path.is_file() else path.resolve().name
    return spec


def result_row(key: str, dataset_name: str, metrics: dict, main_metric: str) -> dict:
    """A datacomp row: `{"key", "dataset", "metrics"}` with `metrics["main_metric"]` set last, as Apple's are."""
    if main_metric not in metrics:
        raise ValueError(f"--main-metric {main_metric!r} is not a computed metric; choose one of {sorted(metrics)}.")
    return {"key": key, "dataset": dataset_name, "metrics": {**metrics, "main_metric": metrics[main_metric]}}


# ----------------------------------------------------------------------------------------------------------
# Main
# ----------------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> dict:
    """Run one evaluation; return the result row (also printed, and appended to --output)."""
    args = build_parser().parse_args(argv)
    _check_args(args)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    main_metric = args.main_metric or DEFAULT_MAIN_METRIC[args.task]
    # Validate everything cheap before loading weights or decoding images.
    templates = load_templates(args.templates) if args.task == "zeroshot-classification" else None

    dataset = load_eval_dataset(args.dataset, args.split, args.cache_dir)
    if args.limit is not None:
        dataset = dataset.select(range(min(args.limit, len(dataset))))
    image_column = resolve_image_column(dataset, args.image_column, args.dataset)
    if args.task == "zeroshot-classification":
        label_column = resolve_label_column(dataset, args.label_column, args.dataset)
        classnames = resolve_classnames(dataset, label_column, args.classnames, args.dataset)
    else:
        caption_column = resolve_caption_column(dataset, args.caption_column, args.dataset)

    model, processor = load_model_and_processor(args.model, DTYPES[args.dtype], device)
    common = dict(
        image_column=image_column, batch_size=args.batch_size, device=device, num_workers=args.num_workers,
        progress=not args.no_progress,
    )
    started = time.perf_counter()
    if args.task == "zeroshot-classification":
        metrics = zeroshot_accuracy(
            model, processor, dataset, classnames, templates, label_column=label_column, **common
        )
        size = f"{len(dataset)} images, {len(classnames)} classes x {len(templates)} templates"
    else:
        metrics = retrieval_recall(model, processor, dataset, caption_column=caption_column, **common)
        size = f"{len(dataset)} images"

    key = args.key or _default_key(args.dataset)
    row = result_row(key, args.dataset_name or key, metrics, main_metric)
    print(
        f"{args.task} of {args.model} on {args.dataset} ({size}); dtype {args.dtype}, device {device}, "
        f"batch {args.batch_size}, {time.perf_counter() - started:.1f}s",
        file=sys.stderr,
    )
    line = json.dumps(row)
    print(line)
    if args.output is not None:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        with open(args.output, "a", encoding="utf-8") as f:  # append: one file collects many datasets
            f.write(line + "\n")
    return row


if __name__ == "__main__":
    try:
        main()
    except (ValueError, FileNotFoundError) as err:
        # Bad input: the message says what to fix; a traceback would only bury it.
        sys.exit(f"error: {err}")
