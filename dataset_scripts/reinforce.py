"""Reinforce any image-text dataset into the DataCompDR layout (our issue #6; Apple's RayGen, with ``param_aug`` kept).

CLI (one process, or ``accelerate launch --num_processes N`` to split the shards over N processes / GPUs / nodes;
on a CPU-only machine add ``--multi_gpu``, which starts N gloo processes: accelerate 1.15's ``--cpu`` starts one)::

    accelerate launch -m dataset_scripts.reinforce \\
        --dataset <hub id | folder of .tar | .parquet files | imagefolder> \\
        --captioner open_clip:coca_ViT-L-14/mscoco_finetuned_laion2b_s13b_b90k --num-captions 5 \\
        --teachers open_clip:ViT-L-14/openai,open_clip:ViT-L-14/datacomp_xl_s13b_b90k --teacher-logit-scales 100,100 \\
        --num-augmentations 10 --dtype bf16 --output out_dir [--license cc-by-nc-4.0] [--push-to-hub org/my-dr]

Python::

    from dataset_scripts.reinforce import reinforce
    summary = reinforce("images/", output="out_dir", teachers=["open_clip:ViT-L-14/openai"],
                        captioner="hf:Salesforce/blip-image-captioning-base", num_augmentations=10)

Teachers and the captioner can also be objects (``teachers=[...]`` may mix spec strings and objects; the order is
the embedding order). Spec strings: ``open_clip:<model>/<pretrained>``, ``open_clip:hf-hub:<repo>``,
``open_clip:local-dir:<folder>``, ``hf:<repo>`` or a bare repo id / local folder (e.g. a ``MobileCLIPModel``
``save_pretrained`` folder that also holds its processor). Objects:

* a teacher object has ``name`` (str, recorded in config.json), ``image_size`` (int or (height, width), at most the
  crop size), ``image_mean`` / ``image_std`` (3 floats), ``encode_image(pixel_values [B, 3, H, W] float32 CPU
  tensor) -> [B, D]`` and ``encode_text(list[str]) -> [B, D]``; optional float ``logit_scale``. The tool renders
  each view, resizes it to ``image_size`` (bicubic), normalises with the mean/std, and L2-normalises the outputs
  (``teachers.TeacherModel``). For a model in memory, ``teachers.teacher_from_transformers(model, processor,
  name)`` / ``teacher_from_open_clip(model, tokenizer, name)`` build one;
* a captioner object has ``name`` (str) and ``caption(images: list[PIL RGB image], seeds: list[list[int]]) ->
  list[list[str]]``: ``len(seeds[i])`` captions for image i, caption c drawn from ``seeds[i][c]`` alone (so the
  output does not depend on batching or processes); the tool post-processes them (first sentence, stripped)
  (``captioners.CaptionModel``). A transformers ``pipeline("image-text-to-text", ...)`` (e.g. BLIP) is accepted too.

Reading the result back needs no extra step (``config.json`` next to the shards carries the teachers)::

    import dataset_scripts, glob
    from datasets import load_dataset
    shards = sorted(glob.glob("out_dir/*.tar"))
    ds = load_dataset("datacompdr", data_files=shards, split="train",
                      image_dir=shards, captions=shards)   # optional joins: our shards also hold image + GT text

Per sample (webdataset members ``{uid}.*``): the image (original bytes as ``.jpg``/``.png``/...; a lossless ``.png``
when the original cannot be decoded faithfully by PIL's RGBA->RGB path, e.g. 16-bit), ``txt`` (GT caption),
``url.txt`` (if known), ``json`` ``{uid, sha256 of the stored image bytes}``, ``syn.json`` ``{"syn_text": [...]}``,
``paug.json`` ``{"param_aug": [[[i, j, h, w], [[op, mag], [op, mag]]], ...]}`` and ``npz`` (float32) or ``pth.gz``
(bfloat16) with ``image_emb`` [N_aug, D_total] and ``text_emb`` [1 + n_syn, D_total] (v1 layout: row 0 GT caption).
Each teacher's block of columns is L2-normalised; blocks are concatenated in the order of ``config.json``.

How a row is made (Apple's generator, ``docs/datacompdr.md`` section 3):

* augmentation a of a sample: ``AugmentationSampler.sample`` (RandomResizedCrop + RandAugment, the reference config)
  with a ``random.Random`` seeded from (seed, uid); the entry is stored in ``paug.json`` and rendered with
  ``augment_replay.replay_pil`` at the crop size (224, bicubic);
* teacher k: the rendered view, resized bicubic to the teacher's resolution if smaller (a larger teacher is refused),
  normalised with the teacher's mean/std, embedded, L2-normalised;
* captions: the un-augmented image through the captioner's own preprocessing, nucleus sampling (top-p 0.9) seeded
  per (seed, uid, caption index), first sentence, stripped.

Robustness: a shard is written to ``<name>.tar.partial`` and renamed when complete, then its manifest record
``_manifest/<name>.json`` (size, sha256, skipped samples, which process wrote it) is written; a shard counts as done
when both exist and agree on the size, so rerunning the same command after a crash or a kill resumes with the
unfinished shards and never duplicates one (left-over ``*.partial`` files are removed). When every shard is done,
``manifest.jsonl`` and the dataset card ``README.md`` are written (and pushed with ``--push-to-hub``).
``config.json`` is written first; a later run into the same folder with a different configuration (or into a folder
of shards without one) is refused. Samples with unreadable / empty images, no caption or damaged tar members are
skipped and counted (per reason, in the manifest). Because every random draw is seeded per sample and batches never
cross shards, a resumed run and a run with N processes write byte-identical shards. The main process shows a
progress bar (samples/s, ETA) over its shards; shards are dealt round-robin, so its ETA is the run's.
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import gzip
import hashlib
import io
import json
import logging
import os
import random
import re
import tarfile
import time
import zipfile
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Optional, Sequence

import numpy as np
import PIL.Image
import torch

from .augment_replay import AugmentationSampler, load_image, replay_pil
from .datacompdr import IMAGE_EXTENSIONS, expand_braces, iter_raw_samples, split_member_name

logger = logging.getLogger("dataset_scripts.reinforce")

FORMAT_VERSION = 1
MANIFEST_DIR = "_manifest"
PARTIAL_SUFFIX = ".partial"
_CLEAN_UID = re.compile(r"^[A-Za-z0-9_-]{1,128}$")
_TEXT_FIELDS = ("txt", "text", "caption")
_DTYPES = {"fp32": torch.float32, "float32": torch.float32, "bf16": torch.bfloat16, "bfloat16": torch.bfloat16,
           "fp16": torch.float16, "float16": torch.float16}
# Keys of config.json that do not change the data (may differ between the runs filling one output folder).
_RUN_ONLY_KEYS = ("run", "num_samples")  # num_samples: samples written, filled in when the run completes


# --------------------------------------------------------------------------------------------------------------------
# Seeds


def derive_seed(seed: int, uid: str, purpose: str) -> int:
    """A 63-bit seed for one (run seed, sample uid, purpose): independent of batching, processes and resumes."""
    digest = hashlib.sha256(f"{seed}\x1f{uid}\x1f{purpose}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


# --------------------------------------------------------------------------------------------------------------------
# Input


@dataclass
class InputRecord:
    key: str  # the sample's key in its source (tar key, row index, file name)
    image: Optional[bytes]
    text: Optional[str]
    uid: Optional[str] = None
    url: Optional[str] = None
    image_ext: Optional[str] = None
    problem: Optional[tuple[str, str]] = None  # (reason, detail) when the input itself is damaged


@dataclass
class InputShard:
    name: str  # output shard name, e.g. "00000003"
    source: str  # what it was read from (for the manifest)
    read: Callable[[], Iterator[InputRecord]]
    num_samples: Optional[int] = None
    count: Optional[Callable[[], Optional[int]]] = None  # counts the samples (tar headers) when asked

    def size(self) -> Optional[int]:
        return self.num_samples if self.num_samples is not None or self.count is None else self.count()


def estimate_sizes(shards: list[InputShard]) -> tuple[list[Optional[int]], bool]:
    """Samples per shard for the storage estimate and the progress bar, and whether that is exact. Tar shards are
    not all counted up front (reading every header of thousands of large tars would take long): unknown sizes are
    taken to be the first shard's."""
    sizes = [s.num_samples for s in shards]
    if all(n is not None for n in sizes):
        return sizes, True
    first = shards[0].size()
    return [n if n is not None else first for n in sizes], False


