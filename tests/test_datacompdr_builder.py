"""The `datacompdr` builder (dataset_scripts/datacompdr/builder.py and the modules it assembles) on shards written
here (tests/datacompdr_shards.py): every column and dtype of each layout, metadata from config.json or inferred,
streaming vs map-style, and the builder class used directly."""

import json
import logging

import numpy as np
from datasets import Array2D, List, Value, load_dataset

import dataset_scripts  # noqa: F401  (registers load_dataset("datacompdr"))
from datacompdr_shards import (
    D_SMALL,
    TEACHERS,
    fresh_datacompdr_stats,  # noqa: F401  (autouse fixture: each test starts at zero counts)
    keys_of,
    uid_of,
    write_shards,
)
from dataset_scripts import augment_replay
from dataset_scripts.datacompdr import DataCompDR, datacompdr_stats, expand_braces, get_metadata


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


def test_local_shards_without_metadata_infer_the_width(tmp_path, caplog):
    write_shards(tmp_path / "shards", n_shards=1, per_shard=2)
    with caplog.at_level(logging.WARNING, logger="dataset_scripts.datacompdr"):
        ds = load_dataset("datacompdr", data_files=str(tmp_path / "shards" / "*.tar"), split="train", streaming=True)
    assert "D_total=16 inferred" in caplog.text
    assert ds.features["image_emb"] == Array2D(shape=(None, D_SMALL), dtype="float32")
    meta = get_metadata(ds)
    assert meta.embedding_dims == [D_SMALL] and meta.teachers[0].model == "unknown" and meta.logit_scales == [None]
    assert len(keys_of(ds)) == 2
