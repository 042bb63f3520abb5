"""Dataset cards (`hub_cards.dataset_card`) that make `load_dataset(<repo>)` work on the pushed repo, also on the
reinforcement tool's real output; a card needs a licence, its teachers and known columns."""

import gzip
import io
import json
import re
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from fake_hub import fake_hub_fixture  # noqa: F401  (provides the fake_hub fixture)
from hub_fixtures import (  # noqa: F401  (fixtures; one_torch_thread and private_tempdir are autouse)
    front_matter,
    one_torch_thread,
    private_tempdir_fixture,
)
from huggingface_hub import DatasetCardData
from PIL import Image

from hub_cards import generate_dataset_card, validate_card
from hub_cards.common import parse_card
from hub_cards.push import push_folder_to_hub


def reinforced_config(embedding_format: str) -> dict:
    return {
        "teachers": [{"model": "ViT-L-14", "pretrained": "openai", "embedding_dim": 4, "logit_scale": 100.0},
                     {"model": "ViT-B-16", "pretrained": "datacomp_xl_s13b_b90k", "embedding_dim": 3,
                      "logit_scale": 70.0}],
        "captioner": {"model": "coca_ViT-L-14", "pretrained": "mscoco_finetuned_laion2B-s13B-b90k"},
        "num_augmentations": 2, "seed": 1234, "layout": "v1", "embedding_format": embedding_format,
        "syn_text_key_regex": "^syn_text$",
        "augmentation": {"random_resized_crop": {"size": 224, "scale": [0.08, 1.0]}, "rand_augment": {"num_ops": 2}},
        "shard_pattern": "shards/*.tar", "num_samples": 4, "source_dataset": "mlfoundations/datacomp_small",
        "input_licenses": {"mlfoundations/datacomp_small": "CC-BY-4.0", "ViT-L-14 (openai)": "MIT"},
    }


def write_shards(folder: Path, embedding_format: str, total_dim: int = 7) -> list[dict]:
    """Two tar shards of two samples each in the DataCompDR v1 layout; returns what was written."""
    rng, written = np.random.default_rng(0), []
    for shard in range(2):
        folder.mkdir(parents=True, exist_ok=True)
        with tarfile.open(folder / f"{shard:05d}.tar", "w") as tar:
            for index in range(2):
                key = f"{shard:05d}{index:04d}"
                sample = {"syn_text": [f"caption {key} a", f"caption {key} b"],
                          "param_aug": [[[3, 5, 40, 41], [[0, 0.0], [6, 0.27]]], [[0, 1, 10, 12], []]],
                          "image_emb": rng.standard_normal((2, total_dim)).astype(np.float32),
                          "text_emb": rng.standard_normal((3, total_dim)).astype(np.float32), "key": key}
                members = {"url.txt": f"https://example.com/{key}.jpg".encode(),
                           "json": json.dumps({"uid": key * 2, "sha256": "0" * 64}).encode(),
                           "syn.json": json.dumps({"syn_text": sample["syn_text"]}).encode(),
                           "paug.json": json.dumps({"param_aug": sample["param_aug"]}).encode()}
                arrays = {"image_emb": sample["image_emb"], "text_emb": sample["text_emb"]}
                if embedding_format == "npz":
                    buffer = io.BytesIO()
                    np.savez(buffer, **arrays)
                    members["npz"] = buffer.getvalue()
                else:  # bf16 tensors, as DataCompDR-12M-bf16; the expected values are the bf16-rounded ones
                    tensors = {k: torch.from_numpy(v).bfloat16() for k, v in arrays.items()}
                    sample.update({k: t.float().numpy() for k, t in tensors.items()})
                    buffer = io.BytesIO()
                    torch.save(tensors, buffer)
                    members["pth.gz"] = gzip.compress(buffer.getvalue())
                for suffix, data in members.items():
                    info = tarfile.TarInfo(f"{key}.{suffix}")
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
                written.append(sample)
    return written