def _natural_sort(paths: list[str]) -> list[str]:
    return sorted(dict.fromkeys(paths))


def _resolve_files(spec: str, suffix: str) -> list[str]:
    if os.path.isdir(spec):
        return _natural_sort(glob.glob(os.path.join(spec, "**", f"*{suffix}"), recursive=True))
    matches = [m for pattern in expand_braces(spec) for m in sorted(glob.glob(pattern))]
    return _natural_sort([m for m in matches if m.endswith(suffix)])


def _read_tar(path: str, root: str) -> Iterator[InputRecord]:
    rel = os.path.relpath(path, root) if root else os.path.basename(path)
    for raw in iter_raw_samples(path):
        fields = raw.fields
        image_ext = next((ext for ext in fields if ext.split(".")[-1] in IMAGE_EXTENSIONS), None)
        meta: dict = {}
        if "json" in fields:
            try:
                meta = json.loads(fields["json"].decode("utf-8"))
            except ValueError:
                meta = {}
        text = next((fields[f].decode("utf-8", "replace") for f in _TEXT_FIELDS if f in fields), None)
        if text is None and isinstance(meta, dict):
            text = meta.get("caption") or meta.get("text")
        url = fields["url.txt"].decode("utf-8").strip() if "url.txt" in fields else (
            meta.get("url") if isinstance(meta, dict) else None)
        uid = meta.get("uid") if isinstance(meta, dict) else None
        yield InputRecord(key=f"{rel}/{raw.key}", image=fields.get(image_ext) if image_ext else None, text=text,
                          uid=uid, url=url, image_ext=image_ext,
                          problem=(raw.problem[0], raw.problem[2]) if raw.problem else None)


