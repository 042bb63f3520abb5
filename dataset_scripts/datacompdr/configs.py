"""The DataCompDR builder configs: one per published flavour (Hub repo, key layout, teachers...) plus ``local``.

Configs: ``12m`` (``apple/DataCompDR-12M``, fp32 ``npz``), ``12m-bf16`` (``apple/DataCompDR-12M-bf16``, bf16
``pth.gz``), ``1b`` (``apple/DataCompDR-1B``), ``dfndr-2b``, ``dfndr-12m``, ``dfndr-12m-bf16`` (``apple/DFNDR-*``),
and ``local`` (the default; any shards in this layout, e.g. written by our reinforcement tool). The named configs
default to ``hf://datasets/apple/<repo>`` shards; those defaults need the network and are not exercised by the
offline tests (the DFNDR shard paths are not verified: ``**/*.tar``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Optional, Sequence, Union

import datasets
from datasets.data_files import DataFilesPatternsDict

from ..augment_replay import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD
from .metadata import Teacher

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
        dedupe_uids: index the uids of local ``.tar`` shards once and skip every sample whose uid repeats with
            different bytes (identical copies: the first is kept), as ``duplicate_uid`` (:mod:`.shard_uids`).
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
    dedupe_uids: bool = True

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
