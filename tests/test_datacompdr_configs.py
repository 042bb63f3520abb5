"""The named configs of `datacompdr` (dataset_scripts/datacompdr/configs.py): each reads its published layout, and
without data_files they read Apple's Hub repos (served by the in-process fake Hub)."""

import json

import numpy as np
import pytest
from datasets import Array2D, load_dataset

import dataset_scripts  # noqa: F401  (registers load_dataset("datacompdr"))
from datacompdr_shards import (
    fresh_datacompdr_stats,  # noqa: F401  (autouse fixture: each test starts at zero counts)
    write_shards,
)
from dataset_scripts.datacompdr import DataCompDR, get_metadata

# name -> (Hub repo, shard pattern, key layout, embedding format, augmentations, synthetic-caption key, teachers
# in embedding order, distillation logit scales, source dtype): the published facts (docs/datacompdr.md sections 1, 3)
PUBLISHED = {
    "12m": ("apple/DataCompDR-12M", "*.tar", "v1", "npz", 30, "syn_text", ("openai", "datacomp_xl_s13b_b90k"),
            [100.0, 100.0], "float32"),
    "12m-bf16": ("apple/DataCompDR-12M-bf16", "*.tar", "v1", "pth.gz", 30, "syn_text",
                 ("openai", "datacomp_xl_s13b_b90k"), [100.0, 100.0], "bfloat16"),
    "1b": ("apple/DataCompDR-1B", "*/*.tar", "v1", "npz", 10, "syn_text", ("openai", "datacomp_xl_s13b_b90k"),
           [100.0, 100.0], "float32"),
    "dfndr-2b": ("apple/DFNDR-2B", "**/*.tar", "raygen", "npz", 2, "syn_text_dfn_mscoco38k",
                 ("hf-hub:apple/DFN2B-CLIP-ViT-L-14", "hf-hub:apple/DFN2B-CLIP-ViT-L-14-39B"), [70.0, 60.0], "float32"),
    "dfndr-12m": ("apple/DFNDR-12M", "**/*.tar", "raygen", "npz", 30, "syn_text_dfn_mscoco38k",
                  ("hf-hub:apple/DFN2B-CLIP-ViT-L-14", "hf-hub:apple/DFN2B-CLIP-ViT-L-14-39B"), [70.0, 60.0],
                  "float32"),
    "dfndr-12m-bf16": ("apple/DFNDR-12M-bf16", "**/*.tar", "raygen", "pth.gz", 30, "syn_text_dfn_mscoco38k",
                       ("hf-hub:apple/DFN2B-CLIP-ViT-L-14", "hf-hub:apple/DFN2B-CLIP-ViT-L-14-39B"), [70.0, 60.0],
                       "bfloat16"),
}


@pytest.mark.parametrize("name", list(PUBLISHED))
def test_every_named_config_reads_its_published_layout(tmp_path, name):
    repo, pattern, layout, fmt, n_aug, syn_key, teachers, scales, dtype = PUBLISHED[name]
    config = DataCompDR.builder_configs[name]
    assert config.hub_repo == repo and list(config.data_files["train"]) == [f"hf://datasets/{repo}/{pattern}"]
    syn = {syn_key: [f"caption {k}" for k in range(5)]}
    expected = write_shards(tmp_path, n_shards=1, per_shard=1, dim=1536, n_aug=n_aug, syn=syn, layout=layout,
                            fmt=fmt)
    ds = load_dataset("datacompdr", name, data_files=str(tmp_path / "00000.tar"), split="train", streaming=True)
    assert ds.features["image_emb"] == Array2D(shape=(None, 1536), dtype="float32")
    (example,) = list(ds)
    want = expected[example["uid"]]
    np.testing.assert_array_equal(example["image_emb"], want["image_emb"])
    np.testing.assert_array_equal(example["text_emb"], want["text_emb"])
    assert example["image_emb"].shape == (n_aug, 1536) and example["text_emb"].shape == (6, 1536)
    assert example["syn_key"] == [syn_key] * 5 and example["num_gt_emb"] == 1
    meta = get_metadata(ds)
    assert tuple(t.model if t.pretrained is None else t.pretrained for t in meta.teachers) == teachers
    assert meta.embedding_dims == [768, 768] and meta.logit_scales == scales and meta.num_augmentations == n_aug
    assert (meta.layout, meta.embedding_format, meta.embedding_source_dtype) == (layout, fmt, dtype)


def test_hub_configs_read_apples_repos(tmp_path):
    """No data_files: "12m" reads the root shards of apple/DataCompDR-12M (streaming and map-style), "1b" the folder
    shards of apple/DataCompDR-1B and its root config.json, served by the in-process fake Hub (tests/fake_hub.py)."""
    from fake_hub import FakeHub
    from huggingface_hub import HfFileSystem

    write_shards(tmp_path / "12m", n_shards=2, per_shard=2, dim=1536, n_aug=30,
                 syn={"syn_text": [f"c{k}" for k in range(5)]})
    write_shards(tmp_path / "1b", n_shards=2, per_shard=1, dim=1536, n_aug=10,
                 syn={"syn_text": [f"c{k}" for k in range(5)]})
    hub = FakeHub()
    readme = b"---\nlicense: other\n---\n"
    hub.add_commit("apple/DataCompDR-12M", {"README.md": readme, **{
        f"{k:08d}.tar": (tmp_path / "12m" / f"{k:05d}.tar").read_bytes() for k in range(2)}}, repo_type="dataset")
    apple_1b_config = {  # training/configs/datacompdr1b.json, shortened
        "model_name": "ViT-L-14,ViT-L-14", "num_samples": 10, "pretrained": "openai,datacomp_xl_s13b_b90k",
        "reinforce": {"image_augmentation": {"rand_augment": {"enable": True, "p": 1.0},
                                             "random_resized_crop": {"interpolation": "bicubic", "size": 224}}}}
    hub.add_commit("apple/DataCompDR-1B", {"README.md": readme, "config.json": json.dumps(apple_1b_config).encode(), **{
        f"{k:02d}/00000000.tar": (tmp_path / "1b" / f"{k:05d}.tar").read_bytes() for k in range(2)}},
        repo_type="dataset")
    with hub.install(cache_dir=tmp_path / "hub-cache"):
        try:
            streamed = load_dataset("datacompdr", "12m", streaming=True, split="train")
            assert streamed.num_shards == 2
            urls = [e["__url__"] for e in streamed]
            assert urls == ["hf://datasets/apple/DataCompDR-12M/00000000.tar"] * 2 + [
                "hf://datasets/apple/DataCompDR-12M/00000001.tar"] * 2
            table = load_dataset("datacompdr", "12m", split="train", cache_dir=str(tmp_path / "cache"))
            assert table.num_rows == 4 and table.features["image_emb"].shape == (None, 1536)
            one_b = load_dataset("datacompdr", "1b", streaming=True, split="train")
            assert [e["image_emb"].shape for e in one_b] == [(10, 1536)] * 2
        finally:  # fsspec keeps HfFileSystem instances with their listings: later tests must not see the fake repos
            HfFileSystem.clear_instance_cache()
    meta = get_metadata(one_b)
    assert meta.source == "hf://datasets/apple/DataCompDR-1B/config.json" and meta.num_augmentations == 10
    assert [t.pretrained for t in meta.teachers] == ["openai", "datacomp_xl_s13b_b90k"]
    assert meta.embedding_dims == [768, 768]  # Apple's config names the teachers; the widths come from the config