def _count_tar_samples(path: str) -> Optional[int]:
    """Distinct sample keys from the member headers alone (seeks past the data); None if the tar is damaged."""
    try:
        with tarfile.open(path) as tar:
            keys = {split_member_name(m.name)[0] for m in tar.getmembers() if m.isreg()}
    except (OSError, tarfile.TarError):
        return None
    keys.discard(None)
    return len(keys)


def _tar_shards(files: list[str], root: str) -> list[InputShard]:
    return [InputShard(name=f"{i:08d}", source=path, read=lambda path=path: _read_tar(path, root),
                       count=lambda path=path: _count_tar_samples(path))
            for i, path in enumerate(files)]


def _pick_column(columns: Sequence[str], given: Optional[str], candidates: Sequence[str], what: str,
                 required: bool) -> Optional[str]:
    if given is not None:
        if given not in columns:
            raise ValueError(f"--{what}-column {given!r} is not a column of the dataset; columns: {list(columns)}")
        return given
    found = next((c for c in candidates if c in columns), None)
    if found is None and required:
        raise ValueError(f"cannot find the {what} column among {list(columns)}; pass --{what}-column "
                         f"(tried {list(candidates)})")
    return found


def _datasets_shards(ds, samples_per_shard: int, source: str, image_column: Optional[str],
                     text_column: Optional[str], uid_column: Optional[str], url_column: Optional[str]) -> list:
    import datasets

    columns = list(ds.column_names)
    image_column = _pick_column(columns, image_column, ("image", "jpg", "png", "webp", "img"), "image", True)
    text_column = _pick_column(columns, text_column, ("text", "caption", "txt", "sentence", "captions"), "text",
                               False)
    uid_column = _pick_column(columns, uid_column, ("uid", "key", "__key__", "id"), "uid", False)
    url_column = _pick_column(columns, url_column, ("url", "url.txt"), "url", False)
    if isinstance(ds.features.get(image_column), datasets.Image):
        ds = ds.cast_column(image_column, datasets.Image(decode=False))
    n = len(ds)

    def read(start: int, stop: int) -> Iterator[InputRecord]:
        for index in range(start, stop):
            row = ds[index]
            value = row[image_column]
            data, ext = None, None
            if isinstance(value, dict):
                data = value.get("bytes")
                path = value.get("path")
                if data is None and path and os.path.exists(path):
                    with open(path, "rb") as f:
                        data = f.read()
                ext = path.rpartition(".")[2].lower() if path and "." in path else None
            elif isinstance(value, (bytes, bytearray)):
                data = bytes(value)
            elif isinstance(value, PIL.Image.Image):
                buffer = io.BytesIO()
                value.save(buffer, format="PNG")
                data, ext = buffer.getvalue(), "png"
            text = row.get(text_column) if text_column else None
            if isinstance(text, list):  # several captions (e.g. COCO): the first is the GT caption
                text = text[0] if text else None
            uid = row.get(uid_column) if uid_column else None
            yield InputRecord(key=f"{source}#{index}", image=data, text=text,
                              uid=str(uid) if uid is not None else None,
                              url=row.get(url_column) if url_column else None, image_ext=ext)

    return [InputShard(name=f"{k:08d}", source=f"{source}[{a}:{min(a + samples_per_shard, n)}]",
                       read=lambda a=a: read(a, min(a + samples_per_shard, n)),
                       num_samples=min(a + samples_per_shard, n) - a)
            for k, a in enumerate(range(0, n, samples_per_shard))]


def discover_inputs(dataset: str, split: str = "train", samples_per_shard: int = 1000,
                    image_column: Optional[str] = None, text_column: Optional[str] = None,
                    uid_column: Optional[str] = None, url_column: Optional[str] = None,
                    cache_dir: Optional[str] = None) -> tuple[str, list[InputShard]]:
    """``(kind, shards)`` for a folder / glob of webdataset tars, parquet files, an imagefolder or a Hub dataset id.

    Tar inputs keep their shards (output shard k = k-th input tar, sorted); other inputs are cut into shards of
    ``samples_per_shard`` consecutive rows.
    """
    import datasets

    tars = _resolve_files(dataset, ".tar")
    if tars:
        root = dataset if os.path.isdir(dataset) else os.path.commonpath([os.path.dirname(t) for t in tars])
        return "webdataset", _tar_shards(tars, root)
    parquets = _resolve_files(dataset, ".parquet")
    if parquets:
        ds = datasets.load_dataset("parquet", data_files=parquets, split="train", cache_dir=cache_dir)
        kind = "parquet"
    elif os.path.isdir(dataset):
        ds = datasets.load_dataset("imagefolder", data_dir=dataset, split="train", cache_dir=cache_dir)
        kind = "imagefolder"
    elif os.path.exists(dataset) or glob.has_magic(dataset):
        raise ValueError(f"--dataset {dataset!r}: expected a folder or glob of .tar / .parquet files or an "
                         f"imagefolder, found none")
    else:
        ds = datasets.load_dataset(dataset, split=split, cache_dir=cache_dir)
        kind = "hub"
    return kind, _datasets_shards(ds, samples_per_shard, os.path.basename(dataset.rstrip("/")) or dataset,
                                  image_column, text_column, uid_column, url_column)


# --------------------------------------------------------------------------------------------------------------------
# Images


