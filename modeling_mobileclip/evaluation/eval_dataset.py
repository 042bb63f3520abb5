"""One evaluation split and the roles of its columns: which holds the images, the labels (and their class names), the
captions. Used by the evaluation CLI and by train_accelerate's held-out evaluation.

A split comes from a local imagefolder, a `save_to_disk` directory, a parquet file or a hub dataset id; columns are
found from the features (the first `Image`, the first `ClassLabel`) or, failing that, from common column names.
"""

import re
import sys
from pathlib import Path

import datasets

from .prompts import load_classnames

# Column names tried, in order, when the features do not say which column is which.
IMAGE_COLUMN_NAMES = ("image", "img", "jpg", "jpeg", "png", "webp")
LABEL_COLUMN_NAMES = ("label", "labels", "cls", "class")
CAPTION_COLUMN_NAMES = ("captions", "caption", "sentences", "texts", "text", "txt", "raw")
# Split used when --split is not given and the dataset has several.
SPLIT_PREFERENCE = ("test", "validation", "val")

_WORDNET_ID = re.compile(r"^n\d{8}$")


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
