"""The `datacompdr` builder on shards written here, member by member, in the published layouts.

Every shard is a real tar (Python's tarfile) of `{uid}.url.txt`, `{uid}.json`, `{uid}.syn.json`, `{uid}.paug.json`
and `{uid}.npz` (numpy) or `{uid}.pth.gz` (torch.save + gzip of bfloat16 tensors); images are real JPEG/PNG files.
"""

import gzip
import hashlib
import io
import json
import logging
import os
import random
import socket
import subprocess
import sys
import tarfile
from pathlib import Path

import datasets
import numpy as np
import PIL.Image
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from datasets import Array2D, Image, List, Value, load_dataset, load_dataset_builder
from datasets.distributed import split_dataset_by_node

import dataset_scripts  # noqa: F401  (registers load_dataset("datacompdr"))
from dataset_scripts import augment_replay
from dataset_scripts.datacompdr import (
    DataCompDR,
    DataCompDRSampleError,
    datacompdr_stats,
    expand_braces,
    get_metadata,
    reset_datacompdr_stats,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
TEACHERS = [  # deliberately unequal widths, so a swapped or hard-coded split shows
    {"model": "teacher-a", "pretrained": "tag-a", "embedding_dim": 6, "logit_scale": 70.0},
    {"model": "teacher-b", "pretrained": None, "embedding_dim": 10, "logit_scale": 60.0},
]
D_SMALL = 16


# ---------------------------------------------------------------------------------------------------------------------
# Writing shards


def uid_of(shard: int, index: int) -> str:
    return f"{shard:08x}{index:024x}"


def npz_bytes(**arrays) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def pth_gz_bytes(**tensors) -> bytes:
    buffer = io.BytesIO()
    torch.save(tensors, buffer)
    return gzip.compress(buffer.getvalue())


def make_sample(uid, rng, *, dim=D_SMALL, n_aug=3, syn=None, layout="v1", fmt="npz", image_size=(320, 240),
                param_aug_as_string=False, param_aug=None):
    """Members of one sample and the values the builder must return for it."""
    syn = syn if syn is not None else {"syn_text": [f"synthetic {uid[-3:]} {k}" for k in range(2)]}
    nrng = np.random.default_rng(int(uid, 16) % 2**32)
    param_aug = param_aug or [augment_replay.sample_params(rng, image_size) for _ in range(n_aug)]

    def draw(rows):  # bf16 shards: draw values that bf16 represents exactly, so the expectation is exact
        values = nrng.standard_normal((rows, dim)).astype(np.float32)
        return torch.from_numpy(values).to(torch.bfloat16).float().numpy() if fmt == "pth.gz" else values

    image_emb, gt = draw(len(param_aug)), draw(1)
    syn_embs = {k: draw(len(v)) for k, v in syn.items()}
    if layout == "v1":
        arrays = {"image_emb": image_emb, "text_emb": np.concatenate([gt] + list(syn_embs.values()))}
    else:
        arrays = {"image_emb": image_emb, "text_emb": gt, **{f"{k}_emb": v for k, v in syn_embs.items()}}
    if fmt == "npz":
        emb_member = ("npz", npz_bytes(**arrays))
    else:
        emb_member = ("pth.gz", pth_gz_bytes(**{k: torch.from_numpy(v).to(torch.bfloat16) for k, v in arrays.items()}))
    stored_param_aug = json.dumps(param_aug) if param_aug_as_string else param_aug
    members = {
        "url.txt": f"https://example.com/{uid}.jpg".encode(),
        "json": json.dumps({"uid": uid, "sha256": f"sha-{uid}"}).encode(),
        "syn.json": json.dumps(syn).encode(),
        "paug.json": json.dumps({"param_aug": stored_param_aug}).encode(),
        emb_member[0]: emb_member[1],
    }
    # all caption rows in syn.json order (tests that select a subset slice this)
    expected_text = np.concatenate([gt] + list(syn_embs.values()))
    expected = {"uid": uid, "param_aug": param_aug, "image_emb": image_emb, "text_emb": expected_text,
                "syn_text": [c for v in syn.values() for c in v], "syn_key": [k for k, v in syn.items() for _ in v]}
    return members, expected


def write_tar(path, samples):
    """``samples``: list of (key, {field: bytes}); members are written in order, as webdataset writers do."""
    with tarfile.open(path, "w") as tar:
        for key, members in samples:
            for field_name, data in members.items():
                info = tarfile.TarInfo(f"{key}.{field_name}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return str(path)


def write_shards(folder, n_shards=2, per_shard=3, **sample_kwargs):
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(0)
    expected = {}
    for shard in range(n_shards):
        samples = []
        for index in range(per_shard):
            uid = uid_of(shard, index)
            members, expected[uid] = make_sample(uid, rng, **sample_kwargs)
            samples.append((uid, members))
        write_tar(folder / f"{shard:05d}.tar", samples)
    return expected


def jpeg_bytes(size, seed=0, fmt="JPEG", mode="RGB"):
    arr = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], len(mode)), dtype=np.uint8)
    buffer = io.BytesIO()
    PIL.Image.fromarray(arr.squeeze(), mode).save(buffer, format=fmt)
    return buffer.getvalue()