class BadSample(ValueError):
    def __init__(self, reason: str, detail: str):
        self.reason = reason
        super().__init__(detail)


@dataclass
class PreparedImage:
    rgb: PIL.Image.Image  # exactly what load_image(stored_bytes) returns
    stored: bytes
    ext: str


def _to_8bit_rgb(img: PIL.Image.Image) -> PIL.Image.Image:
    """High bit-depth modes that PIL's RGBA->RGB path would clip (I;16, I, F): rescale to 8 bits, then RGB."""
    array = np.asarray(img)
    if img.mode.startswith("I;16") or (img.mode == "I" and array.max(initial=0) > 255):
        array = (array.astype(np.float64) / (65535.0 if array.max(initial=0) <= 65535 else array.max())) * 255.0
    elif img.mode == "F":
        low, high = float(np.nanmin(array)), float(np.nanmax(array))
        array = (array - low) / (high - low if high > low else 1.0) * 255.0 if high > 1.0 else array * 255.0
    return PIL.Image.fromarray(np.clip(np.rint(array), 0, 255).astype(np.uint8), "L").convert("RGB")


def prepare_image(data: Optional[bytes], ext_hint: Optional[str] = None) -> PreparedImage:
    """Decode an input image the way the DataCompDR replay will (no EXIF rotation; RGBA -> RGB for other modes).

    The original bytes are kept when ``augment_replay.load_image`` reproduces the pixels used here; otherwise a
    lossless PNG of those pixels is stored, so a replay from the shard always sees exactly the generator's image.
    """
    if data is None:
        raise BadSample("missing_image", "no image")
    if len(data) == 0:
        raise BadSample("empty_image", "zero-byte image")
    try:
        with PIL.Image.open(io.BytesIO(data)) as img:
            img.load()
            fmt = (img.format or "").lower()
            if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
                rgb = _to_8bit_rgb(img)
                reencode = True
            else:
                rgb = load_image(img.copy() if img.mode == "RGB" else img)
                reencode = False
    except BadSample:
        raise
    except Exception as err:  # PIL raises many types on broken files; one broken image drops one sample
        raise BadSample("unreadable_image", f"{type(err).__name__}: {err}") from None
    ext = {"jpeg": "jpg", "tiff": "tif"}.get(fmt, fmt)
    if ext not in IMAGE_EXTENSIONS or getattr(img, "n_frames", 1) > 1:
        reencode = True  # a format the DataCompDR image join does not index, or an animation (frame 0 was used)
    if reencode:
        buffer = io.BytesIO()
        rgb.save(buffer, format="PNG")
        return PreparedImage(rgb, buffer.getvalue(), "png")
    return PreparedImage(rgb, data, ext)


# --------------------------------------------------------------------------------------------------------------------
# Output encoding (byte-deterministic)


