"""The run's settings, the ``config.json`` they produce (with the storage estimate), and the check that refuses to
mix two configurations in one output folder."""

from __future__ import annotations

import glob
import json
import os
import uuid
from dataclasses import dataclass
from typing import Any, Optional, Sequence

import torch

from ..augment_replay import AugmentationSampler
from .claims import link_exclusive
from .shards import PARTIAL_SUFFIX, atomic_write

FORMAT_VERSION = 1
DTYPES = {"fp32": torch.float32, "float32": torch.float32, "bf16": torch.bfloat16, "bfloat16": torch.bfloat16,
          "fp16": torch.float16, "float16": torch.float16}
# Keys of config.json that do not change the data (may differ between the runs filling one output folder).
_RUN_ONLY_KEYS = ("run", "num_samples")  # num_samples: samples written, filled in when the run completes


@dataclass
class ReinforceSettings:
    """Everything that determines the output (recorded in config.json) plus run-only knobs (``batch_size``...)."""

    dataset: str
    output: str
    teachers: Sequence[Any]  # spec strings and/or TeacherModel objects, in embedding order
    teacher_logit_scales: Optional[Sequence[float]] = None
    captioner: Any = None  # a spec string, an image-to-text pipeline or a CaptionModel object
    num_captions: int = 5
    top_p: float = 0.9
    max_caption_tokens: int = 30
    num_augmentations: int = 10
    crop_size: int = 224
    interpolation: str = "bicubic"
    seed: int = 0
    dtype: str = "fp32"
    embedding_format: str = "npz"
    split: str = "train"
    samples_per_shard: int = 1000
    image_column: Optional[str] = None
    text_column: Optional[str] = None
    uid_column: Optional[str] = None
    url_column: Optional[str] = None
    max_samples: Optional[int] = None
    license: Optional[str] = None
    # run-only (not part of the compatibility check)
    batch_size: int = 32
    teacher_batch_size: int = 256
    device: Optional[str] = None
    cache_dir: Optional[str] = None  # datasets cache for parquet / imagefolder / Hub inputs
    trust_remote_code: bool = False
    push_to_hub: Optional[str] = None
    progress: bool = True
    max_shards: Optional[int] = None  # stop after this many shards per process (a job time limit); rerun to go on
    lease_seconds: float = 600.0  # a dead worker's shard is taken over this long after its last heartbeat

    def validate(self) -> None:
        if not self.teachers:
            raise ValueError("no teachers given; pass at least one, e.g. --teachers open_clip:ViT-L-14/openai")
        if self.teacher_logit_scales is not None and len(self.teacher_logit_scales) != len(self.teachers):
            raise ValueError(f"--teacher-logit-scales has {len(self.teacher_logit_scales)} values for "
                             f"{len(self.teachers)} teachers; give one per teacher, in the same order")
        if self.dtype not in DTYPES:
            raise ValueError(f"--dtype {self.dtype!r} is not supported; choose one of {sorted(DTYPES)}")
        if self.embedding_format not in ("npz", "pth.gz"):
            raise ValueError(f"--embedding-format {self.embedding_format!r}; choose 'npz' (float32) or 'pth.gz' "
                             f"(bfloat16)")
        for name in ("num_augmentations", "samples_per_shard", "batch_size", "teacher_batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not self.lease_seconds > 0:
            raise ValueError(f"--lease-seconds must be > 0, got {self.lease_seconds}")
        if self.captioner is not None and self.num_captions < 1:
            raise ValueError(f"--num-captions must be >= 1 with a captioner, got {self.num_captions}")


def build_config(settings: ReinforceSettings, teachers, captioner, sampler: AugmentationSampler,
                 input_kind: str, num_shards: int) -> dict:
    total_dim = sum(t.embedding_dim for t in teachers)
    n_syn = settings.num_captions if captioner is not None else 0
    config = {
        "format_version": FORMAT_VERSION,
        "generator": "mobileclip-hf dataset_scripts.reinforce",
        "teachers": [t.describe() for t in teachers],
        "teacher_details": [t.details() for t in teachers],
        "captioner": captioner.describe() if captioner is not None else None,
        "num_captions": n_syn,
        "num_augmentations": settings.num_augmentations,
        "augmentation": sampler.to_config(),
        "seed": settings.seed,
        "compute_dtype": settings.dtype,
        "layout": "v1",
        "embedding_format": settings.embedding_format,
        "embedding_source_dtype": "bfloat16" if settings.embedding_format == "pth.gz" else "float32",
        "syn_text_key_regex": "^syn_text$",
        "syn_text_keys": ["syn_text"],
        "shard_pattern": "*.tar",
        # a local input is recorded by its real path, so "./data" and "/abs/data" are the same run
        "source_dataset": os.path.realpath(settings.dataset) if os.path.exists(settings.dataset) else settings.dataset,
        "input": {"kind": input_kind, "split": settings.split, "num_shards": num_shards,
                  "samples_per_shard": settings.samples_per_shard if input_kind != "webdataset" else None,
                  "columns": {"image": settings.image_column, "text": settings.text_column,
                              "uid": settings.uid_column, "url": settings.url_column},
                  "max_samples": settings.max_samples},
        "storage_bytes_per_sample": storage_per_sample(settings.num_augmentations, n_syn, total_dim,
                                                       settings.embedding_format),
        "license": settings.license,
        "run": {"batch_size": settings.batch_size, "teacher_batch_size": settings.teacher_batch_size},
    }
    return config


def _comparable(config: dict) -> dict:
    return {k: v for k, v in config.items() if k not in _RUN_ONLY_KEYS}


def _short(value: Any, limit: int = 160) -> str:
    text = json.dumps(value, sort_keys=True)
    return text if len(text) <= limit else text[:limit] + "..."


def check_or_write_config(output: str, config: dict, is_main: bool) -> None:
    """Write ``config.json``, or refuse an output folder made with a different configuration (also when another run
    into the folder writes its own at the same moment: the file is created exclusively, the loser compares)."""
    path = os.path.join(output, "config.json")
    if not os.path.exists(path):
        foreign = glob.glob(os.path.join(output, "*.tar")) + glob.glob(os.path.join(output, "manifest.jsonl"))
        if foreign:
            raise ValueError(f"--output {output!r} holds {len(foreign)} shard/manifest file(s) (e.g. "
                             f"{os.path.basename(foreign[0])!r}) but no config.json, so it was not written by this "
                             f"tool (or its config.json was removed); refusing to mix. Use a new --output folder.")
        if not is_main or _create_exclusive(path, json.dumps(config, indent=2, sort_keys=True).encode("utf-8")):
            return
    with open(path, encoding="utf-8") as f:  # there, or another run created it first
        existing = json.load(f)
    old, new = _comparable(existing), _comparable(json.loads(json.dumps(config)))
    if old != new:
        differing = "; ".join(f"{k}: {_short(old.get(k))} -> {_short(new.get(k))}"
                              for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k))
        raise ValueError(
            f"--output {output!r} already holds a reinforcement made with a different configuration ({differing})"
            f"; refusing to mix them. Use a new --output folder, or rerun with the settings of {path}.")