def keys_of(ds):
    return [example["__key__"] for example in ds]


@pytest.fixture(autouse=True)
def _fresh_stats():
    reset_datacompdr_stats()
    yield


# ---------------------------------------------------------------------------------------------------------------------
# Columns, dtypes, layouts, metadata


def test_12m_layout_every_column_and_dtype(tmp_path):
    """Exact DataCompDR-12M layout (30 augs, 5 captions, 2 x 768) through the '12m' config with local shards."""
    expected = write_shards(tmp_path / "shards", n_shards=1, per_shard=2, dim=1536, n_aug=30,
                            syn={"syn_text": [f"a photo {k}" for k in range(5)]})
    ds = load_dataset("datacompdr", "12m", data_files=str(tmp_path / "shards" / "*.tar"), split="train",
                      streaming=True)
    assert ds.features == {
        "__key__": Value("string"), "__url__": Value("string"), "uid": Value("string"), "url": Value("string"),
        "sha256": Value("string"), "syn_text": List(Value("string")), "syn_key": List(Value("string")),
        "param_aug": List({"crop": List(Value("int32"), length=4),
                           "ops": List({"op": Value("int32"), "magnitude": Value("float64")})}),
        "image_emb": Array2D(shape=(None, 1536), dtype="float32"),
        "text_emb": Array2D(shape=(None, 1536), dtype="float32"), "num_gt_emb": Value("int32"),
    }
    examples = list(ds)
    assert [e["uid"] for e in examples] == list(expected)
    for example in examples:
        want = expected[example["uid"]]
        assert example["__key__"] == example["uid"]
        assert example["__url__"].endswith("00000.tar")
        assert example["url"] == f"https://example.com/{example['uid']}.jpg"
        assert example["sha256"] == f"sha-{example['uid']}"
        assert example["syn_text"] == want["syn_text"] and example["syn_key"] == ["syn_text"] * 5
        assert example["image_emb"].dtype == np.float32 and example["image_emb"].shape == (30, 1536)
        np.testing.assert_array_equal(example["image_emb"], want["image_emb"])
        np.testing.assert_array_equal(example["text_emb"], want["text_emb"])
        assert example["text_emb"].shape == (6, 1536) and example["num_gt_emb"] == 1
        assert [augment_replay.parse_entry(e).to_entry() for e in example["param_aug"]] == want["param_aug"]
        assert isinstance(example["param_aug"][0]["crop"][0], int)
        assert isinstance(example["param_aug"][0]["ops"][0]["magnitude"], float)
    meta = get_metadata(ds)
    assert [(t.model, t.pretrained) for t in meta.teachers] == [("ViT-L-14", "openai"),
                                                                 ("ViT-L-14", "datacomp_xl_s13b_b90k")]
    assert meta.embedding_dims == [768, 768] and meta.total_dim == 1536
    assert meta.teacher_slices() == [slice(0, 768), slice(768, 1536)]
    assert meta.logit_scales == [100.0, 100.0] and meta.num_augmentations == 30
    assert meta.embedding_source_dtype == "float32"
    assert meta.augmentation["rand_augment"]["magnitude"] == 9
    assert datacompdr_stats() == {"yielded": 2, "skipped": {}, "crop_rescaled": 0}


def test_12m_bf16_pth_gz_is_widened_exactly(tmp_path):
    expected = write_shards(tmp_path / "shards", n_shards=1, per_shard=2, dim=1536, n_aug=30, fmt="pth.gz",
                            syn={"syn_text": [f"c{k}" for k in range(5)]})
    ds = load_dataset("datacompdr", "12m-bf16", data_files=str(tmp_path / "shards" / "00000.tar"), split="train",
                      streaming=True)
    for example in ds:
        want = expected[example["uid"]]
        assert example["image_emb"].dtype == np.float32
        np.testing.assert_array_equal(example["image_emb"], want["image_emb"])
        np.testing.assert_array_equal(example["text_emb"], want["text_emb"])
        # the source really was bfloat16: every value has at most 8 significant mantissa bits
        bits = example["image_emb"].view(np.uint32)
        assert np.all(bits & 0xFFFF == 0)
    assert get_metadata(ds).embedding_source_dtype == "bfloat16"
    assert datacompdr_stats()["yielded"] == 2