def encode_npz(arrays: dict[str, np.ndarray]) -> bytes:
    """``np.savez`` equivalent with fixed zip timestamps (savez stamps the current time, breaking byte equality)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as archive:
        for name, array in arrays.items():
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            with archive.open(info, "w", force_zip64=True) as f:
                np.lib.format.write_array(f, np.ascontiguousarray(array), allow_pickle=False)
    return buffer.getvalue()


def encode_pth_gz(arrays: dict[str, np.ndarray]) -> bytes:
    """gzip (mtime 0) of ``torch.save`` of bfloat16 tensors, as in ``apple/DataCompDR-12M-bf16``."""
    buffer = io.BytesIO()
    torch.save({k: torch.from_numpy(np.ascontiguousarray(v)).to(torch.bfloat16) for k, v in arrays.items()}, buffer)
    return gzip.compress(buffer.getvalue(), mtime=0)


class ShardWriter:
    """A tar with fixed member metadata (mtime, owner, mode), so equal content gives equal bytes."""

    def __init__(self, path: str):
        self.tar = tarfile.open(path, "w", format=tarfile.GNU_FORMAT)

    def add(self, name: str, data: bytes) -> None:
        info = tarfile.TarInfo(name)
        info.size, info.mtime, info.mode, info.uid, info.gid = len(data), 0, 0o644, 0, 0
        info.uname = info.gname = ""
        self.tar.addfile(info, io.BytesIO(data))

    def close(self) -> None:
        self.tar.close()


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


# --------------------------------------------------------------------------------------------------------------------
# Configuration


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

    def validate(self) -> None:
        if not self.teachers:
            raise ValueError("no teachers given; pass at least one, e.g. --teachers open_clip:ViT-L-14/openai")
        if self.teacher_logit_scales is not None and len(self.teacher_logit_scales) != len(self.teachers):
            raise ValueError(f"--teacher-logit-scales has {len(self.teacher_logit_scales)} values for "
                             f"{len(self.teachers)} teachers; give one per teacher, in the same order")
        if self.dtype not in _DTYPES:
            raise ValueError(f"--dtype {self.dtype!r} is not supported; choose one of {sorted(_DTYPES)}")
        if self.embedding_format not in ("npz", "pth.gz"):
            raise ValueError(f"--embedding-format {self.embedding_format!r}; choose 'npz' (float32) or 'pth.gz' "
                             f"(bfloat16)")
        for name in ("num_augmentations", "samples_per_shard", "batch_size", "teacher_batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
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


def _atomic_write(path: str, data: bytes) -> None:
    tmp = f"{path}.{os.getpid()}{PARTIAL_SUFFIX}"
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _short(value: Any, limit: int = 160) -> str:
    text = json.dumps(value, sort_keys=True)
    return text if len(text) <= limit else text[:limit] + "..."


def check_or_write_config(output: str, config: dict, is_main: bool) -> None:
    """Write ``config.json``, or refuse an output folder made with a different configuration."""
    path = os.path.join(output, "config.json")
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            existing = json.load(f)
        old, new = _comparable(existing), _comparable(json.loads(json.dumps(config)))
        if old != new:
            differing = "; ".join(f"{k}: {_short(old.get(k))} -> {_short(new.get(k))}"
                                  for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k))
            raise ValueError(
                f"--output {output!r} already holds a reinforcement made with a different configuration ({differing})"
                f"; refusing to mix them. Use a new --output folder, or rerun with the settings of {path}.")
        return
    foreign = glob.glob(os.path.join(output, "*.tar")) + glob.glob(os.path.join(output, "manifest.jsonl"))
    if foreign:
        raise ValueError(f"--output {output!r} holds {len(foreign)} shard/manifest file(s) (e.g. "
                         f"{os.path.basename(foreign[0])!r}) but no config.json, so it was not written by this tool "
                         f"(or its config.json was removed); refusing to mix. Use a new --output folder.")
    if is_main:
        _atomic_write(path, json.dumps(config, indent=2, sort_keys=True).encode("utf-8"))


# --------------------------------------------------------------------------------------------------------------------
# Manifest / resume


def _record_path(output: str, name: str) -> str:
    return os.path.join(output, MANIFEST_DIR, f"{name}.json")


def shard_done(output: str, name: str) -> bool:
    record, tar = _record_path(output, name), os.path.join(output, f"{name}.tar")
    if not (os.path.exists(record) and os.path.exists(tar)):
        return False
    try:
        with open(record, encoding="utf-8") as f:
            return json.load(f).get("bytes") == os.path.getsize(tar)
    except (OSError, ValueError):
        return False


def write_manifest(output: str) -> list[dict]:
    """Collect the per-shard records into ``manifest.jsonl`` (one ``{"shard", "num_uids", ...}`` per line)."""
    records = []
    for path in sorted(glob.glob(os.path.join(output, MANIFEST_DIR, "*.json"))):
        with open(path, encoding="utf-8") as f:
            records.append(json.load(f))
    lines = "".join(json.dumps({k: r[k] for k in ("shard", "num_uids", "bytes", "sha256", "source", "skipped")},
                               sort_keys=True) + "\n" for r in records)
    _atomic_write(os.path.join(output, "manifest.jsonl"), lines.encode("utf-8"))
    return records


# --------------------------------------------------------------------------------------------------------------------
# Processing


@dataclass
class Timings:
    seconds: Counter = field(default_factory=Counter)

    @contextlib.contextmanager
    def __call__(self, name: str):
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] += time.perf_counter() - start


def _uid_for(record: InputRecord) -> str:
    if record.uid is not None and _CLEAN_UID.match(str(record.uid)):
        return str(record.uid)
    # No usable uid: a DataComp-shaped 32-hex id derived from where the sample came from (stable across runs).
    return hashlib.md5(record.key.encode("utf-8")).hexdigest()


@dataclass
class _Sample:
    uid: str
    text: str
    url: Optional[str]
    image: PreparedImage
    entries: list = field(default_factory=list)
    views: list = field(default_factory=list)
    captions: list = field(default_factory=list)


class Reinforcer:
    """Loaded models + settings; :meth:`process_shard` turns one input shard into one output shard."""

    def __init__(self, settings: ReinforceSettings, teachers, captioner, sampler: AugmentationSampler):
        self.settings, self.teachers, self.captioner, self.sampler = settings, teachers, captioner, sampler
        self.timings = Timings()

    def _prepare(self, record: InputRecord, seen: set) -> _Sample:
        if record.problem is not None:
            raise BadSample(*record.problem)
        uid = _uid_for(record)
        if uid in seen:
            raise BadSample("duplicate_uid", f"uid {uid} appears twice in the shard")
        text = record.text.strip() if isinstance(record.text, str) else None
        if not text:
            raise BadSample("missing_caption", "no ground-truth caption")
        with self.timings("decode"):
            image = prepare_image(record.image, record.image_ext)
        seen.add(uid)
        return _Sample(uid=uid, text=text, url=record.url, image=image)

    def _augment(self, sample: _Sample) -> None:
        rng = random.Random(derive_seed(self.settings.seed, sample.uid, "augment"))
        size = sample.image.rgb.size
        sample.entries = [self.sampler.sample(rng, size) for _ in range(self.settings.num_augmentations)]
        sample.views = [replay_pil(sample.image.rgb, e, self.sampler.size, self.sampler.interpolation)
                        for e in sample.entries]

    def _embed_images(self, batch: list[_Sample]) -> list[np.ndarray]:
        blocks = []
        views = [v for s in batch for v in s.views]
        step = self.settings.teacher_batch_size
        for teacher in self.teachers:
            with self.timings("augment"):
                pixels = [teacher.pixel_values(v) for v in views]
            out = []
            with self.timings("teacher_image"):
                for start in range(0, len(pixels), step):
                    out.append(teacher.encode_image(torch.stack(pixels[start:start + step])))
            blocks.append(torch.cat(out).numpy())
        return np.split(np.concatenate(blocks, axis=1), len(batch))

    def _embed_texts(self, batch: list[_Sample]) -> list[np.ndarray]:
        texts = [t for s in batch for t in [s.text] + s.captions]
        step = self.settings.teacher_batch_size
        blocks = []
        with self.timings("teacher_text"):
            for teacher in self.teachers:
                blocks.append(torch.cat([teacher.encode_text(texts[a:a + step])
                                         for a in range(0, len(texts), step)]).numpy())
        return np.split(np.concatenate(blocks, axis=1), len(batch))

    def _caption(self, batch: list[_Sample]) -> None:
        if self.captioner is None:
            return
        seeds = [[derive_seed(self.settings.seed, s.uid, f"caption/{c}") for c in range(self.settings.num_captions)]
                 for s in batch]
        with self.timings("caption"):
            captions = self.captioner.caption([s.image.rgb for s in batch], seeds)
        for sample, caps in zip(batch, captions):
            sample.captions = caps

    def _write(self, writer: ShardWriter, sample: _Sample, image_emb: np.ndarray, text_emb: np.ndarray) -> None:
        uid = sample.uid
        writer.add(f"{uid}.{sample.image.ext}", sample.image.stored)
        writer.add(f"{uid}.txt", sample.text.encode("utf-8"))
        if sample.url:
            writer.add(f"{uid}.url.txt", str(sample.url).encode("utf-8"))
        meta = {"uid": uid, "sha256": hashlib.sha256(sample.image.stored).hexdigest()}
        writer.add(f"{uid}.json", json.dumps(meta).encode("utf-8"))
        writer.add(f"{uid}.syn.json", json.dumps({"syn_text": sample.captions}).encode("utf-8"))
        writer.add(f"{uid}.paug.json", json.dumps({"param_aug": sample.entries}).encode("utf-8"))
        arrays = {"image_emb": image_emb.astype(np.float32), "text_emb": text_emb.astype(np.float32)}
        if self.settings.embedding_format == "npz":
            writer.add(f"{uid}.npz", encode_npz(arrays))
        else:
            writer.add(f"{uid}.pth.gz", encode_pth_gz(arrays))

    def _flush(self, writer: ShardWriter, batch: list[_Sample]) -> None:
        self._caption(batch)
        with self.timings("augment"):
            for sample in batch:
                self._augment(sample)
        image_embs = self._embed_images(batch)
        text_embs = self._embed_texts(batch)
        with self.timings("write"):
            for sample, image_emb, text_emb in zip(batch, image_embs, text_embs):
                self._write(writer, sample, image_emb, text_emb)
                sample.views = []

    def process_shard(self, shard: InputShard, progress: Optional[Callable[[int], None]] = None,
                      written_by: Optional[dict] = None) -> dict:
        """Write ``<output>/<name>.tar`` (via ``.partial``) and its manifest record; return the record."""
        output = self.settings.output
        final = os.path.join(output, f"{shard.name}.tar")
        partial = f"{final}{PARTIAL_SUFFIX}"
        skipped: Counter = Counter()
        num_uids, seen, batch = 0, set(), []
        writer = ShardWriter(partial)
        try:
            for record in shard.read():
                try:
                    batch.append(self._prepare(record, seen))
                except BadSample as err:
                    skipped[err.reason] += 1
                    level = logging.WARNING if sum(skipped.values()) <= 20 else logging.DEBUG
                    logger.log(level, "reinforce: shard %s: skipped %s (%s): %s", shard.name, record.key,
                               err.reason, err)
                    if progress:
                        progress(1)
                    continue
                if len(batch) == self.settings.batch_size:
                    self._flush(writer, batch)
                    num_uids += len(batch)
                    if progress:
                        progress(len(batch))
                    batch = []
            if batch:
                self._flush(writer, batch)
                num_uids += len(batch)
                if progress:
                    progress(len(batch))
        finally:
            writer.close()
        with open(partial, "rb") as f:
            digest = hashlib.sha256(f.read()).hexdigest()
        os.replace(partial, final)
        record = {"shard": f"{shard.name}.tar", "num_uids": num_uids, "bytes": os.path.getsize(final),
                  "sha256": digest, "source": shard.source, "skipped": dict(sorted(skipped.items())),
                  "written_by": written_by or {"process_index": 0, "num_processes": 1}}
        os.makedirs(os.path.join(output, MANIFEST_DIR), exist_ok=True)
        _atomic_write(_record_path(output, shard.name), json.dumps(record, sort_keys=True).encode("utf-8"))
        return record


# --------------------------------------------------------------------------------------------------------------------
# Driver


def _distributed_state(device: Optional[str]):
    """accelerate's PartialState: rank, world size, device and barriers, under ``accelerate launch`` or alone."""
    from accelerate import PartialState

    kwargs = {"cpu": True} if device == "cpu" else {}
    return PartialState(**kwargs)


