"""Dataset cards for reinforced image-text shards in the DataCompDR layout (the reinforcement tool's output).

    config = json.load(open("reinforced/config.json"))
    card = generate_dataset_card(config, repo_id="org/my-reinforced", license="cc-by-nc-4.0", data_dir="reinforced")
    card.save("reinforced/README.md")

The card's `configs` / `dataset_info` metadata make `load_dataset("org/my-reinforced")` read the tar shards with the
generic WebDataset loader and typed columns; its body records the teachers, captioner, augmentation and the licences
of every input. There is no default licence.
"""

from __future__ import annotations

import copy
import json
import os
import tarfile
from collections.abc import Mapping
from pathlib import Path

from huggingface_hub import DatasetCard, DatasetCardData

from .common import BIBTEX, REPO_ID, check_repo_id, licence_line, normalise_licence, public_name, teacher_rows

DATASET_CARD_TEMPLATE = Path(__file__).with_name("dataset_card.md.j2")
IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp", "bmp", "gif", "tif", "tiff")
NOT_RECORDED = "not recorded in the run's config: check it before use"


def _shard_columns(data_dir: str | os.PathLike, shard_pattern: str) -> tuple[set[str], int]:
    """(the WebDataset columns found in the shards, the number of samples), from the tar headers only."""
    shards = sorted(Path(data_dir).glob(shard_pattern))
    if not shards:
        raise FileNotFoundError(f"data_dir={str(data_dir)!r} holds no shards matching {shard_pattern!r} (the config's "
                                "shard_pattern); pass the folder the shards were written to.")
    columns, keys = set(), 0
    for shard in shards:
        with tarfile.open(shard) as tar:
            names = [Path(m.name).name for m in tar.getmembers() if m.isfile()]
        # the WebDataset loader splits a member name at its first dot: "000123.url.txt" -> key 000123, column url.txt
        columns.update(name.partition(".")[2] for name in names)
        keys += len({name.partition(".")[0] for name in names})
    return columns, keys


def _feature_schema(config: dict, total_dim: int, found: set[str] | None):
    """`datasets.Features` the generic WebDataset loader needs for shards in the reinforced layout, and the card's
    column table. `found`: the columns present in the shards (None: the layout the config describes)."""
    from datasets import Array2D, Features, Json, List, Value
    from datasets import Image as ImageFeature

    embedding_format = config.get("embedding_format", "npz")
    if embedding_format not in ("npz", "pth.gz"):
        raise ValueError(f"config['embedding_format'] is {embedding_format!r}; expected 'npz' or 'pth.gz'.")
    layout = config.get("layout", "v1")
    if layout not in ("v1", "raygen"):
        raise ValueError(f"config['layout'] is {layout!r}; expected 'v1' or 'raygen'.")
    syn_keys = config.get("syn_text_keys") or ["syn_text"]
    if isinstance(syn_keys, str) or not all(isinstance(k, str) and k for k in syn_keys):
        raise ValueError(f"config['syn_text_keys'] is {syn_keys!r}; give the list of synthetic-caption keys in "
                         "syn.json, e.g. ['syn_text'].")
    embedding = Array2D(shape=(None, total_dim), dtype="float32")
    embeddings = {"image_emb": embedding, "text_emb": embedding}
    if layout == "raygen":
        embeddings.update({f"{key}_emb": embedding for key in syn_keys})
    image_fields = config.get("image_field") or []
    image_fields = [image_fields] if isinstance(image_fields, str) else list(image_fields)
    known = {
        **{ext: (ImageFeature(), "the original image") for ext in IMAGE_EXTENSIONS},
        "txt": (Value("string"), "ground-truth caption"),
        "url.txt": (Value("string"), "image URL"),
        "json": ({"uid": Value("string"), "sha256": Value("string")}, "`uid` and the image's `sha256`"),
        "syn.json": ({key: List(Value("string")) for key in syn_keys}, "synthetic captions"),
        "paug.json": ({"param_aug": List(Json())},
                      "per augmentation: `[[i, j, h, w] crop box, [[op, magnitude], ...] RandAugment ops]`"),
        embedding_format: (embeddings, f"float32 [n, {total_dim}]: `image_emb` one row per augmentation; `text_emb` "
                           "ground-truth caption" + (" then one row per synthetic caption" if layout == "v1" else
                                                     "; `<key>_emb` per synthetic caption")
                           + (" (stored as bfloat16)" if embedding_format == "pth.gz" else "")),
    }
    if found is None:
        found = {*image_fields, "url.txt", "json", "syn.json", "paug.json", embedding_format}
    unknown = sorted(found - set(known))
    if unknown:
        other = {"npz", "pth.gz"} - {embedding_format}
        hint = (f"config['embedding_format'] says {embedding_format!r} but the shards hold {sorted(other & found)}"
                if other & found else f"known columns: {', '.join(sorted(known))}")
        raise ValueError(f"The shards hold column(s) {unknown} that the dataset card cannot type ({hint}).")
    features, rows = {}, []
    for name in sorted(found, key=list(known).index):  # images first, then the DataCompDR order
        feature, content = known[name]
        features[name] = feature
        rows.append(dict(name=name, type=_describe_feature(feature), content=content))
    features["__key__"] = Value("string")
    features["__url__"] = Value("string")
    rows += [dict(name="__key__", type="string", content="sample key"),
             dict(name="__url__", type="string", content="shard path")]
    return Features(features), rows