def test_raygen_layout_with_config_json_and_regex(tmp_path):
    """Newer layout: text_emb is GT only, <syn_key>_emb per key; keys chosen by regex; metadata from config.json."""
    syn = {"syn_text_coco": ["c0", "c1"], "notes": ["not a caption"], "syn_text_docci": ["d0", "d1", "d2"]}
    expected = write_shards(tmp_path / "out", n_shards=1, per_shard=2, syn=syn, layout="raygen")
    sampler = augment_replay.AugmentationSampler()
    (tmp_path / "out" / "config.json").write_text(json.dumps({
        "teachers": TEACHERS, "num_augmentations": 3, "augmentation": sampler.to_config(), "seed": 1234,
        "layout": "raygen", "embedding_format": "npz", "syn_text_key_regex": r"^syn_text_"}))
    ds = load_dataset("datacompdr", data_files=str(tmp_path / "out" / "*.tar"), split="train", streaming=True)
    for example in ds:
        want = expected[example["uid"]]
        assert example["syn_text"] == ["c0", "c1", "d0", "d1", "d2"]
        assert example["syn_key"] == ["syn_text_coco"] * 2 + ["syn_text_docci"] * 3
        assert example["num_gt_emb"] == 1 and example["text_emb"].shape == (6, D_SMALL)
        # row 1 + k is the embedding of syn_text[k]; the "notes" rows are not included
        full = want["text_emb"]  # GT, coco, notes, docci in syn.json order
        np.testing.assert_array_equal(example["text_emb"], np.concatenate([full[:3], full[4:]]))
    meta = get_metadata(ds)
    assert meta.source.endswith("config.json") and meta.seed == 1234
    assert [t.model for t in meta.teachers] == ["teacher-a", "teacher-b"]
    assert meta.embedding_dims == [6, 10] and meta.logit_scales == [70.0, 60.0]
    assert augment_replay.AugmentationSampler.from_config(meta.augmentation) == sampler


def test_param_aug_as_json_string_equals_list(tmp_path):
    for name, as_string in (("lists", False), ("strings", True)):
        write_shards(tmp_path / name, n_shards=1, per_shard=2, param_aug_as_string=as_string)

    def load(name):
        return list(load_dataset("datacompdr", data_files=str(tmp_path / name / "*.tar"), split="train",
                                 streaming=True, teachers=TEACHERS))

    from_lists, from_strings = load("lists"), load("strings")
    assert [e["param_aug"] for e in from_strings] == [e["param_aug"] for e in from_lists]
    assert all(isinstance(e["param_aug"], list) and isinstance(e["param_aug"][0], dict) for e in from_strings)


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


def test_streaming_and_map_style_agree(tmp_path):
    write_shards(tmp_path / "shards", n_shards=2, per_shard=2, fmt="pth.gz")
    kwargs = dict(data_files=str(tmp_path / "shards" / "*.tar"), split="train", teachers=TEACHERS)
    streamed = list(load_dataset("datacompdr", streaming=True, **kwargs))
    table = load_dataset("datacompdr", cache_dir=str(tmp_path / "cache"), **kwargs)
    assert table.num_rows == 4 and table.features == load_dataset("datacompdr", streaming=True, **kwargs).features
    numpy_rows = table.with_format("numpy")
    for index, example in enumerate(streamed):
        row = table[index]
        for column in ("__key__", "uid", "url", "sha256", "syn_text", "syn_key", "param_aug", "num_gt_emb"):
            assert row[column] == example[column], column
        np.testing.assert_array_equal(numpy_rows[index]["image_emb"], example["image_emb"])
        np.testing.assert_array_equal(numpy_rows[index]["text_emb"], example["text_emb"])
    assert get_metadata(table).embedding_dims == [6, 10]


def test_builder_class_directly_and_brace_ranges(tmp_path):
    write_shards(tmp_path / "shards", n_shards=3, per_shard=1)
    assert expand_braces("s/{00000..00002}.tar") == ["s/00000.tar", "s/00001.tar", "s/00002.tar"]
    assert expand_braces("{a,b}-{1..2}") == ["a-1", "a-2", "b-1", "b-2"]
    builder = DataCompDR(config_name="local", data_files=str(tmp_path / "shards" / "{00000..00001}.tar"),
                         teachers=TEACHERS, cache_dir=str(tmp_path / "cache"))
    ds = builder.as_streaming_dataset(split="train")
    assert ds.num_shards == 2
    assert keys_of(ds) == [uid_of(0, 0), uid_of(1, 0)]
    assert builder.metadata.embedding_dims == [6, 10]