def _load_models(settings: ReinforceSettings, device: torch.device):
    from .captioners import load_captioner
    from .teachers import load_teacher

    dtype = _DTYPES[settings.dtype]
    scales = settings.teacher_logit_scales or [None] * len(settings.teachers)
    teachers = [load_teacher(spec, device, scale, dtype, settings.trust_remote_code)
                for spec, scale in zip(settings.teachers, scales)]
    sampler = AugmentationSampler(size=settings.crop_size, interpolation=settings.interpolation)
    for teacher in teachers:
        teacher.check_crop_size(settings.crop_size)
    captioner = None
    if settings.captioner is not None:
        captioner = load_captioner(settings.captioner, device, settings.top_p, settings.max_caption_tokens, dtype,
                                   settings.trust_remote_code)
    return teachers, captioner, sampler


def _limit(shards: list[InputShard], max_samples: Optional[int]) -> list[InputShard]:
    """Keep the first ``max_samples`` samples (whole shards, the last one cut)."""
    if max_samples is None:
        return shards
    kept, left = [], max_samples
    for shard in shards:
        if left <= 0:
            break
        size = shard.size()

        def read(shard=shard, n=left):
            for i, record in enumerate(shard.read()):
                if i >= n:
                    return
                yield record

        kept.append(InputShard(shard.name, shard.source, read, min(size, left) if size is not None else None))
        left -= size if size is not None else left
    return kept