def _describe_feature(feature) -> str:
    if isinstance(feature, dict):
        return "struct{" + ", ".join(f"{k}: {_describe_feature(v)}" for k, v in feature.items()) + "}"
    kind = type(feature).__name__
    if kind == "Value":
        return feature.dtype
    if kind == "List":
        return f"list<{_describe_feature(feature.feature)}>"
    if kind == "Array2D":
        return f"{feature.dtype}[n, {feature.shape[1]}]"
    return kind.lower()


def _size_category(n: int | None) -> str | None:
    if n is None:
        return None
    for bound, label in ((1e3, "n<1K"), (1e4, "1K<n<10K"), (1e5, "10K<n<100K"), (1e6, "100K<n<1M"),
                         (1e7, "1M<n<10M"), (1e8, "10M<n<100M"), (1e9, "100M<n<1B"), (1e10, "1B<n<10B")):
        if n < bound:
            return label
    return "n>1T" if n > 1e12 else "10B<n<100B"


def _hub_dataset_id(source) -> str | None:
    """`source` when it names a Hub dataset; None for local files (the reinforcement tool records its --dataset, which
    may be a folder on this machine)."""
    source = str(source)
    if REPO_ID.match(source) and not source.startswith((".", "/")) and not Path(source).exists():
        return source
    return None


def _source_text(source) -> str:
    return _hub_dataset_id(source) or f"local files (`{Path(str(source)).name}`)"


def _named(model: str, pretrained) -> str:
    return f"{public_name(model)} ({pretrained})" if pretrained else public_name(model)


def _input_licences(config: dict) -> list[dict]:
    """One row per input the data derives from (source pairs, each teacher, the captioner), with the licence given in
    `config["input_licenses"]` (keyed by the input's name as shown, or as recorded in the config) or on the entry
    itself (`"license"`; `"source_license"` for the source pairs)."""
    given = config.get("input_licenses") or {}
    if not isinstance(given, Mapping):
        raise TypeError(f"config['input_licenses'] is {given!r}; give {{input name: licence}}.")
    inputs = []  # (kind, name shown, names it may be keyed by, its own licence)
    source = config.get("source_dataset")
    if source:
        inputs.append(("Source image-text pairs", _source_text(source), {str(source)}, config.get("source_license")))
    for teacher in config["teachers"]:
        name = _named(teacher["model"], teacher.get("pretrained"))
        inputs.append(("Teacher", name, {str(teacher["model"])}, teacher.get("license")))
    captioner = config.get("captioner")
    if isinstance(captioner, Mapping) and captioner.get("model"):
        name = _named(captioner["model"], captioner.get("pretrained"))
        inputs.append(("Captioner", name, {str(captioner["model"])}, captioner.get("license")))
    elif isinstance(captioner, str) and captioner:
        inputs.append(("Captioner", public_name(captioner), {captioner}, None))
    rows, used = [], set()
    for kind, name, aliases, own in inputs:
        key = next((k for k in (name, *sorted(aliases)) if k in given), None)
        used.add(key)
        rows.append(dict(kind=kind, name=name, license=given[key] if key is not None else own or NOT_RECORDED))
    rows += [dict(kind="Other input", name=name, license=licence) for name, licence in given.items()
             if name not in used]
    return rows