def test_config_name_alone_targets_apple_hub_repo_not_cwd(tmp_path, monkeypatch):
    """`load_dataset("datacompdr", "12m")` resolves the Hub shards (offline here, so it must fail *on the Hub*),
    and never picks up files from the working directory."""
    write_shards(tmp_path, n_shards=1, per_shard=1)  # a tar in the cwd that must not be used
    monkeypatch.chdir(tmp_path)
    if datasets.config.HF_HUB_OFFLINE:  # the Hub listing is refused, naming Apple's repo
        with pytest.raises(ConnectionError, match="apple/DataCompDR-12M"):
            load_dataset("datacompdr", "12m", streaming=True, split="train")
    else:
        files = load_dataset_builder("datacompdr", "12m").config.data_files["train"]
        assert len(files) == 1024 and files[0].startswith("hf://datasets/apple/DataCompDR-12M")
    with pytest.raises(ValueError, match="has no data files; pass data_files="):
        load_dataset("datacompdr", streaming=True, split="train")
    # other packaged builders are untouched by the registration
    (tmp_path / "rows.jsonl").write_text('{"a": 1}\n')
    assert load_dataset("json", data_files="rows.jsonl", split="train", cache_dir=str(tmp_path / "c"))[0] == {"a": 1}


# ---------------------------------------------------------------------------------------------------------------------
# Bad input


def test_bad_samples_are_skipped_counted_and_logged(tmp_path, caplog):
    rng = random.Random(1)
    good = [make_sample(uid_of(0, k), rng) for k in range(3)]
    bad = {}

    def variant(name, mutate):
        uid = uid_of(1, len(bad))
        members, _ = make_sample(uid, rng)
        mutate(uid, members)
        bad[name] = (uid, members)

    nrng = np.random.default_rng(0)
    variant("wrong_width", lambda u, m: m.update(npz=npz_bytes(image_emb=nrng.random((3, 12), np.float32),
                                                               text_emb=nrng.random((3, 12), np.float32))))
    variant("missing_paug", lambda u, m: m.pop("paug.json"))
    variant("op_out_of_range", lambda u, m: m.update(**{"paug.json": json.dumps(
        {"param_aug": [[[0, 0, 10, 10], [[14, 1.0]]]] * 3}).encode()}))
    variant("garbled_npz", lambda u, m: m.update(npz=b"PK\x03\x04 not really a zip"))
    variant("garbled_json", lambda u, m: m.update(**{"syn.json": b"{not json"}))
    variant("aug_count", lambda u, m: m.update(**{"paug.json": json.dumps(
        {"param_aug": [[[0, 0, 10, 10], [[0, 0.0]]]] * 2}).encode()}))
    variant("nan", lambda u, m: m.update(npz=npz_bytes(image_emb=np.full((3, D_SMALL), np.nan, np.float32),
                                                       text_emb=nrng.random((3, D_SMALL), np.float32))))
    variant("uid_mismatch", lambda u, m: m.update(json=json.dumps({"uid": "f" * 32, "sha256": "x"}).encode()))
    variant("no_syn_key", lambda u, m: m.update(**{"syn.json": json.dumps({"captions": ["x"]}).encode()}))
    variant("no_captions", lambda u, m: m.update(**{"syn.json": json.dumps({"syn_text": []}).encode()}))
    variant("sha256_number", lambda u, m: m.update(json=json.dumps({"uid": u, "sha256": 12}).encode()))
    # v1: 2 captions need exactly 1 + 2 text rows; a 4th row would shift every caption onto the wrong embedding
    variant("text_rows", lambda u, m: m.update(npz=npz_bytes(image_emb=nrng.random((3, D_SMALL), np.float32),
                                                             text_emb=nrng.random((4, D_SMALL), np.float32))))
    samples = [(good[0][1]["uid"], good[0][0])]
    samples += [(uid, members) for uid, members in bad.values()]
    samples += [(e["uid"], m) for m, e in good[1:]]
    shard = write_tar(tmp_path / "00000.tar", samples)
    kwargs = dict(data_files=shard, split="train", streaming=True, teachers=TEACHERS)

    with caplog.at_level(logging.WARNING, logger="dataset_scripts.datacompdr"):
        ds = load_dataset("datacompdr", **kwargs)
        assert keys_of(ds) == [e["uid"] for _, e in good]  # every good one, none of the bad ones
    assert datacompdr_stats()["skipped"] == {
        "missing_member": 1, "bad_param_aug": 1, "undecodable_member": 3, "bad_embedding": 2, "count_mismatch": 2,
        "uid_mismatch": 1, "bad_syn_text": 2}
    text = caplog.text
    assert f"field 'npz:image_emb' of sample __key__='{bad['wrong_width'][0]}' in shard '{shard}'" in text
    assert "width 12 != 16" in text
    assert f"field 'paug.json' of sample __key__='{bad['missing_paug'][0]}'" in text
    assert "op 0 index is 14" in text
    assert "4 rows, expected 1 ground-truth row + 2 synthetic rows" in text
    assert "shard " + shard + ": yielded 3, skipped 12" in text

    with pytest.raises(DataCompDRSampleError, match=r"\[bad_embedding\] field 'npz:image_emb' of sample __key__="):
        list(load_dataset("datacompdr", strict=True, **kwargs))