def _remove_stale_partials(output: str) -> list[str]:
    """Half-written files of a killed run (``*.partial``); complete files are only ever made by a rename."""
    stale = glob.glob(os.path.join(output, f"*{PARTIAL_SUFFIX}"))
    stale += glob.glob(os.path.join(output, MANIFEST_DIR, f"*{PARTIAL_SUFFIX}"))
    for path in stale:
        os.remove(path)
    return stale


def _write_card(output: str, config: dict) -> Optional[str]:
    """The dataset card (``README.md``), or why none was written."""
    from hub_cards import generate_dataset_card

    if not config.get("license"):
        return ("no --license given: README.md (dataset card) not written; the card needs the licence of the "
                "inputs (images, captions, teachers, captioner) and has no default")
    card = generate_dataset_card(config, data_dir=output)  # columns (every image format, txt) from the shards
    card.save(os.path.join(output, "README.md"))
    return None


def reinforce(dataset: str, output: str, teachers: Sequence[Any], captioner: Any = None,
              **kwargs) -> dict:
    """Reinforce ``dataset`` into ``output`` (see the module docstring); returns a summary dict.

    Keywords are the fields of :class:`ReinforceSettings` (``num_augmentations``, ``num_captions``, ``seed``,
    ``teacher_logit_scales``, ``dtype``, ``embedding_format``, ``batch_size``...). Works inside an
    ``accelerate launch`` (each process takes its share of the shards) or as a plain call.
    """
    settings = ReinforceSettings(dataset=dataset, output=output, teachers=list(teachers), captioner=captioner,
                                 **kwargs)
    settings.validate()
    state = _distributed_state(settings.device)
    device = torch.device(settings.device) if settings.device else state.device
    os.makedirs(output, exist_ok=True)
    with state.main_process_first():
        kind, shards = discover_inputs(settings.dataset, settings.split, settings.samples_per_shard,
                                       settings.image_column, settings.text_column, settings.uid_column,
                                       settings.url_column, settings.cache_dir)
    shards = _limit(shards, settings.max_samples)
    if not shards:
        raise ValueError(f"--dataset {dataset!r} holds no samples")
    teachers_, captioner_, sampler = _load_models(settings, device)
    config = build_config(settings, teachers_, captioner_, sampler, kind, len(shards))
    if state.is_main_process:
        check_or_write_config(output, config, is_main=True)
        stale = _remove_stale_partials(output)
        if stale:
            logger.info("reinforce: removed %d half-written file(s) of an interrupted run", len(stale))
        sizes, exact = estimate_sizes(shards)
        print(storage_message(config, sum(n for n in sizes if n is not None), exact), flush=True)
    state.wait_for_everyone()
    check_or_write_config(output, config, is_main=False)

    # Every process sees the same finished set: it is read between two barriers, before anyone writes a shard.
    pending = [s for s in shards if not shard_done(output, s.name)]
    state.wait_for_everyone()
    mine = pending[state.process_index::state.num_processes]
    if settings.max_shards is not None:
        mine = mine[:settings.max_shards]

    reinforcer = Reinforcer(settings, teachers_, captioner_, sampler)
    bar = None
    if settings.progress and state.is_main_process:
        from tqdm.auto import tqdm

        size_of = {shard.name: size for shard, size in zip(shards, sizes)}
        counts = [size_of[shard.name] for shard in mine]
        # Shards are dealt round-robin, so process 0's rate and ETA stand for the whole run.
        bar = tqdm(total=sum(counts) if None not in counts else None, unit="sample",
                   desc=f"reinforce (process 0 of {state.num_processes}: {len(mine)} of {len(pending)} shards)",
                   dynamic_ncols=True)
    written_by = {"process_index": state.process_index, "num_processes": state.num_processes}
    start = time.perf_counter()
    records = []
    for shard in mine:
        records.append(reinforcer.process_shard(shard, bar.update if bar is not None else None, written_by))
    elapsed = time.perf_counter() - start
    if bar is not None:
        bar.close()
    state.wait_for_everyone()

    summary = {"output": output, **written_by, "num_shards": len(shards), "done_before": len(shards) - len(pending),
               "processed_shards": [r["shard"] for r in records], "num_uids": sum(r["num_uids"] for r in records),
               "skipped": dict(sum((Counter(r["skipped"]) for r in records), Counter())), "seconds": elapsed,
               "timings": dict(reinforcer.timings.seconds), "config": config}
    if state.is_main_process and all(shard_done(output, s.name) for s in shards):
        all_records = write_manifest(output)
        config["num_samples"] = summary["total_uids"] = sum(r["num_uids"] for r in all_records)
        _atomic_write(os.path.join(output, "config.json"), json.dumps(config, indent=2, sort_keys=True).encode())
        note = _write_card(output, config)
        if note:
            logger.warning("reinforce: %s", note)
            summary["card_note"] = note
        summary["complete"] = True
        if settings.push_to_hub:
            _push(output, settings.push_to_hub)
    return summary


