"""Dataset-level DataCompDR metadata: the teachers in embedding order and the facts a distillation loop needs.

Teachers in embedding order with their widths and default distillation logit scales, number of augmentations,
augmentation config, layout, source dtype: ``get_metadata(ds)`` / ``builder.metadata``; it is also serialised in
``ds.info.description``. Sources, in order of precedence: the ``teachers=`` keyword, a ``config.json`` next to the
shards (or one folder up), the named config's defaults; for ``local`` data with none of these, D_total is inferred
from the first sample and the per-teacher split is unknown.

``config.json`` (written by the reinforcement tool)::

    {"teachers": [{"model": "ViT-L-14", "pretrained": "openai", "embedding_dim": 768, "logit_scale": 100.0}, ...],
     "num_augmentations": 30, "augmentation": AugmentationSampler.to_config(), "seed": 0,
     "layout": "raygen", "embedding_format": "npz", "syn_text_key_regex": "^syn_text.*$", "num_captions": 5}

``"num_captions": 0`` (the tool run with ``--captioner none``) declares shards without synthetic captions: their
``syn_text`` lists are empty, and only the ground-truth caption is embedded.

Apple's own ``config.json`` (``{"model_name": "A,B", "pretrained": "a,b", "num_samples": N, "reinforce": ...}``)
is read too; it has no widths, so those come from the named config (or ``teachers=``).
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from typing import Any, Optional, Sequence

import datasets
import numpy as np
from datasets.data_files import DataFilesDict
from datasets.utils.file_utils import xdirname, xexists, xjoin, xopen

logger = logging.getLogger(__name__)

METADATA_PREFIX = "datacompdr-metadata: "


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
    num_captions: int | None = None  # synthetic captions per sample; 0: none (then empty syn_text is valid)

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
    resolved = getattr(obj, "metadata", None)  # set on a DataCompDR builder (which imports this module)
    if isinstance(resolved, DataCompDRMetadata) and resolved.teachers:
        return resolved
    info = obj if isinstance(obj, datasets.DatasetInfo) else getattr(obj, "info", None)
    description = getattr(info, "description", "") or ""
    for line in description.splitlines():
        if line.startswith(METADATA_PREFIX):
            return DataCompDRMetadata.from_json(line[len(METADATA_PREFIX):])
    raise ValueError(f"{type(obj).__name__} carries no DataCompDR metadata (was it loaded with the 'datacompdr' "
                     f"builder, and for 'local' data has it been prepared / streamed once?)")


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
    for name in ("seed", "layout", "embedding_format", "syn_text_key_regex", "embedding_source_dtype", "num_captions"):
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