def _corrupt_header(data: bytes, member_name: str) -> bytes:
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        offset = tar.getmember(member_name).offset
    damaged = bytearray(data)
    damaged[offset:offset + 64] = b"\xff" * 64
    return bytes(damaged)


def test_corrupt_and_truncated_tars_never_stop_the_stream(tmp_path):
    rng = random.Random(2)
    samples = [(uid_of(0, k), make_sample(uid_of(0, k), rng)[0]) for k in range(4)]
    ok = Path(write_tar(tmp_path / "a.tar", samples)).read_bytes()
    # shard 0: the header of sample 1's npz is garbage -> samples 1 (and its neighbour 2, which the lost
    # bytes could belong to) are dropped, 0 and 3 survive
    (tmp_path / "s0.tar").write_bytes(_corrupt_header(ok, f"{uid_of(0, 1)}.npz"))
    # shard 1: cut in the middle of sample 2's npz -> 0 and 1 survive, the rest of the shard is lost
    with tarfile.open(tmp_path / "a.tar") as tar:
        cut = tar.getmember(f"{uid_of(0, 2)}.npz").offset_data + 100
    (tmp_path / "s1.tar").write_bytes(ok[:cut])
    # shard 2: intact, must still be read after the damaged ones
    (tmp_path / "s2.tar").write_bytes(ok)
    (tmp_path / "a.tar").unlink()
    files = [str(tmp_path / f"s{k}.tar") for k in range(3)]
    ds = load_dataset("datacompdr", data_files=files, split="train", streaming=True, teachers=TEACHERS)
    got = [(Path(e["__url__"]).name, e["__key__"]) for e in ds]
    assert got == ([("s0.tar", uid_of(0, 0)), ("s0.tar", uid_of(0, 3))]
                   + [("s1.tar", uid_of(0, k)) for k in (0, 1)]
                   + [("s2.tar", uid_of(0, k)) for k in range(4)])
    assert datacompdr_stats()["skipped"] == {"corrupt_tar_member": 2, "corrupt_tar": 1}
    with pytest.raises(DataCompDRSampleError, match=r"\[corrupt_tar_member\] field '\(tar\)' of sample __key__="):
        list(load_dataset("datacompdr", data_files=files, split="train", streaming=True, teachers=TEACHERS,
                          strict=True))


# ---------------------------------------------------------------------------------------------------------------------
# Joins