@pytest.mark.parametrize("embedding_format", ["npz", "pth.gz"])
def test_dataset_card_makes_load_dataset_work_on_the_hub_repo(fake_hub, tmp_path, embedding_format):
    from datasets import load_dataset

    config = reinforced_config(embedding_format)
    card = generate_dataset_card(config, repo_id="org/tiny-reinforced", license="cc-by-nc-4.0")
    meta = front_matter(str(card))
    assert meta["configs"] == [{"config_name": "default", "data_files": [{"split": "train", "path": "shards/*.tar"}]}]
    assert meta["license"] == "cc-by-nc-4.0" and meta["source_datasets"] == ["mlfoundations/datacomp_small"]
    body = card.text
    assert "| 0 | `ViT-L-14` | openai | 4 | 0:4 | 100.0 |" in body
    assert "| 1 | `ViT-B-16` | datacomp_xl_s13b_b90k | 3 | 4:7 | 70.0 |" in body
    assert "Captioner: `coca_ViT-L-14` (mscoco_finetuned_laion2B-s13B-b90k)" in body
    assert "seed: 1234" in body and '"num_ops": 2' in body
    assert "| Source image-text pairs | mlfoundations/datacomp_small | CC-BY-4.0 |" in body
    assert "| Teacher | ViT-L-14 (openai) | MIT |" in body
    assert ("| Teacher | ViT-B-16 (datacomp_xl_s13b_b90k) | not recorded in the run's config: check it before use |"
            in body)
    assert "| Captioner | coca_ViT-L-14 (mscoco_finetuned_laion2B-s13B-b90k) | not recorded" in body
    assert 'load_dataset("org/tiny-reinforced", split="train", streaming=True)' in body

    written = write_shards(tmp_path / "repo" / "shards", embedding_format)
    card.save(tmp_path / "repo" / "README.md")
    push_folder_to_hub(tmp_path / "repo", "org/tiny-reinforced", repo_type="dataset", commit_message="Add shards")
    assert set(fake_hub.files("org/tiny-reinforced", "dataset")) == {"README.md", "shards/00000.tar",
                                                                      "shards/00001.tar"}
    dataset = load_dataset("org/tiny-reinforced", split="train", cache_dir=str(tmp_path / "cache"))
    assert any(p.startswith("/datasets/org/tiny-reinforced/resolve/") and p.endswith("shards/00001.tar")
               for _, p in fake_hub.requests)
    assert list(dataset.features) == ["url.txt", "json", "syn.json", "paug.json", embedding_format, "__key__",
                                      "__url__"]
    assert len(dataset) == len(written)
    for row, sample in zip(dataset, written):
        assert row["__key__"] == sample["key"] and row["syn.json"]["syn_text"] == sample["syn_text"]
        assert row["paug.json"]["param_aug"] == sample["param_aug"]  # mixed int/list nesting survives (Json type)
        embeddings = row[embedding_format]
        np.testing.assert_array_equal(np.asarray(embeddings["image_emb"], np.float32), sample["image_emb"])
        np.testing.assert_array_equal(np.asarray(embeddings["text_emb"], np.float32), sample["text_emb"])


def assert_same_param_aug(loaded: list, stored: list) -> None:
    """Crop boxes and op indices exact; magnitudes to the 10 decimals `datasets.Json` keeps (it serialises with
    pandas' ujson, double_precision=10), as the card says."""
    assert [(crop, [op for op, _ in ops]) for crop, ops in loaded] == [(crop, [op for op, _ in ops])
                                                                      for crop, ops in stored]
    np.testing.assert_allclose([m for _, ops in loaded for _, m in ops], [m for _, ops in stored for _, m in ops],
                               rtol=0, atol=5e-11)


