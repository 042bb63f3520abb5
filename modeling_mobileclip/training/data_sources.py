"""Where the training data comes from: the train split (streamed or prepared), its joins, teachers and size.

Without `--train-data` the embedded toy DataCompDR (built once, offline) is used.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REQUIRED_COLUMNS = ("image", "image_width", "image_height", "text", "syn_text", "param_aug", "image_emb", "text_emb",
                    "num_gt_emb")
# Samples per published config (datacompdr.md), for progress/ETA and `--epochs` schedules without a length up front.
KNOWN_SIZES = {"12m": 12_800_000, "12m-bf16": 12_800_000, "1b": 1_280_000_000, "dfndr-12m": 12_800_000,
               "dfndr-12m-bf16": 12_800_000}
TOY_LICENSE = "apache-2.0"  # the embedded toy DataCompDR's (dataset_scripts/toy_data.py), so its weights' default


def weights_licence(args) -> str | None:
    """The licence the trained weights' card states: --license, else the toy set's; None for --train-data without
    --license (no card is written, and --push-to-hub is refused before training)."""
    return args.license or (TOY_LICENSE if args.train_data is None else None)


def resolve_data(args, accelerator) -> dict:
    """Train shards + joins and the held-out set; without --train-data, the toy DataCompDR (built once)."""
    if args.train_data is not None:
        if args.eval_data is None:
            raise ValueError("--train-data needs --eval-data (a held-out set for the periodic evaluation: images with "
                             "labels and/or captions).")
        return {"train": args.train_data, "image_dir": args.image_dir, "captions": args.captions,
                "eval": args.eval_data, "templates": args.eval_templates or "openai-imagenet",
                "license": weights_licence(args), "datasets": [args.train_data]}
    root = ensure_toy_data(args, accelerator)
    toy = json.loads((root / "toy.json").read_text())
    shards = sorted(str(p) for p in (root / "train").glob("*.tar"))
    return {"train": shards, "image_dir": args.image_dir or shards, "captions": args.captions or shards,
            "eval": args.eval_data or str(root / "eval"), "templates": args.eval_templates or toy["eval_templates"],
            "license": weights_licence(args), "datasets": [f"mobileclip-hf toy DataCompDR {root.name}"]}


def ensure_toy_data(args, accelerator) -> Path:
    from dataset_scripts.toy_data import ToySpec, build_toy_datacompdr

    spec = ToySpec(**args.toy_spec)
    with accelerator.main_process_first():
        if accelerator.is_main_process and accelerator.num_processes > 1:
            # reinforce() takes part in accelerate's process group; build in a separate one-process interpreter.
            env = {k: v for k, v in os.environ.items() if not k.startswith(
                ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "GROUP_", "ROLE_", "MASTER_", "TORCHELASTIC",
                 "ACCELERATE_"))}
            toy_args = [f"--{k.replace('_', '-')}={v}" for k, v in args.toy_spec.items()]
            cache = ["--cache-dir", args.cache_dir] if args.cache_dir else []
            subprocess.run([sys.executable, "-m", "dataset_scripts.toy_data", *cache, *toy_args], env=env, check=True)
        return build_toy_datacompdr(spec, args.cache_dir, log=accelerator.print)


def data_mode(args) -> str:
    """`auto`: the embedded toy set (1k samples) trains map-style; any --train-data streams."""
    if args.data_mode != "auto":
        return args.data_mode
    return "map" if args.train_data is None else "stream"


def load_train_split(data: dict, args, accelerator, streaming: bool):
    """The DataCompDR train split with its joins: an IterableDataset over the tar shards, or a prepared Dataset."""
    import datasets

    import dataset_scripts  # registers the "datacompdr" builder

    config, files = None, data["train"]
    if isinstance(files, str) and files.startswith("datacompdr:"):
        config, files = files[len("datacompdr:"):], None
    dataset_scripts.reset_datacompdr_stats()
    cache_dir = str(Path(args.cache_dir) / "datasets") if args.cache_dir else None
    # verify_images=False when streaming: the replay decodes each image anyway and skips (and counts) what fails,
    # where verifying would decode every JPEG twice.
    with accelerator.main_process_first():  # the main process builds the join indexes (and the Arrow copy) once
        ds = datasets.load_dataset("datacompdr", config, data_files={"train": files} if files else None,
                                   split="train", image_dir=data["image_dir"], captions=data["captions"],
                                   cache_dir=cache_dir, streaming=streaming, verify_images=not streaming)
    check_columns(ds, "train", streaming)
    if streaming:
        return ds, {}
    skipped = dataset_scripts.datacompdr_stats()["skipped"]
    if skipped and accelerator.is_main_process:
        accelerator.print(f"Skipped {sum(skipped.values())} training samples while preparing the data "
                          f"({', '.join(f'{k}: {v}' for k, v in sorted(skipped.items()))}); training on the "
                          f"{len(ds)} complete ones.")
    return ds, skipped


def check_columns(ds, split: str, streaming: bool = False) -> None:
    columns = list(ds.features) if streaming else ds.column_names
    missing = [c for c in REQUIRED_COLUMNS if c not in columns]
    if missing:
        raise ValueError(f"The {split} split has no column(s) {missing} (it has {columns}); images need "
                         f"--image-dir, ground-truth captions need --captions, embeddings/augmentations/synthetic "
                         f"captions come from the DataCompDR shards themselves.")
    if not streaming and len(ds) == 0:
        raise ValueError(f"The {split} split is empty: every sample was skipped (see the datacompdr log lines).")


def dataset_size(args, ds) -> int | None:
    """Samples in the training split when known without reading it: prepared splits and the published configs."""
    if not hasattr(ds, "num_shards"):
        return len(ds)
    name = args.train_data.removeprefix("datacompdr:") if args.train_data else None
    return KNOWN_SIZES.get(name)


def check_caption_mode(args, ds) -> None:
    """Shards reinforced without a captioner (config.json `num_captions: 0`) train on ground-truth captions only."""
    from dataset_scripts import get_metadata

    if args.caption_mode != "gt" and get_metadata(ds).num_captions == 0:
        raise ValueError(f"--caption-mode {args.caption_mode} needs synthetic captions, but the training data has none "
                         f"(its config.json says num_captions: 0: reinforced with --captioner none); pass "
                         f"--caption-mode gt to train on the ground-truth captions only.")


def resolve_teachers(args, ds) -> tuple[list[int], list[float]]:
    """Per-teacher widths and distillation logit scales; their sum must be the stored embedding width."""
    from dataset_scripts import get_metadata

    meta = get_metadata(ds)
    width = ds.features["image_emb"].shape[1]
    dims = args.teacher_dims or meta.embedding_dims
    if not dims:
        raise ValueError(f"The dataset records no teacher widths; pass --teacher-dims (summing to {width}).")
    if sum(dims) != width:
        raise ValueError(f"--teacher-dims {dims} sum to {sum(dims)}, but the stored teacher embeddings are {width} "
                         f"wide (dataset metadata: teachers {[t.model for t in meta.teachers]} with widths "
                         f"{meta.embedding_dims}); pass widths that split {width}, e.g. "
                         f"{','.join(map(str, meta.embedding_dims or [width]))}.")
    scales = args.teacher_logit_scales or meta.logit_scales
    if len(scales) == 1 and len(dims) > 1:
        scales = scales * len(dims)
    if len(scales) != len(dims) or any(s is None for s in scales):
        raise ValueError(f"--teacher-logit-scales needs one value per teacher ({len(dims)}: widths {dims}), got "
                         f"{scales}; e.g. --teacher-logit-scales {','.join(['100'] * len(dims))}.")
    return list(dims), [float(s) for s in scales]