def _push(output: str, repo_id: str) -> None:
    """One commit of the finished dataset (shards, config.json, manifest.jsonl, card) to a Hub dataset repo."""
    from hub_cards.push import push_folder_to_hub

    push_folder_to_hub(output, repo_id, repo_type="dataset", commit_message="Add reinforced shards",
                       ignore_patterns=[f"{MANIFEST_DIR}/*", f"*{PARTIAL_SUFFIX}"])


# --------------------------------------------------------------------------------------------------------------------
# CLI


def _floats(text: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Reinforce an image-text dataset into the DataCompDR layout.")
    p.add_argument("--dataset", required=True, help="Hub dataset id, folder/glob of .tar or .parquet, or imagefolder")
    p.add_argument("--split", default="train")
    p.add_argument("--image-column"), p.add_argument("--text-column"), p.add_argument("--uid-column")
    p.add_argument("--url-column")
    p.add_argument("--samples-per-shard", type=int, default=1000, help="output shard size for non-tar inputs")
    p.add_argument("--max-samples", type=int)
    p.add_argument("--captioner", help="open_clip:<coca>/<tag>, hf:<repo>, a transformers id/folder, or 'none'")
    p.add_argument("--num-captions", type=int, default=5)
    p.add_argument("--top-p", type=float, default=0.9)
    p.add_argument("--max-caption-tokens", type=int, default=30)
    p.add_argument("--teachers", required=True, help="comma-separated teacher specs, in embedding order")
    p.add_argument("--teacher-logit-scales", type=_floats)
    p.add_argument("--num-augmentations", type=int, default=10)
    p.add_argument("--crop-size", type=int, default=224)
    p.add_argument("--interpolation", default="bicubic")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--dtype", default="fp32", choices=sorted(_DTYPES))
    p.add_argument("--embedding-format", default="npz", choices=("npz", "pth.gz"))
    p.add_argument("--batch-size", type=int, default=32, help="samples per step")
    p.add_argument("--teacher-batch-size", type=int, default=256, help="views / texts per teacher forward")
    p.add_argument("--device")
    p.add_argument("--cache-dir", help="datasets cache folder for parquet / imagefolder / Hub inputs")
    p.add_argument("--trust-remote-code", action="store_true")
    p.add_argument("--output", required=True)
    p.add_argument("--license", help="licence of the result for the dataset card (no default)")
    p.add_argument("--push-to-hub", metavar="REPO_ID")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--max-shards", type=int,
                   help="stop after this many shards per process (e.g. to fit a job's time limit); rerun to go on")
    return p.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> dict:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    captioner = None if args.captioner in (None, "", "none") else args.captioner
    summary = reinforce(
        args.dataset, args.output, [t.strip() for t in args.teachers.split(",") if t.strip()], captioner,
        teacher_logit_scales=args.teacher_logit_scales, num_captions=args.num_captions, top_p=args.top_p,
        max_caption_tokens=args.max_caption_tokens, num_augmentations=args.num_augmentations,
        crop_size=args.crop_size, interpolation=args.interpolation, seed=args.seed, dtype=args.dtype,
        embedding_format=args.embedding_format, split=args.split, samples_per_shard=args.samples_per_shard,
        image_column=args.image_column, text_column=args.text_column, uid_column=args.uid_column,
        url_column=args.url_column, max_samples=args.max_samples, license=args.license,
        batch_size=args.batch_size, teacher_batch_size=args.teacher_batch_size, device=args.device,
        cache_dir=args.cache_dir,
        trust_remote_code=args.trust_remote_code, push_to_hub=args.push_to_hub, progress=not args.no_progress,
        max_shards=args.max_shards,
    )
    shown = {k: v for k, v in summary.items() if k != "config"}
    print("reinforce: " + json.dumps(shown, default=str), flush=True)
    # Leave the process group cleanly (gloo ranks otherwise may abort at interpreter exit).
    state = _distributed_state(args.device)
    state.wait_for_everyone()
    state.destroy_process_group()
    return summary


if __name__ == "__main__":
    main()