def test_reinforcement_tool_output_pushed_and_loaded_with_load_dataset(fake_hub, tmp_path):
    """The reinforcement tool's real output (images of two formats, ground-truth captions, no captioner): the card
    reads the columns from the shards, and `load_dataset(<repo>)` returns every stored value."""
    from datasets import load_dataset

    from dataset_scripts.reinforce import reinforce
    from dataset_scripts.tiny_reinforce_models import tiny_open_clip_clip

    rng = np.random.default_rng(0)
    (tmp_path / "data").mkdir()
    with tarfile.open(tmp_path / "data" / "00000.tar", "w") as tar:
        for key, fmt in (("a", "JPEG"), ("b", "PNG"), ("c", "JPEG")):
            buffer = io.BytesIO()
            Image.fromarray(rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)).save(buffer, format=fmt)
            members = {f"{key}.{'png' if fmt == 'PNG' else 'jpg'}": buffer.getvalue(),
                       f"{key}.txt": f"a photo number {key}".encode(), f"{key}.json": json.dumps({"uid": key}).encode()}
            for name, data in members.items():
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    teacher = tiny_open_clip_clip(str(tmp_path / "teacher"), image_size=32)
    out = tmp_path / "out"
    summary = reinforce(str(tmp_path / "data"), str(out), teachers=[teacher], teacher_logit_scales=[100.0],
                        num_augmentations=2, crop_size=32, seed=0, batch_size=4, progress=False, license="cc-by-4.0")
    card = generate_dataset_card(summary["config"], repo_id="org/reinforced", data_dir=out,
                                 license={"license": "cc-by-nc-4.0"})
    meta = front_matter(str(card))
    declared = [f["name"] for f in meta["dataset_info"]["features"]]
    assert declared == ["jpg", "png", "txt", "json", "syn.json", "paug.json", "npz", "__key__", "__url__"]
    assert "source_datasets" not in meta and meta["size_categories"] == "n<1K"  # a local folder is not a Hub id
    assert "local files (`data`)" in card.text and str(tmp_path) not in card.text
    assert "Captioner: none (no synthetic captions)" in card.text and "(stored in the shards)" in card.text
    card.save(out / "README.md")
    push_folder_to_hub(out, "org/reinforced", repo_type="dataset", ignore_patterns=["_manifest/*"])

    dataset = load_dataset("org/reinforced", split="train", cache_dir=str(tmp_path / "cache"))
    assert list(dataset.features) == declared and len(dataset) == 3
    (shard,) = sorted(out.glob("*.tar"))
    with tarfile.open(shard) as tar:
        stored = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}
    for row in dataset:
        key = row["__key__"]
        image_column = "png" if key == "b" else "jpg"
        assert row["png" if image_column == "jpg" else "jpg"] is None
        expected_image = np.asarray(Image.open(io.BytesIO(stored[f"{key}.{image_column}"])))
        np.testing.assert_array_equal(np.asarray(row[image_column]), expected_image)
        assert row["txt"] == f"a photo number {key}" and row["json"]["uid"] == key
        assert_same_param_aug(row["paug.json"]["param_aug"], json.loads(stored[f"{key}.paug.json"])["param_aug"])
        arrays = np.load(io.BytesIO(stored[f"{key}.npz"]))
        np.testing.assert_array_equal(np.asarray(row["npz"]["image_emb"], np.float32), arrays["image_emb"])
        np.testing.assert_array_equal(np.asarray(row["npz"]["text_emb"], np.float32), arrays["text_emb"])
    # the card's loading snippet runs as written against the Hub repo (streaming)
    (snippet,) = re.findall(r"```python\n(.*?)```", card.text, re.DOTALL)
    namespace = {}
    exec(snippet, namespace)
    assert namespace["sample"]["__key__"] == "a" and namespace["sample"]["txt"] == "a photo number a"


def test_dataset_card_needs_a_licence_teachers_and_known_columns(tmp_path):
    config = reinforced_config("npz")
    with pytest.raises(ValueError, match="No licence for the dataset: pass license= or set config\\['license'\\]"):
        generate_dataset_card(config)
    with pytest.raises(ValueError, match=r"config\['teachers'\]\[1\] is .*positive int 'embedding_dim'"):
        generate_dataset_card({**config, "teachers": [config["teachers"][0], {"model": "x"}]}, license="mit")
    with pytest.raises(ValueError, match=r"config\['embedding_format'\] is 'parquet'; expected 'npz' or 'pth.gz'"):
        generate_dataset_card({**config, "embedding_format": "parquet"}, license="mit")
    with pytest.raises(FileNotFoundError, match="holds no shards matching 'shards/\\*.tar'"):
        generate_dataset_card(config, license="mit", data_dir=tmp_path)
    write_shards(tmp_path / "shards", "pth.gz")
    with pytest.raises(ValueError, match=r"config\['embedding_format'\] says 'npz' but the shards hold \['pth.gz'\]"):
        generate_dataset_card(config, license="mit", data_dir=tmp_path)


def test_dataset_card_validates(fake_hub):
    card = generate_dataset_card(reinforced_config("npz"), repo_id="org/tiny-reinforced", license="cc-by-nc-4.0")
    validate_card(card)
    assert fake_hub.validated[-1]["repoType"] == "dataset"
    # huggingface_hub's own DatasetCard reads the metadata back strictly and unchanged
    parsed = parse_card(str(card), "dataset")
    assert isinstance(parsed.data, DatasetCardData) and parsed.data.to_dict() == front_matter(str(card))