def generate_dataset_card(config: dict, repo_id: str | None = None, *, license: str | Mapping | None = None,
                          pretty_name: str | None = None, data_dir: str | os.PathLike | None = None) -> DatasetCard:
    """Dataset card for reinforced shards, from the reinforcement run's config dict (its `config.json`).

    Read from `config`: `teachers` (required), `captioner` (str or {"model", "pretrained"}), `augmentation`,
    `num_augmentations`, `seed`, `layout` ("v1"/"raygen"), `embedding_format` ("npz"/"pth.gz"),
    `syn_text_key_regex` / `syn_text_keys`, `shard_pattern` (default "*.tar"), `image_field` (image extension(s) in
    the shards), `num_samples`, `source_dataset`, `input_licenses` ({input name: licence}; teachers and captioner may
    also carry a "license"), `license`, `description`. The licence has no default: pass `license=` or set
    `config["license"]`.

    `data_dir`: the folder holding the shards. The columns (which image extensions, a ground-truth `txt`, ...) and
    the sample count are then read from the tar headers instead of assumed from the config.
    """
    if not isinstance(config, Mapping):
        raise TypeError(f"config is a {type(config).__name__}; pass the reinforcement run's config dict.")
    config = dict(copy.deepcopy(config))
    check_repo_id("repo_id", repo_id)
    license = license if license is not None else config.get("license")
    if license is None:
        raise ValueError("No licence for the dataset: pass license= or set config['license']. It must respect the "
                         "inputs' terms (source images and captions, teacher models, captioner), e.g. "
                         "'cc-by-nc-4.0'; there is no default.")
    licence = normalise_licence(license)
    teachers = teacher_rows(config.get("teachers"), "config['teachers']")
    total_dim = sum(t["embedding_dim"] for t in teachers)
    shard_pattern = config.get("shard_pattern", "*.tar")
    if not isinstance(shard_pattern, str) or not shard_pattern.endswith(".tar"):
        raise ValueError(f"config['shard_pattern'] is {shard_pattern!r}; give a glob of the tar shards relative to "
                         "the repo root, e.g. '*.tar' or 'shards/*.tar'.")
    found, num_samples = _shard_columns(data_dir, shard_pattern) if data_dir is not None else (None, None)
    num_samples = config.get("num_samples", num_samples)
    features, schema_rows = _feature_schema(config, total_dim, found)
    captioner = config.get("captioner", "not recorded in the config")
    has_captioner = captioner is not None
    if isinstance(captioner, Mapping):
        pretrained = captioner.get("pretrained")
        captioner = f"`{public_name(captioner.get('model'))}`" + (f" ({pretrained})" if pretrained else "")
    elif isinstance(captioner, str):
        captioner = public_name(captioner)
    elif captioner is None:
        captioner = "none (no synthetic captions)"
    source = config.get("source_dataset")
    name = pretty_name or (repo_id.split("/")[-1] if repo_id else "Reinforced image-text dataset")
    card_data = DatasetCardData(
        pretty_name=name, **licence, task_categories=["zero-shot-image-classification"],
        tags=["mobileclip", "clip", "knowledge-distillation", "reinforced-dataset", "webdataset"],
        size_categories=_size_category(num_samples),
        source_datasets=[_hub_dataset_id(source)] if source and _hub_dataset_id(source) else None,
        configs=[{"config_name": "default", "data_files": [{"split": "train", "path": shard_pattern}]}],
        dataset_info={"features": features._to_yaml_list()},
    )
    syn_keys = config.get("syn_text_keys") or ["syn_text"]
    return DatasetCard.from_template(
        card_data, template_path=str(DATASET_CARD_TEMPLATE),
        title=name, description=config.get("description", ""), repo_id=repo_id or "<namespace>/<dataset-name>",
        shard_pattern=shard_pattern, schema_rows=schema_rows, teachers=teachers, total_dim=total_dim,
        captioner=captioner,
        syn_keys=", ".join(f"`{k}`" for k in syn_keys) + (f" (regex `{config['syn_text_key_regex']}`)"
                                                          if config.get("syn_text_key_regex") else ""),
        num_augmentations=config.get("num_augmentations", "not recorded"),
        num_augmentations_text=config.get("num_augmentations", "several"), num_samples=num_samples,
        seed=config.get("seed", "not recorded"), layout=config.get("layout", "v1"),
        embedding_format=config.get("embedding_format", "npz"),
        source_dataset=_source_text(source) if source else None,
        augmentation_json=json.dumps(config.get("augmentation"), indent=2, sort_keys=True),
        licence_text=f"This dataset is released under {licence_line(licence)}.",
        input_licenses=_input_licences(config), bibtex=BIBTEX,
        has_captioner=has_captioner, has_images=any(row["name"] in IMAGE_EXTENSIONS for row in schema_rows),
    )