def test_join_images_and_captions(tmp_path):
    rng = random.Random(3)
    images = tmp_path / "images"
    images.mkdir()
    uids = [uid_of(0, k) for k in range(9)]
    samples, expected = [], {}
    for k, uid in enumerate(uids):
        if k == 2:  # boxes chosen so that halving the image halves them exactly
            param_aug = [[[20, 40, 100, 200], [[6, 0.27]]], [[0, 0, 240, 320], [[0, 0.0]]]]
        else:
            param_aug = [augment_replay.sample_params(rng, (640, 480) if k == 6 else (320, 240)) for _ in range(2)]
        if k == 5:  # boxes of a 640x480 original that cannot fit a 100x80 image
            param_aug = [[[300, 400, 150, 200], [[0, 0.0]]], [[0, 0, 480, 640], [[0, 0.0]]]]
        members, expected[uid] = make_sample(uid, rng, param_aug=param_aug)
        samples.append((uid, members))
    write_tar(tmp_path / "00000.tar", samples)

    # 0: jpg named by uid; 1: RGBA png named by uid; 2: in an img2dataset tar, stored at half size, original size
    # recorded in its .json; 3: no image at all; 4: truncated jpeg; 5: 100x80 image, no original size anywhere;
    # 6: quarter-size jpg of a 640x480 original recorded in the captions parquet; 7: full size but no caption;
    # 8: the parquet records a 480x480 original but the file is 160x120: not a resize (cropped), so dropped
    (images / f"{uids[0]}.jpg").write_bytes(jpeg_bytes((320, 240), 0))
    (images / f"{uids[1]}.png").write_bytes(jpeg_bytes((320, 240), 1, fmt="PNG", mode="RGBA"))
    write_tar(images / "downloads.tar", [("000000007", {
        "jpg": jpeg_bytes((160, 120), 2),
        "json": json.dumps({"uid": uids[2], "original_width": 320, "original_height": 240, "width": 160}).encode(),
        "txt": b"ignored"})])
    (images / f"{uids[4]}.jpg").write_bytes(jpeg_bytes((320, 240), 4)[:400])
    (images / f"{uids[5]}.jpg").write_bytes(jpeg_bytes((100, 80), 5))
    (images / f"{uids[6]}.jpg").write_bytes(jpeg_bytes((160, 120), 6))
    (images / f"{uids[7]}.jpg").write_bytes(jpeg_bytes((320, 240), 7))
    (images / f"{uids[8]}.jpg").write_bytes(jpeg_bytes((160, 120), 8))
    captioned = [u for k, u in enumerate(uids) if k != 7]
    recorded = {uids[6]: (640, 480), uids[8]: (480, 480)}
    pq.write_table(pa.table({
        "uid": captioned, "text": [f"caption of {u[-4:]}" for u in captioned],
        "original_width": [recorded.get(u, (None,))[0] for u in captioned],
        "original_height": [recorded.get(u, (None, None))[1] for u in captioned]}), tmp_path / "captions.parquet")
    ds = load_dataset("datacompdr", data_files=str(tmp_path / "00000.tar"), split="train", streaming=True,
                      teachers=TEACHERS, image_dir=str(images), captions=str(tmp_path / "captions.parquet"),
                      cache_dir=str(tmp_path / "cache"))
    assert ds.features["image"] == Image(decode=False) and ds.features["text"] == Value("string")
    assert ds.features["image_width"] == Value("int32") and ds.features["crop_rescaled"] == Value("bool")
    examples = {e["uid"]: e for e in ds}
    assert sorted(examples) == sorted([uids[0], uids[1], uids[2], uids[6]])
    assert datacompdr_stats()["skipped"] == {"missing_image": 1, "unreadable_image": 1, "crop_outside_image": 1,
                                             "missing_caption": 1, "image_size_mismatch": 1}
    assert datacompdr_stats()["crop_rescaled"] == 2

    first = examples[uids[0]]
    assert first["text"] == f"caption of {uids[0][-4:]}"
    assert first["image"]["bytes"] == (images / f"{uids[0]}.jpg").read_bytes()  # original bytes, original size
    assert (first["image_width"], first["image_height"], first["crop_rescaled"]) == (320, 240, False)
    assert [augment_replay.parse_entry(e).to_entry() for e in first["param_aug"]] == expected[uids[0]]["param_aug"]
    assert examples[uids[1]]["image"]["path"] == f"{uids[1]}.png"

    half = examples[uids[2]]
    assert (half["image_width"], half["image_height"], half["crop_rescaled"]) == (160, 120, True)
    assert [e["crop"] for e in half["param_aug"]] == [[10, 20, 50, 100], [0, 0, 120, 160]]
    quarter = examples[uids[6]]
    assert quarter["crop_rescaled"] and (quarter["image_width"], quarter["image_height"]) == (160, 120)
    for got, (box, _) in zip(quarter["param_aug"], expected[uids[6]]["param_aug"]):
        assert all(abs(g - b / 4) <= 1 for g, b in zip(got["crop"], box)), (got["crop"], box)

    # the student's view of a joined sample, and the teacher row of exactly that view
    transform = augment_replay.ReplayTransform(size=64, interpolation="bilinear")
    view = transform.view(half, aug_idx=0)
    reference = augment_replay.apply(PIL.Image.open(io.BytesIO(half["image"]["bytes"])), [[10, 20, 50, 100],
                                     [[6, 0.27]]], 64, "bilinear")
    assert torch.equal(view["pixel_values"], reference) and view["pixel_values"].shape == (3, 64, 64)
    assert torch.equal(view["image_emb"], torch.from_numpy(half["image_emb"][0]))

    strict = load_dataset("datacompdr", data_files=str(tmp_path / "00000.tar"), split="train", streaming=True,
                          teachers=TEACHERS, image_dir=str(images), cache_dir=str(tmp_path / "cache"), strict=True)
    with pytest.raises(DataCompDRSampleError, match=rf"\[missing_image\] field 'image' of sample __key__='{uids[3]}'"):
        list(strict)