def _create_exclusive(path: str, data: bytes) -> bool:
    tmp = f"{path}.{uuid.uuid4().hex}{PARTIAL_SUFFIX}"
    atomic_write(tmp, data)
    try:
        return link_exclusive(tmp, path)
    finally:
        os.remove(tmp)


def _human_bytes(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1000


def storage_message(config: dict, num_samples: Optional[int], exact: bool = True) -> str:
    """The up-front storage estimate: (N_aug + 1 + n_syn) x D_total x bytes per value, per sample and in total."""
    per_sample = config["storage_bytes_per_sample"]
    total_dim = sum(t["embedding_dim"] for t in config["teachers"])
    width = 2 if config["embedding_format"] == "pth.gz" else 4
    about = "" if exact else "~"
    total = (f"{about}{num_samples} samples -> {about}{_human_bytes(per_sample * num_samples)} of embeddings"
             if num_samples is not None else "sample count unknown")
    return (f"reinforce: storage estimate (N_aug {config['num_augmentations']} + 1 + n_syn {config['num_captions']}) "
            f"x D_total {total_dim} x {width} B = {per_sample} B per sample (embeddings only; plus images and "
            f"JSON); {total}")


def storage_per_sample(num_augmentations: int, num_captions: int, total_dim: int, embedding_format: str) -> int:
    """Embedding bytes per sample: (N_aug + 1 + n_syn) x D_total x bytes (images and JSON not counted)."""
    return (num_augmentations + 1 + num_captions) * total_dim * (2 if embedding_format == "pth.gz" else 4)
