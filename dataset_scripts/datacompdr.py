"""DataCompDR / DFNDR (Apple's reinforced image-text datasets) as a 🤗 ``datasets`` builder.

Usage (``import dataset_scripts`` registers the name ``"datacompdr"``, see ``dataset_scripts/__init__.py``)::

    import dataset_scripts
    from datasets import load_dataset

    ds = load_dataset("datacompdr", "12m", streaming=True, split="train")          # Apple's Hub shards
    ds = load_dataset("datacompdr", data_files="shards/{00000..00015}.tar", split="train")  # local shards
    ds = load_dataset("datacompdr", "12m", data_files="shards/*.tar", split="train",
                      image_dir="images/", captions="datacomp12m/*.parquet")         # + images and GT captions

or, without the name registry, the builder class directly::

    from dataset_scripts.datacompdr import DataCompDR
    builder = DataCompDR(config_name="12m", data_files={"train": ["shards/00000000.tar"]})
    ds = builder.as_streaming_dataset(split="train")

Configs: ``12m`` (``apple/DataCompDR-12M``, fp32 ``npz``), ``12m-bf16`` (``apple/DataCompDR-12M-bf16``, bf16
``pth.gz``), ``1b`` (``apple/DataCompDR-1B``), ``dfndr-2b``, ``dfndr-12m``, ``dfndr-12m-bf16`` (``apple/DFNDR-*``),
and ``local`` (the default; any shards in this layout, e.g. written by our reinforcement tool). The named configs
default to ``hf://datasets/apple/<repo>`` shards; those defaults need the network and are not exercised by the
offline tests (the DFNDR shard paths are not verified: ``**/*.tar``).

Shard layout (one sample = consecutive tar members ``{key}.{field}``):

* ``url.txt`` (image URL), ``json`` (``{"uid", "sha256"}``): optional.
* ``syn.json``: synthetic captions, ``{"syn_text": [...]}`` (v1) or several ``syn_text_*`` keys (raygen);
  keys are selected with ``syn_text_key_regex`` (``re.match``, as Apple's training code does).
* ``paug.json``: ``{"param_aug": [entry, ...]}``, entry ``[[i, j, h, w], [[op, mag], ...]]``; the list may also
  be stored as a JSON string (the HF card's type). See ``augment_replay``.
* ``npz`` (float32) or ``pth.gz`` (gzip of ``torch.save`` of bfloat16 tensors): ``image_emb`` [n_aug, D_total],
  ``text_emb``. Layout **v1**: ``text_emb`` = 1 GT row + one row per synthetic caption, exactly. Layout
  **raygen**: ``text_emb`` = GT row(s) only and ``<syn_key>_emb`` [n_syn, D_total] per synthetic-caption key.

Columns (explicit ``Features``; D_total = sum of the teachers' widths, from metadata, never hard-coded):

* ``__key__``, ``__url__`` (shard path), ``uid``, ``url``, ``sha256``: strings (``url``/``sha256`` may be None).
* ``syn_text``: list of synthetic captions (all selected keys, in ``syn.json`` order); ``syn_key``: the key each
  caption came from.
* ``param_aug``: list of ``{"crop": [i, j, h, w] int32, "ops": [{"op": int32, "magnitude": float64}]}``, always
  parsed (never a JSON string). ``augment_replay.apply`` accepts these entries directly.
* ``image_emb``: float32 [n_aug, D_total]; row a is the teacher embedding of ``param_aug[a]``.
* ``text_emb``: float32 [num_gt_emb + n_syn, D_total]; rows ``[0, num_gt_emb)`` embed the ground-truth
  caption(s), row ``num_gt_emb + k`` embeds ``syn_text[k]`` (both layouts are normalised to this).
  bf16 sources are widened to float32 exactly.
* ``num_gt_emb``: int32 (1 in v1; raygen may store several ground-truth captions).
* with ``captions=``: ``text`` (ground-truth caption).
* with ``image_dir=``: ``image`` (``Image(decode=False)``: the original bytes, original size; decode with
  ``augment_replay.load_image``, which like Apple's generator does *not* apply EXIF rotation, unlike
  ``datasets.Image``), ``image_width``, ``image_height``, ``crop_rescaled`` (boxes were rescaled from the
  recorded original size).

Dataset-level metadata (teachers in embedding order with their widths and default distillation logit scales, number
of augmentations, augmentation config, layout, source dtype): ``get_metadata(ds)`` / ``builder.metadata``; it is also
serialised in ``ds.info.description``. Sources, in order of precedence: the ``teachers=`` keyword, a
``config.json`` next to the shards (or one folder up), the named config's defaults; for ``local`` data with none of
these, D_total is inferred from the first sample and the per-teacher split is unknown.

``config.json`` (written by the reinforcement tool)::

    {"teachers": [{"model": "ViT-L-14", "pretrained": "openai", "embedding_dim": 768, "logit_scale": 100.0}, ...],
     "num_augmentations": 30, "augmentation": AugmentationSampler.to_config(), "seed": 0,
     "layout": "raygen", "embedding_format": "npz", "syn_text_key_regex": "^syn_text.*$"}

Apple's own ``config.json`` (``{"model_name": "A,B", "pretrained": "a,b", "num_samples": N, "reinforce": ...}``)
is read too; it has no widths, so those come from the named config (or ``teachers=``).

Joins: ``captions=`` (DataComp metadata parquet files or metadata tar shards: ``uid``, ``text``,
``original_width``, ``original_height``) and ``image_dir=`` (a folder of ``{uid}.jpg``-style files, a folder /
list / glob of img2dataset webdataset tars whose ``.json`` carries ``uid``, or image files with such a ``.json``
sidecar). Samples without an image (or caption) are dropped and counted. Crop boxes are in the pixels of the image
Apple had: if the recorded original size (``captions`` metadata first, then the image's own ``.json``) differs from
the joined image, all boxes are rescaled, provided the image is a proportional resize of that original (else the
sample is dropped: a cropped or padded download cannot be mapped); a box that still does not fit drops the sample.
Nothing is padded. Each join is an index file (uid-sorted Arrow, memory-mapped) built once per set of sources under
``<cache_dir>/datacompdr-join-index/`` and shared by every rank and DataLoader worker.

Bad input never stops the stream and is never yielded: the sample is skipped, counted under a reason
(:data:`SKIP_REASONS`) and logged with the field, ``__key__`` and shard (the first 20 per reason and process at
WARNING, then DEBUG; one summary line per shard). ``datacompdr_stats()`` returns this process' counts (with a
DataLoader, each worker process keeps its own; the per-shard log lines are the cross-process record).
``strict=True`` raises :class:`DataCompDRSampleError` instead. Deliberately, decoding errors of *one sample* are
caught here and not re-raised: that is the contract the issue asks for.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import io
import json
import logging
import os
import re
import tarfile
import zlib
from collections import Counter
from dataclasses import asdict, dataclass, field
from itertools import product
from typing import Any, Iterator, Optional, Sequence, Union

import datasets
import numpy as np
import PIL.Image
from datasets.builder import Key
from datasets.data_files import DataFilesDict, DataFilesPatternsDict, sanitize_patterns
from datasets.utils.file_utils import xdirname, xexists, xjoin, xopen

from .augment_replay import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, parse_param_aug

logger = logging.getLogger(__name__)

NAME = "datacompdr"
METADATA_PREFIX = "datacompdr-metadata: "
IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp", "bmp", "gif", "tif", "tiff")
_HEX_UID = re.compile(r"^[0-9a-f]{32}$")

# Why a sample was dropped. Each is counted in ``datacompdr_stats()["skipped"]``.
SKIP_REASONS = (
    "corrupt_tar",  # the tar stream could not be read on (truncated / bad compression); the open sample is dropped
    "corrupt_tar_member",  # unreadable bytes (bad header) inside the tar; the samples around them are dropped
    "duplicate_member",  # the same {key}.{field} twice in one sample
    "missing_member",  # paug.json / syn.json / npz|pth.gz (or an array inside it) absent
    "undecodable_member",  # JSON / npz / gzip / torch payload cannot be decoded
    "bad_param_aug",  # paug.json does not hold valid [[i, j, h, w], [[op, mag], ...]] entries
    "bad_syn_text",  # no synthetic-caption key matches, or the value is not a list of strings
    "bad_embedding",  # wrong rank, wrong width, non-float or non-finite embeddings
    "count_mismatch",  # image_emb rows != len(param_aug), or text rows != GT + synthetic captions
    "uid_mismatch",  # json uid differs from the uid-shaped __key__
    "missing_caption",  # captions= given, uid not found
    "missing_image",  # image_dir= given, uid not found
    "unreadable_image",  # image bytes cannot be decoded
    "sha256_mismatch",  # check_sha256=True and the image bytes differ from the recorded hash
    "image_size_mismatch",  # the joined image is not a proportional resize of the recorded original
    "crop_outside_image",  # a crop box does not fit the joined image, even after rescaling
)
_LOGGED_PER_REASON = 20


class DataCompDRSampleError(ValueError):
    """One sample cannot be used. Raised in strict mode; otherwise counted and skipped."""

    def __init__(self, reason: str, field_name: str, key: str, shard: str, detail: str):
        if reason not in SKIP_REASONS:
            raise ValueError(f"unknown skip reason {reason!r}; expected one of {SKIP_REASONS}")
        self.reason, self.field_name, self.key, self.shard, self.detail = reason, field_name, key, shard, detail
        super().__init__(f"[{reason}] field {field_name!r} of sample __key__={key!r} in shard {shard!r}: {detail}")


# --------------------------------------------------------------------------------------------------------------------
# Counters (per process)

_COUNTS: Counter = Counter()


def datacompdr_stats() -> dict:
    """``{"yielded": n, "skipped": {reason: n}, "crop_rescaled": n}`` for this process since the last reset."""
    return {
        "yielded": _COUNTS["yielded"],
        "skipped": {reason: _COUNTS[f"skipped:{reason}"] for reason in SKIP_REASONS if _COUNTS[f"skipped:{reason}"]},
        "crop_rescaled": _COUNTS["crop_rescaled"],
    }


def reset_datacompdr_stats() -> None:
    _COUNTS.clear()


def _record_skip(error: DataCompDRSampleError, shard_counts: Counter) -> None:
    _COUNTS[f"skipped:{error.reason}"] += 1
    shard_counts[error.reason] += 1
    level = logging.WARNING if _COUNTS[f"skipped:{error.reason}"] <= _LOGGED_PER_REASON else logging.DEBUG
    logger.log(level, "datacompdr: skipped sample: %s", error)


# --------------------------------------------------------------------------------------------------------------------
# Metadata


@dataclass(frozen=True)
class Teacher:
    """One teacher of the ensemble; its block of ``embedding_dim`` columns comes in list order."""

    model: str
    pretrained: Optional[str]
    embedding_dim: int
    logit_scale: Optional[float] = None  # default distillation logit scale for this teacher

    @classmethod
    def from_dict(cls, spec: dict, where: str) -> "Teacher":
        if not isinstance(spec, dict):
            raise ValueError(f"{where}: a teacher must be a dict with 'model' and 'embedding_dim', got {spec!r}")
        unknown = set(spec) - {"model", "pretrained", "embedding_dim", "logit_scale"}
        if unknown or "model" not in spec or "embedding_dim" not in spec:
            raise ValueError(f"{where}: teacher {spec!r} needs 'model' and 'embedding_dim' (optional 'pretrained', "
                             f"'logit_scale'); unknown keys: {sorted(unknown)}")
        dim = spec["embedding_dim"]
        if isinstance(dim, bool) or not isinstance(dim, int) or dim <= 0:
            raise ValueError(f"{where}: teacher {spec['model']!r} embedding_dim must be a positive int, got {dim!r}")
        scale = spec.get("logit_scale")
        return cls(spec["model"], spec.get("pretrained"), dim, None if scale is None else float(scale))


@dataclass(frozen=True)
class DataCompDRMetadata:
    """Dataset-level facts a distillation loop needs."""

    teachers: tuple[Teacher, ...]
    num_augmentations: Optional[int]
    layout: str
    embedding_format: str
    embedding_source_dtype: Optional[str]
    syn_text_key_regex: str
    augmentation: Optional[dict]
    seed: Optional[int] = None
    source: str = "builder config"

    @property
    def embedding_dims(self) -> list[int]:
        return [t.embedding_dim for t in self.teachers]

    @property
    def total_dim(self) -> int:
        return sum(self.embedding_dims)

    @property
    def logit_scales(self) -> list[Optional[float]]:
        return [t.logit_scale for t in self.teachers]

    def teacher_slices(self) -> list[slice]:
        """Column slice of each teacher in ``image_emb`` / ``text_emb``."""
        bounds = np.cumsum([0] + self.embedding_dims).tolist()
        return [slice(a, b) for a, b in zip(bounds[:-1], bounds[1:])]

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "DataCompDRMetadata":
        data = json.loads(text)
        data["teachers"] = tuple(Teacher(**t) for t in data["teachers"])
        return cls(**data)


def get_metadata(obj: Any) -> DataCompDRMetadata:
    """Metadata of a loaded dataset (``Dataset`` / ``IterableDataset``), a ``DatasetInfo`` or a builder."""
    if isinstance(obj, DataCompDR) and obj.metadata is not None and obj.metadata.teachers:
        return obj.metadata
    info = obj if isinstance(obj, datasets.DatasetInfo) else getattr(obj, "info", None)
    description = getattr(info, "description", "") or ""
    for line in description.splitlines():
        if line.startswith(METADATA_PREFIX):
            return DataCompDRMetadata.from_json(line[len(METADATA_PREFIX):])
    raise ValueError(f"{type(obj).__name__} carries no DataCompDR metadata (was it loaded with the 'datacompdr' "
                     f"builder, and for 'local' data has it been prepared / streamed once?)")


# Reference facts (dataset cards, Apple's training configs and scripts; see docs/datacompdr.md).
_DATACOMPDR_TEACHERS = (
    # Order = concatenation order of the embeddings, from "model_name": "ViT-L-14,ViT-L-14",
    # "pretrained": "openai,datacomp_xl_s13b_b90k" in Apple's configs (the card lists them the other way round).
    {"model": "ViT-L-14", "pretrained": "openai", "embedding_dim": 768, "logit_scale": 100.0},
    {"model": "ViT-L-14", "pretrained": "datacomp_xl_s13b_b90k", "embedding_dim": 768, "logit_scale": 100.0},
)
_DFNDR_TEACHERS = (
    # run_dfndr*.sh: --distill-logit-scale 70. 60. in model order (DFN2B-L-14, DFN2B-L-14-39B).
    {"model": "hf-hub:apple/DFN2B-CLIP-ViT-L-14", "pretrained": None, "embedding_dim": 768, "logit_scale": 70.0},
    {"model": "hf-hub:apple/DFN2B-CLIP-ViT-L-14-39B", "pretrained": None, "embedding_dim": 768, "logit_scale": 60.0},
)
_REFERENCE_AUGMENTATION = {
    "random_resized_crop": {"size": 224, "interpolation": "bicubic", "scale": [0.08, 1.0], "ratio": [0.75, 4 / 3]},
    "rand_augment": {"enable": True, "p": 1.0, "num_ops": 2, "magnitude": 9, "num_magnitude_bins": 31,
                     "interpolation": "nearest"},
    "to_tensor": {"enable": True},
    "normalize": {"mean": list(OPENAI_CLIP_MEAN), "std": list(OPENAI_CLIP_STD)},
}


# --------------------------------------------------------------------------------------------------------------------
# Configs


@dataclass
class DataCompDRConfig(datasets.BuilderConfig):
    """One DataCompDR flavour. Every field can be overridden as a ``load_dataset`` keyword.

    Args:
        embedding_format: ``"npz"``, ``"pth.gz"`` or ``"auto"`` (npz if present, else pth.gz).
        layout: ``"v1"``, ``"raygen"`` or ``"auto"`` (raygen if a ``<syn_key>_emb`` array exists).
        syn_text_key_regex: which ``syn.json`` keys are synthetic captions (``re.match``).
        teachers: list of ``{"model", "pretrained", "embedding_dim", "logit_scale"}`` in embedding order.
        num_augmentations: stored views per image (metadata; the per-sample count comes from ``param_aug``).
        augmentation: the generator's augmentation config (metadata).
        embedding_source_dtype: ``"float32"`` / ``"bfloat16"`` (metadata).
        image_emb_key: name of the image-embedding array.
        read_config_json: look for ``config.json`` next to the shards.
        image_dir: folder, tar, glob or list of them holding the images (joined by uid).
        captions: parquet / metadata tar files (path, glob or list) holding ground-truth captions by uid.
        check_sha256: drop joined images whose sha256 differs from the sample's ``json`` sha256.
        verify_images: fully decode joined images while generating (catches truncated files).
        strict: raise :class:`DataCompDRSampleError` on the first bad sample instead of skipping it.
    """

    hub_repo: Optional[str] = None
    embedding_format: str = "auto"
    layout: str = "auto"
    syn_text_key_regex: str = r"^syn_text.*$"
    teachers: Optional[Sequence[dict]] = None
    num_augmentations: Optional[int] = None
    augmentation: Optional[dict] = None
    embedding_source_dtype: Optional[str] = None
    image_emb_key: str = "image_emb"
    read_config_json: bool = True
    image_dir: Optional[Union[str, Sequence[str]]] = None
    captions: Optional[Union[str, Sequence[str]]] = None
    check_sha256: bool = False
    verify_images: bool = True
    strict: bool = False

    def __post_init__(self):
        super().__post_init__()
        self.validate()

    def validate(self) -> None:
        """Checks the fields; also run by the builder, since ``load_dataset`` keywords are set after ``__init__``."""
        choices = {"embedding_format": ("auto", "npz", "pth.gz"), "layout": ("auto", "v1", "raygen")}
        for name, valid in choices.items():
            if getattr(self, name) not in valid:
                raise ValueError(f"{name}={getattr(self, name)!r} is not supported; choose one of {valid}")
        try:
            re.compile(self.syn_text_key_regex)
        except re.error as err:
            raise ValueError(f"syn_text_key_regex={self.syn_text_key_regex!r} is not a valid regex: {err}") from None
        if self.teachers is not None:
            if isinstance(self.teachers, (str, dict)) or not self.teachers:
                raise ValueError(f"teachers must be a non-empty list of dicts, got {self.teachers!r}")
            for teacher in self.teachers:
                Teacher.from_dict(teacher, "teachers=")


def _hub_files(repo: str, pattern: str) -> DataFilesPatternsDict:
    # Patterns, resolved (listed on the Hub) only when a builder is created with this config.
    return DataFilesPatternsDict.from_patterns({"train": [f"hf://datasets/{repo}/{pattern}"]})


_FAMILIES = {  # key layout, synthetic-caption keys, teachers in embedding order
    "datacompdr": ("v1", r"^syn_text$", _DATACOMPDR_TEACHERS),
    "dfndr": ("raygen", r"^syn_text_dfn_mscoco38k$", _DFNDR_TEACHERS),
}


def _apple_config(name: str, family: str, repo: str, pattern: str, embedding_format: str, num_augmentations: int,
                  description: str) -> DataCompDRConfig:
    layout, syn_text_key_regex, teachers = _FAMILIES[family]
    return DataCompDRConfig(
        name=name, description=description, hub_repo=repo, data_files=_hub_files(repo, pattern),
        embedding_format=embedding_format, layout=layout, syn_text_key_regex=syn_text_key_regex, teachers=teachers,
        num_augmentations=num_augmentations, augmentation=_REFERENCE_AUGMENTATION,
        embedding_source_dtype={"npz": "float32", "pth.gz": "bfloat16"}[embedding_format],
    )


def named_configs() -> list[DataCompDRConfig]:
    """Fresh config objects. ``datasets`` resolves a chosen config's ``data_files`` in place (when no keyword is
    given), so ``load_dataset`` gets new ones each call instead of a Hub listing frozen into the class."""
    return [
        _apple_config("12m", "datacompdr", "apple/DataCompDR-12M", "*.tar", "npz", 30,
                      "DataCompDR-12M: 12.8M DataComp-1B samples, 30 augmentations, 5 CoCa captions, 2x ViT-L-14 "
                      "teachers, float32 npz."),
        _apple_config("12m-bf16", "datacompdr", "apple/DataCompDR-12M-bf16", "*.tar", "pth.gz", 30,
                      "DataCompDR-12M with bfloat16 embeddings in pth.gz (same uids and shards)."),
        _apple_config("1b", "datacompdr", "apple/DataCompDR-1B", "*/*.tar", "npz", 10,
                      "DataCompDR-1B: DataComp-1B BestPool, 10 augmentations, float32 npz, folders 00..65 of tars."),
        _apple_config("dfndr-2b", "dfndr", "apple/DFNDR-2B", "**/*.tar", "npz", 2,
                      "DFNDR-2B (MobileCLIP2): DFN-2B, 2 augmentations, DFN CoCa captions (syn_text_dfn_mscoco38k), "
                      "2x DFN2B ViT-L-14 teachers. Shard paths unverified."),
        _apple_config("dfndr-12m", "dfndr", "apple/DFNDR-12M", "**/*.tar", "npz", 30,
                      "DFNDR-12M: 12.8M DFN-2B samples, 30 augmentations. Shard paths unverified."),
        _apple_config("dfndr-12m-bf16", "dfndr", "apple/DFNDR-12M-bf16", "**/*.tar", "pth.gz", 30,
                      "DFNDR-12M with bfloat16 pth.gz embeddings. Shard paths unverified."),
        DataCompDRConfig(
            name="local", description="Shards in the DataCompDR layout (either key layout, npz or pth.gz), e.g. "
                                      "written by the reinforcement tool; metadata from config.json next to the "
                                      "shards.",
        ),
    ]


# --------------------------------------------------------------------------------------------------------------------
# data_files: webdataset-style brace ranges


_BRACE = re.compile(r"\{([^{}]*)\}")
_RANGE = re.compile(r"^(-?\d+)\.\.(-?\d+)$")


def expand_braces(pattern: str) -> list[str]:
    """Expand ``{00000..00015}`` (zero-padded ranges) and ``{a,b}`` alternatives, as webdataset URLs do."""
    match = _BRACE.search(pattern)
    if match is None:
        return [pattern]
    body = match.group(1)
    range_match = _RANGE.match(body)
    if range_match:
        first, last = range_match.groups()
        width = max(len(first), len(last)) if first.startswith("0") or last.startswith("0") else 0
        start, stop = int(first), int(last)
        step = 1 if stop >= start else -1
        choices = [str(n).zfill(width) for n in range(start, stop + step, step)]
    elif "," in body:
        choices = body.split(",")
    else:
        choices = ["{" + body + "}"]  # not a brace expression: keep literally
        head, tail = pattern[: match.end()], pattern[match.end():]
        return [head + rest for rest in expand_braces(tail)]
    head, tail = pattern[: match.start()], pattern[match.end():]
    return [head + choice + rest for choice, rest in product(choices, expand_braces(tail))]


def expand_data_files(data_files: Any) -> Any:
    """Apply :func:`expand_braces` to every pattern of a ``data_files`` str / list / dict."""
    if isinstance(data_files, str):
        expanded = expand_braces(data_files)
        return expanded if len(expanded) > 1 else data_files
    if isinstance(data_files, (list, tuple)):
        return [p for item in data_files for p in (expand_braces(item) if isinstance(item, str) else [item])]
    if isinstance(data_files, dict):
        return {split: expand_data_files(patterns) for split, patterns in data_files.items()}
    return data_files


# --------------------------------------------------------------------------------------------------------------------
# Decoders: small, named, never unpickle


def decode_text(data: bytes) -> str:
    return data.decode("utf-8").strip()


def decode_json(data: bytes) -> Any:
    return json.loads(data.decode("utf-8"))


def decode_npz(data: bytes) -> dict[str, np.ndarray]:
    # allow_pickle=False: object arrays would need pickle (CVE-2019-6446).
    with np.load(io.BytesIO(data), allow_pickle=False) as archive:
        return {name: archive[name] for name in archive.files}


def decode_pth_gz(data: bytes) -> dict[str, np.ndarray]:
    import torch

    # weights_only=True: tensors and containers only, never arbitrary pickled objects.
    obj = torch.load(io.BytesIO(gzip.decompress(data)), weights_only=True, map_location="cpu")
    if not isinstance(obj, dict):
        raise ValueError(f"expected a dict of tensors, got {type(obj).__name__}")
    arrays = {}
    for name, value in obj.items():
        if not isinstance(value, torch.Tensor):
            raise ValueError(f"entry {name!r} is a {type(value).__name__}, expected a tensor")
        # bfloat16 -> float32 is exact; numpy has no bfloat16.
        arrays[name] = value.float().numpy() if value.is_floating_point() else value.numpy()
    return arrays


EMBEDDING_DECODERS = {"npz": decode_npz, "pth.gz": decode_pth_gz}


# --------------------------------------------------------------------------------------------------------------------
# Tar reading: group members into samples, detect damage instead of dying on it


@dataclass
class RawSample:
    key: str
    fields: dict = field(default_factory=dict)
    problem: Optional[tuple[str, str, str]] = None  # (reason, field, detail) when the sample must be dropped

    def taint(self, reason: str, field_name: str, detail: str) -> None:
        if self.problem is None:
            self.problem = (reason, field_name, detail)


def split_member_name(name: str) -> tuple[Optional[str], Optional[str]]:
    """``dir/0001.url.txt`` -> (``dir/0001``, ``url.txt``): the key ends at the first dot of the basename."""
    directory, _, base = name.rpartition("/")
    stem, dot, extension = base.partition(".")
    if not dot or not stem:
        return None, None
    return (f"{directory}/{stem}" if directory else stem), extension.lower()


def _padded(size: int) -> int:
    return (size + tarfile.BLOCKSIZE - 1) // tarfile.BLOCKSIZE * tarfile.BLOCKSIZE


def iter_raw_samples(tar_path: str, download_config=None) -> Iterator[RawSample]:
    """Yield the samples of one (possibly remote, possibly damaged) webdataset tar.

    The tar is read as a stream with ``ignore_zeros=True``, so a corrupt header does not end the archive silently:
    tarfile resynchronises on the next valid header, and the jump in member offsets reveals the lost bytes. The
    samples on both sides of such a gap are tainted, since the lost member may belong to either. A truncated
    member, a compression error, or a missing end-of-archive marker taints the open sample and ends the shard.
    """
    current: Optional[RawSample] = None
    taint_next: Optional[tuple[str, str, str]] = None
    expected_offset = 0
    with xopen(tar_path, "rb", download_config=download_config, block_size=0) as fileobj:
        try:
            with tarfile.open(fileobj=fileobj, mode="r|*", ignore_zeros=True) as stream:
                for info in stream:
                    if info.offset != expected_offset:
                        detail = (f"{info.offset - expected_offset} unreadable bytes at offset {expected_offset} "
                                  f"before member {info.name!r}")
                        if current is not None:
                            current.taint("corrupt_tar_member", "(tar)", detail)
                        taint_next = ("corrupt_tar_member", "(tar)", detail)
                    expected_offset = info.offset_data + _padded(info.size)
                    if not info.isreg():
                        continue
                    basename = info.name.rpartition("/")[2]
                    key, field_name = split_member_name(info.name)
                    if key is None or basename.startswith((".", "__")):
                        continue
                    if current is None or key != current.key:  # a new key: the previous sample is complete
                        if current is not None:
                            yield current
                        current = RawSample(key)
                        if taint_next is not None:
                            current.taint(*taint_next)
                    taint_next = None  # a gap inside the open sample has already tainted it
                    data = stream.extractfile(info).read()
                    stream.members = []  # streaming: do not keep every TarInfo
                    if field_name in current.fields:
                        current.taint("duplicate_member", field_name, f"member {info.name!r} appears twice")
                    else:
                        current.fields[field_name] = data
                end_offset = stream.offset
        except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as err:
            if current is None:
                current = RawSample("(shard start)")
            current.taint("corrupt_tar", "(tar)", f"{type(err).__name__}: {err}; the rest of the shard is lost")
            yield current
            return
    if current is not None:
        # A complete archive ends with two zero blocks after the last member; without them the file was cut at a
        # member boundary and the last sample may be incomplete.
        if end_offset < expected_offset + 2 * tarfile.BLOCKSIZE:
            current.taint("corrupt_tar", "(tar)", "archive ends without its end-of-archive marker (truncated file)")
        yield current


# --------------------------------------------------------------------------------------------------------------------
# Joins


def _resolve_sources(spec: Union[str, Sequence[str]], what: str) -> list[str]:
    """Paths from a path / glob / list of them, sorted and de-duplicated; directories are walked recursively."""
    import glob as _glob

    patterns = [spec] if isinstance(spec, (str, os.PathLike)) else list(spec)
    paths = []
    for pattern in patterns:
        pattern = os.path.expanduser(os.fspath(pattern))
        matches = sorted(_glob.glob(pattern, recursive=True)) if _glob.has_magic(pattern) else [pattern]
        if not matches or not all(os.path.exists(m) for m in matches):
            raise FileNotFoundError(f"{what}: nothing found at {pattern!r}")
        for match in matches:
            if os.path.isdir(match):
                for root, dirs, files in os.walk(match):
                    dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                    paths.extend(os.path.join(root, f) for f in sorted(files) if not f.startswith("."))
            else:
                paths.append(match)
    return list(dict.fromkeys(paths))


def _original_size(meta: Any) -> Optional[tuple[int, int]]:
    if not isinstance(meta, dict):
        return None
    width, height = meta.get("original_width"), meta.get("original_height")
    if isinstance(width, (int, float)) and isinstance(height, (int, float)) and width > 0 and height > 0:
        return int(width), int(height)
    return None


JOIN_INDEX_VERSION = 1  # part of every index file's name: bump it when the index layout changes


def _uid_from(key: str, meta: Any) -> Optional[str]:
    """The uid of a sample keyed ``key`` with ``.json`` metadata ``meta``: ``meta["uid"]``, else a uid-shaped key."""
    if isinstance(meta, dict) and isinstance(meta.get("uid"), str) and meta["uid"]:
        return meta["uid"].lower()
    return key.lower() if _HEX_UID.match(key.lower()) else None


@dataclass(frozen=True)
class ImageRef:
    path: str
    offset: Optional[int]  # None: a plain file; else the member's data offset inside the tar at ``path``
    size: int
    name: str
    original_size: Optional[tuple[int, int]]  # (width, height) recorded next to the image, if any

    def read(self) -> bytes:
        with open(self.path, "rb") as f:
            if self.offset is None:
                return f.read()
            f.seek(self.offset)
            return f.read(self.size)


class UidIndex:
    """A uid-sorted Arrow table in a memory-mapped file: lookups by binary search, no per-row Python objects.

    Built once per set of sources by :func:`join_index_file` and opened read-only by every process (ranks and
    DataLoader workers), which then share one copy through the page cache.
    """

    def __init__(self, path: str):
        import pyarrow as pa

        table = pa.ipc.open_file(pa.memory_map(path, "r")).read_all()
        self.columns = {name: table.column(name).combine_chunks() for name in table.column_names}  # 1 chunk: no copy
        uids = self.columns["uid"]
        width = uids.type.byte_width
        self.uids = np.frombuffer(uids.buffers()[1], dtype=f"S{width}", count=len(uids), offset=uids.offset * width)

    def row(self, uid: str) -> Optional[int]:
        needle = uid.lower().encode("utf-8")
        pos = int(np.searchsorted(self.uids, needle))
        return pos if pos < len(self.uids) and self.uids[pos] == needle else None

    def value(self, column: str, row: int) -> Any:
        return self.columns[column][row].as_py()

    def original_size(self, row: int) -> Optional[tuple[int, int]]:
        width, height = self.value("original_width", row), self.value("original_height", row)
        return (width, height) if width > 0 and height > 0 else None


class CaptionIndex(UidIndex):
    """uid -> (ground-truth caption, original (width, height)) from DataComp metadata parquet files or tar shards."""

    def get(self, uid: str) -> Optional[tuple[str, Optional[tuple[int, int]]]]:
        row = self.row(uid)
        return None if row is None else (self.value("text", row), self.original_size(row))

    @classmethod
    def build_table(cls, paths: list[str]):
        import pyarrow as pa
        import pyarrow.compute as pc

        tables = [cls._parquet_rows(p) if p.endswith(".parquet") else cls._tar_rows(p)
                  for p in paths if p.endswith((".parquet", ".tar"))]
        table = pa.concat_tables(tables) if tables else None
        if table is not None:
            table = table.filter(pc.and_(pc.is_valid(table.column("uid")), pc.is_valid(table.column("text"))))
        if table is None or table.num_rows == 0:
            raise ValueError(f"captions: no (uid, text) rows in {paths[:5]}{'...' if len(paths) > 5 else ''}; expected "
                             f"DataComp metadata parquet files (uid, text) or tar shards of {{key}}.txt + {{key}}.json")
        return table

    @staticmethod
    def _parquet_rows(path: str):
        import pyarrow as pa
        import pyarrow.compute as pc
        import pyarrow.parquet as pq

        schema_names = set(pq.read_schema(path).names)
        text_column = next((c for c in ("text", "caption") if c in schema_names), None)
        if "uid" not in schema_names or text_column is None:
            raise ValueError(f"captions file {path} needs a 'uid' and a 'text' (or 'caption') column; "
                             f"it has {sorted(schema_names)}")
        size_columns = [c for c in ("original_width", "original_height") if c in schema_names]
        table = pq.read_table(path, columns=["uid", text_column] + size_columns)
        zeros = pa.array(np.zeros(table.num_rows, np.int32))
        sizes = {name: table.column(name).fill_null(0).cast(pa.int32()) if name in size_columns else zeros
                 for name in ("original_width", "original_height")}
        return pa.table({"uid": pc.utf8_lower(table.column("uid").cast(pa.string())),
                         "text": table.column(text_column).cast(pa.large_string()), **sizes})

    @staticmethod
    def _tar_rows(path: str):
        import pyarrow as pa

        rows = {"uid": [], "text": [], "original_width": [], "original_height": []}
        for raw in iter_raw_samples(path):
            if raw.problem is not None or "txt" not in raw.fields:
                continue
            try:
                meta = decode_json(raw.fields["json"]) if "json" in raw.fields else {}
                text = decode_text(raw.fields["txt"])
            except ValueError:
                continue
            uid = _uid_from(raw.key.rpartition("/")[2], meta)
            if uid is not None:
                size = _original_size(meta) or (0, 0)
                for column, value in zip(rows, (uid, text, *size)):
                    rows[column].append(value)
        return pa.table(rows, schema=pa.schema([("uid", pa.string()), ("text", pa.large_string()),
                                                 ("original_width", pa.int32()), ("original_height", pa.int32())]))


class ImageIndex(UidIndex):
    """uid -> image location: image files (named by uid, or with a ``.json`` sidecar) and img2dataset-style tars."""

    def get(self, uid: str) -> Optional[ImageRef]:
        row = self.row(uid)
        if row is None:
            return None
        offset = self.value("offset", row)
        return ImageRef(self.value("path", row), None if offset < 0 else offset, self.value("size", row),
                        self.value("name", row), self.original_size(row))

    @classmethod
    def build_table(cls, paths: list[str]):
        import pyarrow as pa

        rows = {"uid": [], "path": [], "offset": [], "size": [], "name": [], "original_width": [],
                "original_height": []}

        def add(uid, path, offset, size, name, meta):
            if uid is not None:
                values = (uid, path, offset, size, name, *(_original_size(meta) or (0, 0)))
                for column, value in zip(rows, values):
                    rows[column].append(value)

        by_stem: dict[str, dict[str, str]] = {}
        for path in paths:
            if not path.endswith(".tar"):
                stem, _, extension = path.rpartition(".")
                by_stem.setdefault(stem, {})[extension.lower()] = path
        for stem, members in by_stem.items():
            image_ext = next((ext for ext in IMAGE_EXTENSIONS if ext in members), None)
            if image_ext is not None:
                meta = cls._read_sidecar(members.get("json"))
                image = members[image_ext]
                add(_uid_from(os.path.basename(stem), meta), image, -1, os.path.getsize(image),
                    os.path.basename(image), meta)
        for path in paths:
            if path.endswith(".tar"):
                for key, name, info, meta in cls._tar_images(path):
                    add(_uid_from(key, meta), path, info.offset_data, info.size, name, meta)
        if not rows["uid"]:
            raise ValueError(f"image_dir: no images ({', '.join(IMAGE_EXTENSIONS)}) named by uid, with a .json "
                             f"sidecar holding 'uid', or in webdataset tars, in {paths[:5]}"
                             f"{'...' if len(paths) > 5 else ''}")
        schema = pa.schema([("uid", pa.string()), ("path", pa.large_string()), ("offset", pa.int64()),
                            ("size", pa.int64()), ("name", pa.large_string()), ("original_width", pa.int32()),
                            ("original_height", pa.int32())])
        return pa.table(rows, schema=schema)

    @staticmethod
    def _read_sidecar(path: Optional[str]) -> Any:
        if path is None:
            return None
        try:
            with open(path, "rb") as f:
                return decode_json(f.read())
        except (OSError, ValueError) as err:
            logger.warning("datacompdr: image sidecar %s is unreadable (%s); using the file name as uid", path, err)
            return None

    @staticmethod
    def _tar_images(path: str) -> Iterator[tuple[str, str, tarfile.TarInfo, Any]]:
        """(key, image name, image member, parsed .json or None) per sample of an image tar; damage is logged."""
        groups: dict[str, dict[str, tarfile.TarInfo]] = {}
        metas: dict[str, Any] = {}
        try:
            with tarfile.open(path, mode="r:", ignore_zeros=True) as tar:
                for info in tar:
                    key, field_name = split_member_name(info.name)
                    if key is None or not info.isreg():
                        continue
                    groups.setdefault(key, {})[field_name] = info
                    if field_name == "json":
                        try:
                            metas[key] = decode_json(tar.extractfile(info).read())
                        except ValueError:
                            metas[key] = None
        except (tarfile.TarError, EOFError, OSError) as err:
            logger.warning("datacompdr: image shard %s is damaged (%s); indexed %d samples before the damage",
                           path, err, len(groups))
        for key, members in groups.items():
            image_ext = next((ext for ext in IMAGE_EXTENSIONS if ext in members), None)
            if image_ext is not None:
                base = key.rpartition("/")[2]
                yield base, f"{base}.{image_ext}", members[image_ext], metas.get(key)


def _write_sorted_index(table, path: str) -> None:
    """Sort ``table`` by uid (stable: the first of duplicate uids wins) and write it as one Arrow IPC batch."""
    import pyarrow as pa

    uids = table.column("uid").cast(pa.binary()).to_numpy(zero_copy_only=False)
    width = max(1, max(len(u) for u in uids))
    uids = uids.astype(f"S{width}")
    order = np.argsort(uids, kind="stable")
    fixed = pa.FixedSizeBinaryArray.from_buffers(pa.binary(width), len(uids),
                                                 [None, pa.py_buffer(uids[order].tobytes())])
    table = table.take(pa.array(order)).set_column(0, pa.field("uid", pa.binary(width)), fixed).combine_chunks()
    with pa.OSFile(path, "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)


def join_index_file(kind: type, spec: Union[str, Sequence[str]], what: str, cache_dir: str) -> str:
    """Path of the index of ``spec`` under ``cache_dir``; built now (once, under a file lock) if absent.

    The name fingerprints the sources (path, size and mtime of every file), so changed sources get a new index. The
    index is written under a temporary name and renamed, so an interrupted build is never mistaken for a complete
    index.
    """
    from filelock import FileLock

    paths = _resolve_sources(spec, what)
    digest = hashlib.sha256(f"{kind.__name__} v{JOIN_INDEX_VERSION}\n".encode())
    for path in paths:
        stat = os.stat(path)
        digest.update(f"{os.path.abspath(path)}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    folder = os.path.join(cache_dir, "datacompdr-join-index")
    os.makedirs(folder, exist_ok=True)
    index_path = os.path.join(folder, f"{what}-{digest.hexdigest()[:32]}.arrow")
    with FileLock(index_path + ".lock"):
        if not os.path.exists(index_path):
            table = kind.build_table(paths)
            partial = f"{index_path}.{os.getpid()}.incomplete"
            _write_sorted_index(table, partial)
            os.replace(partial, index_path)
            logger.info("datacompdr: indexed %d %s rows from %d files into %s", table.num_rows, what, len(paths),
                        index_path)
    return index_path


_OPEN_INDEXES: dict[str, UidIndex] = {}  # per process: path -> memory-mapped index


def open_join_index(kind: type, path: str) -> UidIndex:
    if path not in _OPEN_INDEXES:
        _OPEN_INDEXES[path] = kind(path)
    return _OPEN_INDEXES[path]


# --------------------------------------------------------------------------------------------------------------------
# Sample assembly


def rescale_box(box: list[int], from_size: tuple[int, int], to_size: tuple[int, int]) -> list[int]:
    """Map ``[top, left, height, width]`` from an image of ``from_size`` (w, h) to one of ``to_size`` (w, h).

    Rounding may overshoot the border by one pixel; only that is clamped. A box that lies further out stays out
    (and the caller drops the sample).
    """
    scale_y, scale_x = to_size[1] / from_size[1], to_size[0] / from_size[0]
    top, left = int(round(box[0] * scale_y)), int(round(box[1] * scale_x))
    height, width = max(1, int(round(box[2] * scale_y))), max(1, int(round(box[3] * scale_x)))
    if top + height == to_size[1] + 1:
        height -= 1
    if left + width == to_size[0] + 1:
        width -= 1
    return [top, left, height, width]


def read_image_size(data: bytes, verify: bool = True) -> tuple[int, int]:
    """``(width, height)`` of the stored pixel grid: no EXIF rotation, since the crop boxes refer to that grid.

    With ``verify`` the whole file is decoded, so a truncated or corrupt image fails here and not in training.
    JPEGs are decoded at 1/8 scale (DCT scaling): all entropy-coded data is still read, for ~20 % less CPU.
    """
    with PIL.Image.open(io.BytesIO(data)) as img:
        size = img.size
        if verify:
            img.draft(None, (max(1, size[0] // 8), max(1, size[1] // 8)))
            img.load()
    return size


def _same_aspect(original: tuple[int, int], actual: tuple[int, int]) -> bool:
    """Whether ``actual`` (w, h) is a proportional resize of ``original``, up to rounding each side to a pixel."""
    relative = (actual[0] / original[0]) / (actual[1] / original[1]) - 1.0
    return abs(relative) <= 1.0 / min(actual) + 1e-9


def _box_fits(box: list[int], size: tuple[int, int]) -> bool:
    top, left, height, width = box
    return top >= 0 and left >= 0 and height > 0 and width > 0 and top + height <= size[1] and left + width <= size[0]


class _SampleAssembler:
    """Turns one :class:`RawSample` into an example dict, or raises :class:`DataCompDRSampleError`."""

    def __init__(self, settings: "DataCompDRMetadata", image_emb_key: str, total_dim: Optional[int]):
        self.layout = settings.layout
        self.embedding_format = settings.embedding_format
        self.syn_regex = re.compile(settings.syn_text_key_regex)
        self.image_emb_key = image_emb_key
        self.total_dim = total_dim

    def fail(self, reason, field_name, raw, shard, detail):
        raise DataCompDRSampleError(reason, field_name, raw.key, shard, detail)

    def decoded(self, raw, shard, field_name, decoder):
        if field_name not in raw.fields:
            self.fail("missing_member", field_name, raw, shard, f"no {raw.key}.{field_name} member")
        try:
            return decoder(raw.fields[field_name])
        except Exception as err:  # one undecodable member drops one sample (module docstring)
            self.fail("undecodable_member", field_name, raw, shard, f"{type(err).__name__}: {err}")

    def embeddings(self, raw, shard) -> tuple[str, dict[str, np.ndarray]]:
        fmt = self.embedding_format
        if fmt == "auto":
            fmt = "npz" if "npz" in raw.fields else "pth.gz"
        return fmt, self.decoded(raw, shard, fmt, EMBEDDING_DECODERS[fmt])

    def matrix(self, raw, shard, fmt, arrays, name, rows: Optional[int]) -> np.ndarray:
        field_name = f"{fmt}:{name}"
        if name not in arrays:
            self.fail("missing_member", field_name, raw, shard, f"arrays present: {sorted(arrays)}")
        array = arrays[name]
        if array.ndim != 2 or not np.issubdtype(array.dtype, np.floating):
            self.fail("bad_embedding", field_name, raw, shard,
                      f"expected a 2-D float array, got shape {array.shape} dtype {array.dtype}")
        if self.total_dim is not None and array.shape[1] != self.total_dim:
            self.fail("bad_embedding", field_name, raw, shard,
                      f"width {array.shape[1]} != {self.total_dim} (sum of the teachers' embedding_dim)")
        if rows is not None and array.shape[0] != rows:
            self.fail("count_mismatch", field_name, raw, shard, f"{array.shape[0]} rows, expected {rows}")
        array = np.ascontiguousarray(array, dtype=np.float32)
        if not np.isfinite(array).all():
            self.fail("bad_embedding", field_name, raw, shard, "contains NaN or inf")
        return array

    def synthetic_captions(self, raw, shard) -> tuple[list[tuple[str, list[str]]], int]:
        syn = self.decoded(raw, shard, "syn.json", decode_json)
        if not isinstance(syn, dict):
            self.fail("bad_syn_text", "syn.json", raw, shard, f"expected an object, got {type(syn).__name__}")
        selected = [(k, v) for k, v in syn.items() if self.syn_regex.match(k)]
        if not selected:
            self.fail("bad_syn_text", "syn.json", raw, shard,
                      f"no key matches syn_text_key_regex {self.syn_regex.pattern!r}; keys: {sorted(syn)}")
        for k, captions in selected:
            if not isinstance(captions, list) or not all(isinstance(c, str) for c in captions):
                self.fail("bad_syn_text", f"syn.json:{k}", raw, shard, "expected a list of strings")
        if not any(captions for _, captions in selected):
            self.fail("bad_syn_text", "syn.json", raw, shard, f"no synthetic caption under {[k for k, _ in selected]}")
        return selected, len(syn)

    def param_aug(self, raw, shard) -> list[dict]:
        paug = self.decoded(raw, shard, "paug.json", decode_json)
        if not isinstance(paug, dict) or "param_aug" not in paug:
            self.fail("bad_param_aug", "paug.json", raw, shard, "expected an object with the key 'param_aug'")
        try:
            return [p.to_features() for p in parse_param_aug(paug["param_aug"])]
        except ValueError as err:
            self.fail("bad_param_aug", "paug.json", raw, shard, str(err))

    def text_rows(self, raw, shard, fmt, arrays, selected, num_syn_keys):
        layout = self.layout
        if layout == "auto":
            layout = "raygen" if any(f"{k}_emb" in arrays for k, _ in selected) else "v1"
        if layout == "raygen":
            gt = self.matrix(raw, shard, fmt, arrays, "text_emb", None)
            if gt.shape[0] < 1:
                self.fail("count_mismatch", f"{fmt}:text_emb", raw, shard, "no ground-truth caption row")
            syn = [self.matrix(raw, shard, fmt, arrays, f"{k}_emb", len(captions)) for k, captions in selected]
            return np.concatenate([gt] + syn, axis=0), gt.shape[0]
        if num_syn_keys != 1:
            self.fail("count_mismatch", "syn.json", raw, shard,
                      f"layout v1 stores the synthetic rows in text_emb for exactly one key, found {num_syn_keys} "
                      f"keys and no <key>_emb arrays")
        # v1 (Apple's generator): row 0 embeds the ground-truth caption, row 1 + k embeds syn_text[k]. Any other count
        # means the captions and rows no longer line up, so the sample cannot be trusted.
        text = self.matrix(raw, shard, fmt, arrays, "text_emb", None)
        if text.shape[0] != 1 + len(selected[0][1]):
            self.fail("count_mismatch", f"{fmt}:text_emb", raw, shard,
                      f"{text.shape[0]} rows, expected 1 ground-truth row + {len(selected[0][1])} synthetic rows")
        return text, 1

    def __call__(self, raw: RawSample, shard: str, joins: "_Joins") -> dict:
        if raw.problem is not None:
            self.fail(raw.problem[0], raw.problem[1], raw, shard, raw.problem[2])
        param_aug = self.param_aug(raw, shard)
        selected, num_syn_keys = self.synthetic_captions(raw, shard)
        fmt, arrays = self.embeddings(raw, shard)
        image_emb = self.matrix(raw, shard, fmt, arrays, self.image_emb_key, len(param_aug))
        text_emb, num_gt = self.text_rows(raw, shard, fmt, arrays, selected, num_syn_keys)
        meta = self.decoded(raw, shard, "json", decode_json) if "json" in raw.fields else {}
        if not isinstance(meta, dict):
            self.fail("undecodable_member", "json", raw, shard, f"expected an object, got {type(meta).__name__}")
        key_base = raw.key.rpartition("/")[2].lower()
        uid = meta.get("uid") if isinstance(meta.get("uid"), str) else key_base
        if _HEX_UID.match(key_base) and uid.lower() != key_base:
            self.fail("uid_mismatch", "json", raw, shard, f"json uid {uid!r} != __key__")
        if not isinstance(meta.get("sha256", ""), (str, type(None))):
            self.fail("undecodable_member", "json", raw, shard, f"sha256 {meta['sha256']!r} is not a string")
        url = self.decoded(raw, shard, "url.txt", decode_text) if "url.txt" in raw.fields else None
        example = {
            "__key__": raw.key,
            "__url__": shard,
            "uid": uid,
            "url": url,
            "sha256": meta.get("sha256"),
            "syn_text": [c for _, captions in selected for c in captions],
            "syn_key": [k for k, captions in selected for _ in captions],
            "param_aug": param_aug,
            "image_emb": image_emb,
            "text_emb": text_emb,
            "num_gt_emb": num_gt,
        }
        joins.apply(example, raw, shard, self)
        return example


class _Joins:
    """The optional caption and image joins of one builder, over the index files built in ``_split_generators``."""

    def __init__(self, config: DataCompDRConfig, caption_index: Optional[str], image_index: Optional[str]):
        self.config = config
        self.captions = None if caption_index is None else open_join_index(CaptionIndex, caption_index)
        self.images = None if image_index is None else open_join_index(ImageIndex, image_index)

    def apply(self, example: dict, raw: RawSample, shard: str, assembler: _SampleAssembler) -> None:
        uid = example["uid"].lower()
        original_size = None
        if self.captions is not None:
            found = self.captions.get(uid)
            if found is None:
                assembler.fail("missing_caption", "text", raw, shard, f"uid {uid} not in captions=")
            example["text"], original_size = found
        if self.images is None:
            return
        ref = self.images.get(uid)
        if ref is None:
            assembler.fail("missing_image", "image", raw, shard, f"uid {uid} not in image_dir=")
        try:
            data = ref.read()
        except OSError as err:
            assembler.fail("unreadable_image", "image", raw, shard, f"{ref.path}: {type(err).__name__}: {err}")
        if self.config.check_sha256 and example["sha256"] and hashlib.sha256(data).hexdigest() != example["sha256"]:
            assembler.fail("sha256_mismatch", "image", raw, shard, f"{ref.name}: bytes differ from json sha256")
        try:
            size = read_image_size(data, verify=self.config.verify_images)
        except Exception as err:  # PIL raises many types for broken files; one broken image drops one sample
            assembler.fail("unreadable_image", "image", raw, shard, f"{ref.name}: {type(err).__name__}: {err}")
        original_size = original_size or ref.original_size
        rescaled = original_size is not None and tuple(original_size) != tuple(size)
        if rescaled and not _same_aspect(original_size, size):
            assembler.fail("image_size_mismatch", "image", raw, shard,
                           f"{ref.name} is {size[0]}x{size[1]}, not a resize of the recorded {original_size[0]}x"
                           f"{original_size[1]} original (cropped or padded?): its crop boxes cannot be mapped")
        for index, entry in enumerate(example["param_aug"]):
            box = entry["crop"]
            if rescaled:
                box = entry["crop"] = rescale_box(box, original_size, size)
            if not _box_fits(box, size):
                how = f" after rescaling from the original {original_size[0]}x{original_size[1]}" if rescaled else ""
                assembler.fail("crop_outside_image", f"param_aug[{index}].crop", raw, shard,
                               f"box [top, left, height, width] = {box} does not fit the {size[0]}x{size[1]} image "
                               f"{ref.name}{how}")
        if rescaled:
            _COUNTS["crop_rescaled"] += 1
        example.update(image={"bytes": data, "path": ref.name}, image_width=size[0], image_height=size[1],
                       crop_rescaled=rescaled)


# --------------------------------------------------------------------------------------------------------------------
# Features and metadata resolution


def build_features(total_dim: int, with_text: bool, with_image: bool) -> datasets.Features:
    columns = {
        "__key__": datasets.Value("string"),
        "__url__": datasets.Value("string"),
        "uid": datasets.Value("string"),
        "url": datasets.Value("string"),
        "sha256": datasets.Value("string"),
    }
    if with_text:
        columns["text"] = datasets.Value("string")
    columns.update({
        "syn_text": datasets.List(datasets.Value("string")),
        "syn_key": datasets.List(datasets.Value("string")),
        "param_aug": datasets.List({
            "crop": datasets.List(datasets.Value("int32"), length=4),
            "ops": datasets.List({"op": datasets.Value("int32"), "magnitude": datasets.Value("float64")}),
        }),
        "image_emb": datasets.Array2D(shape=(None, total_dim), dtype="float32"),
        "text_emb": datasets.Array2D(shape=(None, total_dim), dtype="float32"),
        "num_gt_emb": datasets.Value("int32"),
    })
    if with_image:
        columns.update({
            "image": datasets.Image(decode=False),
            "image_width": datasets.Value("int32"),
            "image_height": datasets.Value("int32"),
            "crop_rescaled": datasets.Value("bool"),
        })
    return datasets.Features(columns)


def _teachers_from_apple_config(data: dict, defaults: Optional[Sequence[dict]], where: str) -> list[dict]:
    models = [m.strip() for m in str(data["model_name"]).split(",")]
    pretrained = [p.strip() for p in str(data.get("pretrained", "")).split(",")]
    if len(pretrained) != len(models):
        pretrained = [None] * len(models)
    if defaults is None or len(defaults) != len(models):
        raise ValueError(f"{where} names teachers {models} but not their embedding widths; pass "
                         f"teachers=[{{'model': ..., 'embedding_dim': ...}}, ...] to load_dataset")
    return [dict(d, model=m, pretrained=p) for d, m, p in zip(defaults, models, pretrained)]


def read_config_json(path: str, defaults: Optional[Sequence[dict]], download_config=None) -> dict:
    """Metadata overrides from a ``config.json`` (ours or Apple's), as DataCompDRConfig field values."""
    with xopen(path, "rb", download_config=download_config) as f:
        data = json.loads(f.read().decode("utf-8"))
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object")
    out: dict[str, Any] = {}
    if "teachers" in data:
        if not isinstance(data["teachers"], list) or not data["teachers"]:
            raise ValueError(f"{path}: 'teachers' must be a non-empty list")
        for teacher in data["teachers"]:
            Teacher.from_dict(teacher, path)
        out["teachers"] = data["teachers"]
    elif "model_name" in data:
        out["teachers"] = _teachers_from_apple_config(data, defaults, path)
    if "num_augmentations" in data or "num_samples" in data:
        out["num_augmentations"] = data.get("num_augmentations", data.get("num_samples"))
    augmentation = data.get("augmentation") or data.get("reinforce", {}).get("image_augmentation")
    if augmentation is not None:
        out["augmentation"] = augmentation
    for name in ("seed", "layout", "embedding_format", "syn_text_key_regex", "embedding_source_dtype"):
        if name in data:
            out[name] = data[name]
    return out


def find_config_json(data_files: Optional[DataFilesDict], download_config=None) -> Optional[str]:
    """``config.json`` in the folder of the first shard, or one folder up; None if absent or not checkable."""
    if not data_files:
        return None
    first = next((files[0] for files in data_files.values() if files), None)
    if first is None:
        return None
    if "://" in str(first) and datasets.config.HF_HUB_OFFLINE:
        return None
    folder = xdirname(str(first))
    for candidate in (xjoin(folder, "config.json"), xjoin(xdirname(folder), "config.json")):
        try:
            if xexists(candidate, download_config=download_config):
                return candidate
        except Exception as err:  # remote lookups fail in many ways offline; metadata then comes from the config
            logger.warning("datacompdr: could not check %s (%s); using the builder config's metadata", candidate, err)
            return None
    return None


# --------------------------------------------------------------------------------------------------------------------
# The builder


class DataCompDR(datasets.GeneratorBasedBuilder):
    """DataCompDR / DFNDR reinforced shards with typed columns, optional image/caption joins and counted skips."""

    BUILDER_CONFIG_CLASS = DataCompDRConfig
    BUILDER_CONFIGS = named_configs()
    DEFAULT_CONFIG_NAME = "local"
    DEFAULT_WRITER_BATCH_SIZE = 100

    def __init__(self, *args, data_files=None, **kwargs):
        if data_files is not None and not isinstance(data_files, DataFilesDict):
            data_files = expand_data_files(data_files)
        self.metadata: Optional[DataCompDRMetadata] = None
        super().__init__(*args, data_files=data_files, **kwargs)

    # ---- metadata
    def _resolve_metadata(self) -> DataCompDRMetadata:
        """Config defaults, overridden by config.json, overridden by the user's keywords (``teachers=`` ...)."""
        config = self.config
        names = ("teachers", "num_augmentations", "augmentation", "layout", "embedding_format",
                 "syn_text_key_regex", "embedding_source_dtype")
        values = {name: getattr(config, name) for name in names}
        values["seed"], source = None, f"builder config {config.name!r}"
        path = find_config_json(config.data_files) if config.read_config_json else None
        if path is not None:
            user_given = set(self.config_kwargs)
            values.update({k: v for k, v in read_config_json(path, config.teachers).items() if k not in user_given})
            source = path
        teachers = tuple(Teacher.from_dict(t, source) for t in values.pop("teachers") or ())
        return DataCompDRMetadata(teachers=teachers, source=source, **values)

    def _describe(self) -> str:
        return f"{self.config.description or 'DataCompDR-layout shards'}\n{METADATA_PREFIX}{self.metadata.to_json()}"

    def _features(self) -> datasets.Features:
        return build_features(self.metadata.total_dim, self.config.captions is not None,
                              self.config.image_dir is not None)

    def _info(self) -> datasets.DatasetInfo:
        self.config.validate()
        self.metadata = self._resolve_metadata()
        info = datasets.DatasetInfo(
            description=self.config.description or "",
            homepage=f"https://huggingface.co/datasets/{self.config.hub_repo}" if self.config.hub_repo else "",
            license="DataCompDR: apple-amlr; DFNDR: cc-by-nc-nd-4.0 (non-commercial research only)"
            if self.config.hub_repo else "",
        )
        if self.metadata.teachers:  # else ('local' data, no metadata): inferred in _split_generators
            info.description, info.features = self._describe(), self._features()
        return info

    def _infer_teachers(self, tar_paths: list[str], download_config) -> None:
        """No metadata anywhere: D_total from the first sample that decodes; the per-teacher split is unknown."""
        assembler = _SampleAssembler(self.metadata, self.config.image_emb_key, None)
        no_joins = _Joins(self.config, None, None)
        for tar_path in tar_paths:
            for raw in iter_raw_samples(tar_path, download_config):
                try:
                    example = assembler(raw, tar_path, no_joins)
                except DataCompDRSampleError:
                    continue
                dim = int(example["image_emb"].shape[1])
                logger.warning("datacompdr: no teachers= and no config.json next to the shards; D_total=%d inferred "
                               "from %s, per-teacher split unknown", dim, tar_path)
                self.metadata = dataclasses.replace(self.metadata, teachers=(Teacher("unknown", None, dim),),
                                                    source=f"inferred from {tar_path}")
                return
        raise ValueError(f"no valid DataCompDR sample in {tar_paths} to infer the embedding width from; pass "
                         f"teachers=[{{'model': ..., 'embedding_dim': ...}}, ...]")

    # ---- generation
    def _split_generators(self, dl_manager):
        if not self.config.data_files:
            raise ValueError(
                f"config {self.config.name!r} has no data files; pass data_files= (e.g. "
                f"data_files='shards/{{00000..00015}}.tar') or choose one of the Hub configs "
                f"{[c.name for c in self.BUILDER_CONFIGS if c.data_files]}"
            )
        # The join indexes are built here, once (the main process of each rank; the others wait on a file lock), and
        # memory-mapped by every generator process; a wrong path fails now, not at the first sample.
        join_indexes = {
            f"{what}_index": None if spec is None else join_index_file(kind, spec, what, self._cache_dir_root)
            for kind, spec, what in ((CaptionIndex, self.config.captions, "captions"),
                                     (ImageIndex, self.config.image_dir, "image_dir"))
        }
        data_files = dl_manager.download(self.config.data_files)
        download_config = dl_manager.download_config
        if self.info.features is None:
            if self.metadata is None or not self.metadata.teachers:
                self.metadata = self.metadata or self._resolve_metadata()
                self._infer_teachers(list(next(iter(data_files.values()))), download_config)
            self.info.features, self.info.description = self._features(), self._describe()
        elif self.metadata is None:  # restored from a prepared cache: the description carries the metadata
            self.metadata = get_metadata(self.info)
        return [
            # Only the shard list is a list: datasets shards gen_kwargs over lists (split_dataset_by_node, workers).
            datasets.SplitGenerator(name=split, gen_kwargs={"tar_paths": list(paths),
                                                            "download_config": download_config, **join_indexes})
            for split, paths in data_files.items()
        ]

    def _generate_shards(self, tar_paths, download_config, captions_index, image_dir_index):
        yield from tar_paths

    def _generate_examples(self, tar_paths, download_config, captions_index, image_dir_index):
        total_dim = self.info.features["image_emb"].shape[1]
        assembler = _SampleAssembler(self.metadata or get_metadata(self.info), self.config.image_emb_key, total_dim)
        joins = _Joins(self.config, captions_index, image_dir_index)
        for shard_idx, tar_path in enumerate(tar_paths):
            shard_counts: Counter = Counter()
            yielded = 0
            for example_idx, raw in enumerate(iter_raw_samples(tar_path, download_config)):
                try:
                    example = assembler(raw, tar_path, joins)
                except DataCompDRSampleError as err:
                    if self.config.strict:
                        raise
                    _record_skip(err, shard_counts)
                    continue
                _COUNTS["yielded"] += 1
                yielded += 1
                yield Key(shard_idx, example_idx), example
            skipped = sum(shard_counts.values())
            logger.log(logging.WARNING if skipped else logging.INFO,
                       "datacompdr: shard %s: yielded %d, skipped %d%s", tar_path, yielded, skipped,
                       f" {dict(shard_counts)}" if skipped else "")


# --------------------------------------------------------------------------------------------------------------------
# load_dataset("datacompdr", ...) support (wired up in dataset_scripts/__init__.py)


def dataset_module(data_files=None, data_dir=None, download_config=None):
    """The ``DatasetModule`` that ``load_dataset("datacompdr", ...)`` resolves to.

    Unlike the generic packaged-module factory it never scans the working directory when no ``data_files`` are
    given (the config's Hub defaults apply), and it expands webdataset brace ranges in ``data_files``.
    """
    from pathlib import Path

    from datasets.load import BuilderConfigsParameters, DatasetModule
    from datasets.packaged_modules import _PACKAGED_DATASETS_MODULES

    module_path, module_hash = _PACKAGED_DATASETS_MODULES[NAME]
    builder_kwargs: dict[str, Any] = {"dataset_name": NAME}
    if data_files is not None or data_dir is not None:
        base_path = Path(data_dir or "").expanduser().resolve().as_posix()
        patterns = sanitize_patterns(expand_data_files(data_files)) if data_files is not None else {
            "train": ["**/*.tar"]}
        builder_kwargs["data_files"] = DataFilesDict.from_patterns(
            patterns, download_config=download_config, base_path=base_path)
    return DatasetModule(
        module_path, module_hash, builder_kwargs,
        builder_configs_parameters=BuilderConfigsParameters(
            builder_configs=named_configs(), default_config_name=DataCompDR.DEFAULT_CONFIG_NAME),
    )