def test_caption_join_from_metadata_tars_and_image_tar_glob(tmp_path):
    rng = random.Random(4)
    uids = [uid_of(0, k) for k in range(3)]
    samples = [(u, make_sample(u, rng)[0]) for u in uids]
    # uids[1]'s json records the true sha256 of its image (the others a placeholder)
    samples[1][1]["json"] = json.dumps({"uid": uids[1], "sha256": hashlib.sha256(jpeg_bytes((320, 240), 1))
                                        .hexdigest()}).encode()
    write_tar(tmp_path / "dr.tar", samples)
    # DataComp-12M metadata shards: {key}.txt caption + {key}.json with the uid (keys are not uids)
    write_tar(tmp_path / "meta-00000.tar", [(f"{k:09d}", {"txt": f"gt {k}".encode(),
                                                          "json": json.dumps({"uid": u}).encode()})
                                            for k, u in enumerate(uids[:2])])
    (tmp_path / "img").mkdir()
    write_tar(tmp_path / "img" / "00000.tar", [(f"{k:09d}", {"jpg": jpeg_bytes((320, 240), k),
                                                             "json": json.dumps({"uid": u}).encode()})
                                               for k, u in enumerate(uids)])
    ds = load_dataset("datacompdr", data_files=str(tmp_path / "dr.tar"), split="train", streaming=True,
                      teachers=TEACHERS, captions=str(tmp_path / "meta-*.tar"),
                      image_dir=[str(tmp_path / "img" / "*.tar")], cache_dir=str(tmp_path / "cache"))
    got = [(e["uid"], e["text"], e["image"]["path"]) for e in ds]
    assert got == [(uids[0], "gt 0", "000000000.jpg"), (uids[1], "gt 1", "000000001.jpg")]
    assert datacompdr_stats()["skipped"] == {"missing_caption": 1}
    # map-style: the joined image bytes land in the Arrow table unchanged
    table = load_dataset("datacompdr", data_files=str(tmp_path / "dr.tar"), split="train", teachers=TEACHERS,
                         captions=str(tmp_path / "meta-*.tar"), image_dir=str(tmp_path / "img"),
                         cache_dir=str(tmp_path / "cache"))
    assert table["uid"] == uids[:2] and table["text"] == ["gt 0", "gt 1"]
    assert table[1]["image"]["bytes"] == jpeg_bytes((320, 240), 1) and table["image_width"] == [320, 320]
    # both loads share one memory-mapped index per join (the same files, found through a glob and a folder)
    indexes = sorted(p.name.split("-")[0] for p in (tmp_path / "cache" / "datacompdr-join-index").iterdir()
                     if p.suffix == ".arrow")
    assert indexes == ["captions", "image_dir"]

    reset_datacompdr_stats()
    checked = load_dataset("datacompdr", data_files=str(tmp_path / "dr.tar"), split="train", streaming=True,
                           teachers=TEACHERS, image_dir=str(tmp_path / "img"), check_sha256=True,
                           cache_dir=str(tmp_path / "cache"))
    assert keys_of(checked) == [uids[1]]
    assert datacompdr_stats()["skipped"] == {"sha256_mismatch": 2}


def test_local_shards_without_metadata_infer_the_width(tmp_path, caplog):
    write_shards(tmp_path / "shards", n_shards=1, per_shard=2)
    with caplog.at_level(logging.WARNING, logger="dataset_scripts.datacompdr"):
        ds = load_dataset("datacompdr", data_files=str(tmp_path / "shards" / "*.tar"), split="train", streaming=True)
    assert "D_total=16 inferred" in caplog.text
    assert ds.features["image_emb"] == Array2D(shape=(None, D_SMALL), dtype="float32")
    meta = get_metadata(ds)
    assert meta.embedding_dims == [D_SMALL] and meta.teachers[0].model == "unknown" and meta.logit_scales == [None]
    assert len(keys_of(ds)) == 2


# ---------------------------------------------------------------------------------------------------------------------
# Streaming order and distribution


def test_shuffle_is_deterministic_per_seed_and_epoch(tmp_path):
    expected = write_shards(tmp_path / "shards", n_shards=4, per_shard=3)
    ds = load_dataset("datacompdr", data_files=str(tmp_path / "shards" / "*.tar"), split="train", streaming=True,
                      teachers=TEACHERS)
    shuffled = ds.shuffle(seed=7, buffer_size=4)
    orders = {}
    for epoch in (0, 1):
        shuffled.set_epoch(epoch)
        orders[epoch] = keys_of(shuffled)
        assert keys_of(shuffled) == orders[epoch]  # same seed and epoch -> same order
        assert sorted(orders[epoch]) == sorted(expected)
    assert orders[0] != orders[1]
    again = ds.shuffle(seed=7, buffer_size=4)
    again.set_epoch(1)
    assert keys_of(again) == orders[1]


