"""Evaluate a MobileCLIP checkpoint (or any model with the CLIPModel API): zero-shot classification or retrieval.

    python -m modeling_mobileclip.evaluation --model apple/mobileclip-s0 --task zeroshot-classification \\
        --dataset /data/imagenet/val --templates openai-imagenet --key imagenet1k --dataset-name "ImageNet 1k"
    python -m modeling_mobileclip.evaluation --model apple/mobileclip-s0 --task retrieval \\
        --dataset /data/flickr30k_test --caption-column caption --output results.jsonl

(also installed as the `mobileclip-eval` console script). Each run writes one row in the datacomp format of Apple's
`results/*.jsonl`, `{"key": ..., "dataset": ..., "metrics": {..., "main_metric": ...}}`, to stdout and, with
`--output`, appends it to a JSONL file, so the numbers compare directly with the published ones.
"""

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch
from transformers import AutoModel, AutoProcessor

from hub_cards.remote_code import TRUST_REMOTE_CODE_HELP, explain_remote_code_refusal

from ..commands import run_command
from ..conversion.staging import check_parent_writable
from .eval_dataset import (
    load_eval_dataset,
    resolve_caption_column,
    resolve_classnames,
    resolve_image_column,
    resolve_label_column,
)
from .prompts import MODEL_TEMPLATES_FILE, TEMPLATE_SETS, load_templates, model_templates
from .zeroshot import retrieval_recall, zeroshot_accuracy

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


# ----------------------------------------------------------------------------------------------------------
# Arguments
# ----------------------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m modeling_mobileclip.evaluation",
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
        "--templates", default=None,
        help=f"Prompt templates: a shipped set {sorted(TEMPLATE_SETS)} or a .json list / .txt file with '{{}}' "
        f"where the class name goes (default: the model's own, {MODEL_TEMPLATES_FILE} in its folder or repo, "
        "else openai-imagenet, the 80 CLIP prompts).",
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
    parser.add_argument("--trust-remote-code", action="store_true", help=f"{TRUST_REMOTE_CODE_HELP}.")
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
    if args.output is not None:
        _check_output_writable(args.output)


def _check_output_writable(output: Path) -> None:
    """The row is appended to --output at the end: check now that it can be, not after minutes of evaluation."""
    if output.is_dir():
        raise ValueError(f"--output {output} is a folder; pass the path of a JSONL file (e.g. {output}/results.jsonl).")
    if not output.exists():
        check_parent_writable(output)  # probes by creating a folder where the file will go, as the converter does
        return
    try:
        with open(output, "a", encoding="utf-8"):  # opening to append writes nothing
            pass
    except OSError as error:
        raise ValueError(f"--output {output} cannot be appended to ({error.strerror}); make it writable or choose "
                         "another --output.") from error


# ----------------------------------------------------------------------------------------------------------
# Model
# ----------------------------------------------------------------------------------------------------------


def load_model_and_processor(model_path: str, dtype: torch.dtype, device: str, trust_remote_code: bool = False):
    """`AutoModel` + `AutoProcessor`, model in eval mode on `device` in `dtype`; the folder's own code runs only
    with `trust_remote_code`.

    Importing this package already registered MobileCLIP with the Auto classes (its `__init__` runs before
    this module), so MobileCLIP checkpoints load without remote code, with or without `auto_map`.
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
        with explain_remote_code_refusal(model_path):
            processor = AutoProcessor.from_pretrained(model_path, trust_remote_code=trust_remote_code)
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
    with explain_remote_code_refusal(model_path):
        model = AutoModel.from_pretrained(model_path, trust_remote_code=trust_remote_code, dtype=dtype)
    missing = [name for name in ("get_image_features", "get_text_features") if not hasattr(model, name)]
    if missing:
        raise ValueError(
            f"--model {model_path!r} loaded as {type(model).__name__}, which lacks {missing}; pass a "
            f"CLIP-style dual encoder (MobileCLIPModel, CLIPModel)."
        )
    return model.to(device).eval(), processor

# ----------------------------------------------------------------------------------------------------------
# Result row
# ----------------------------------------------------------------------------------------------------------


def _default_key(spec: str) -> str:
    path = Path(spec)
    if path.exists():
        return path.stem if path.is_file() else path.resolve().name
    return spec


def _templates(args) -> list[str]:
    """--templates, else the model's own (`MODEL_TEMPLATES_FILE`), else the 80 CLIP prompts."""
    if args.templates is not None:
        return load_templates(args.templates)
    return model_templates(args.model) or load_templates("openai-imagenet")


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
    templates = _templates(args) if args.task == "zeroshot-classification" else None

    dataset = load_eval_dataset(args.dataset, args.split, args.cache_dir)
    if args.limit is not None:
        dataset = dataset.select(range(min(args.limit, len(dataset))))
    image_column = resolve_image_column(dataset, args.image_column, args.dataset)
    if args.task == "zeroshot-classification":
        label_column = resolve_label_column(dataset, args.label_column, args.dataset)
        classnames = resolve_classnames(dataset, label_column, args.classnames, args.dataset)
    else:
        caption_column = resolve_caption_column(dataset, args.caption_column, args.dataset)

    model, processor = load_model_and_processor(args.model, DTYPES[args.dtype], device, args.trust_remote_code)
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


def run(argv: list[str] | None = None) -> int:
    """The command (`python -m`, console script): bad input is one `error:` line and exit status 2."""
    return run_command(main, argv)