def test_split_dataset_by_node_splits_by_shard(tmp_path):
    expected = write_shards(tmp_path / "shards", n_shards=4, per_shard=2)
    ds = load_dataset("datacompdr", data_files=str(tmp_path / "shards" / "*.tar"), split="train", streaming=True,
                      teachers=TEACHERS)
    parts = [split_dataset_by_node(ds, rank=rank, world_size=2) for rank in range(2)]
    assert [p.num_shards for p in parts] == [2, 2]
    seen = [[(Path(e["__url__"]).name, e["__key__"]) for e in p] for p in parts]
    assert {name for name, _ in seen[0]}.isdisjoint({name for name, _ in seen[1]})  # whole shards per rank
    assert sorted(k for part in seen for _, k in part) == sorted(expected)
    assert get_metadata(parts[1]).embedding_dims == [6, 10]  # the metadata travels with the split


_TWO_PROCESS_SCRIPT = '''
import json, os, sys
import dataset_scripts
import torch
from accelerate import PartialState
from accelerate.utils import DistributedType
from datasets import load_dataset
from datasets.distributed import split_dataset_by_node

shards, images, out, teachers = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
state = PartialState(cpu=True)
if state.distributed_type != DistributedType.MULTI_CPU or state.num_processes != 2:
    raise SystemExit(f"expected 2 CPU ranks, got {state.distributed_type} x {state.num_processes}")
# both ranks build / open the image index at once (file lock), then stream their shards through 2 DataLoader workers
ds = load_dataset("datacompdr", data_files=shards, split="train", streaming=True, teachers=teachers,
                  image_dir=images, cache_dir=os.environ["HF_DATASETS_CACHE"])
ds = split_dataset_by_node(ds.shuffle(seed=0, buffer_size=2), rank=state.process_index,
                           world_size=state.num_processes)
ds.set_epoch(1)
loader = torch.utils.data.DataLoader(ds, batch_size=None, num_workers=2)
keys = [example["__key__"] for example in loader if example["image"]["bytes"]]
with open(f"{out}/rank{state.process_index}.json", "w") as f:
    json.dump({"keys": keys, "num_shards": ds.num_shards, "pid": os.getpid(), "world": state.num_processes}, f)
state.wait_for_everyone()
state.destroy_process_group()
'''


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_accelerate_two_processes_cover_every_sample_once(tmp_path):
    """Two real ranks (`accelerate launch`, torchrun launcher + gloo), each with 2 DataLoader workers and the image
    join: every sample is seen exactly once, and the ranks share one image index.

    `accelerate launch --cpu --num_processes 2` starts a single process in accelerate 1.15 (multi-CPU there means
    mpirun), so the ranks are launched with `--multi_gpu` (torchrun) and the script asks for `PartialState(cpu=True)`
    and exits non-zero unless it sees 2 ranks; the test also checks that 2 distinct processes reported back.
    """
    expected = write_shards(tmp_path / "shards", n_shards=4, per_shard=3)
    (tmp_path / "images").mkdir()
    for k, uid in enumerate(expected):
        (tmp_path / "images" / f"{uid}.jpg").write_bytes(jpeg_bytes((320, 240), k))
    script = tmp_path / "two_ranks.py"
    script.write_text(_TWO_PROCESS_SCRIPT)
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", PYTHONPATH=str(REPO_ROOT),
               HF_DATASETS_CACHE=str(tmp_path / "cache"))
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
               "--main_process_port", str(_free_port()), str(script), str(tmp_path / "shards" / "*.tar"),
               str(tmp_path / "images"), str(tmp_path), json.dumps(TEACHERS)]
    proc = subprocess.run(command, env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert [r["world"] for r in ranks] == [2, 2] and ranks[0]["pid"] != ranks[1]["pid"]
    assert [r["num_shards"] for r in ranks] == [2, 2]
    keys = ranks[0]["keys"] + ranks[1]["keys"]
    assert len(keys) == len(set(keys)) == len(expected) and set(keys) == set(expected)
    assert len(ranks[0]["keys"]) == len(ranks[1]["keys"]) == 6  # whole shards: 2 x 3 samples per rank
    index_files = [p.name for p in (tmp_path / "cache" / "datacompdr-join-index").iterdir()]
    assert len([n for n in index_files if n.endswith(".arrow")]) == 1  # one index for both ranks
    assert not [n for n in index_files if n.endswith(".incomplete")]  # nothing half-written left behind
