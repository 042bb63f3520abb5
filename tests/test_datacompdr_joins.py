"""The `captions=` and `image_dir=` joins (dataset_scripts/datacompdr/join_index.py, joins.py): uid indexes over
files, tars and parquet, crop boxes rescaled onto resized images, mismatches dropped."""

import hashlib
import io
import json
import random

import PIL.Image
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from datasets import Image, Value, load_dataset

import dataset_scripts  # noqa: F401  (registers load_dataset("datacompdr"))
from datacompdr_shards import (
    TEACHERS,
    fresh_datacompdr_stats,  # noqa: F401  (autouse fixture: each test starts at zero counts)
    jpeg_bytes,
    keys_of,
    make_sample,
    uid_of,
    write_tar,
)
from dataset_scripts import augment_replay
from dataset_scripts.datacompdr import DataCompDRSampleError, datacompdr_stats, reset_datacompdr_stats


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
    assert indexes == ["captions", "data_files", "image_dir"]  # data_files: the shards' own uids

    reset_datacompdr_stats()
    checked = load_dataset("datacompdr", data_files=str(tmp_path / "dr.tar"), split="train", streaming=True,
                           teachers=TEACHERS, image_dir=str(tmp_path / "img"), check_sha256=True,
                           cache_dir=str(tmp_path / "cache"))
    assert keys_of(checked) == [uids[1]]
    assert datacompdr_stats()["skipped"] == {"sha256_mismatch": 2}


def test_uids_repeated_across_the_shards_are_yielded_once_in_both_modes(tmp_path, caplog):
    """Issue 15.3a, no joins: a uid in two shards with different bytes is skipped everywhere as duplicate_uid; a
    byte-identical copy keeps the first (sorted shard paths), once for all ranks and workers (a global index)."""
    rng = random.Random(7)
    uids = [uid_of(0, k) for k in range(4)]
    first = {u: make_sample(u, rng)[0] for u in uids[:3]}
    write_tar(tmp_path / "00000.tar", [(u, first[u]) for u in uids[:3]])
    write_tar(tmp_path / "00001.tar", [(uids[1], make_sample(uids[1], rng)[0]),  # other crops: different bytes
                                       (uids[2], first[uids[2]]), (uids[3], make_sample(uids[3], rng)[0])])
    files = {"data_files": str(tmp_path / "{00000..00001}.tar"), "teachers": TEACHERS, "cache_dir": str(tmp_path / "c")}
    with caplog.at_level("WARNING", logger="dataset_scripts.datacompdr"):
        streamed = [e["uid"] for e in load_dataset("datacompdr", split="train", streaming=True, **files)]
    assert streamed == [uids[0], uids[2], uids[3]]
    assert datacompdr_stats()["skipped"] == {"duplicate_uid": 3}
    warnings = [r.getMessage() for r in caplog.records if "different content" in r.getMessage()]
    assert len(warnings) == 1 and f"1 uid(s) occur more than once in data_files= with different content (first: " \
        f"{uids[1]})" in warnings[0]
    skipped = " ".join(r.getMessage() for r in caplog.records if "[duplicate_uid]" in r.getMessage())
    assert f"uid {uids[1]} is carried by several samples of the shards with different bytes" in skipped
    assert f"an identical copy of this sample (uid {uids[2]}) at offset 0" not in skipped  # the copy is not first
    assert f"(uid {uids[2]}) at offset " in skipped and str(tmp_path / "00000.tar") in skipped

    reset_datacompdr_stats()
    table = load_dataset("datacompdr", split="train", **files)
    assert table["uid"] == streamed and datacompdr_stats()["skipped"] == {"duplicate_uid": 3}
    everything = load_dataset("datacompdr", split="train", streaming=True, dedupe_uids=False, **files)
    assert sorted(e["uid"] for e in everything) == sorted(uids[:3] + uids[1:])


def test_duplicate_uids_in_join_sources_are_skipped_in_both_modes(tmp_path, caplog):
    """A uid twice among the image (or caption) sources with different content cannot be joined: every sample with it
    is skipped as duplicate_uid, with one warning per index build. Identical copies keep the first."""
    rng = random.Random(5)
    uids = [uid_of(0, k) for k in range(4)]
    write_tar(tmp_path / "dr.tar", [(u, make_sample(u, rng)[0]) for u in uids])
    (tmp_path / "img").mkdir()
    # uids[1]: two different pictures; uids[2]: the same picture in both tars
    write_tar(tmp_path / "img" / "00000.tar", [(f"{k:09d}", {"jpg": jpeg_bytes((320, 240), k),
                                                             "json": json.dumps({"uid": u}).encode()})
                                               for k, u in enumerate(uids)])
    write_tar(tmp_path / "img" / "00001.tar", [(f"1{k:08d}", {"jpg": jpeg_bytes((320, 240), seed),
                                                              "json": json.dumps({"uid": uids[k]}).encode()})
                                               for k, seed in ((1, 11), (2, 2))])
    # uids[3]: two different captions; uids[0]: the same caption twice
    pq.write_table(pa.table({"uid": uids + [uids[3], uids[0]],
                             "text": [f"gt {k}" for k in range(4)] + ["another gt 3", "gt 0"]}),
                   tmp_path / "captions.parquet")
    joins = dict(teachers=TEACHERS, captions=str(tmp_path / "captions.parquet"), image_dir=str(tmp_path / "img"),
                 cache_dir=str(tmp_path / "cache"))

    with caplog.at_level("WARNING", logger="dataset_scripts.datacompdr"):
        streamed = load_dataset("datacompdr", data_files=str(tmp_path / "dr.tar"), split="train", streaming=True,
                                **joins)
        got = [(e["uid"], e["text"], e["image"]["bytes"]) for e in streamed]
    assert got == [(uids[0], "gt 0", jpeg_bytes((320, 240), 0)), (uids[2], "gt 2", jpeg_bytes((320, 240), 2))]
    assert datacompdr_stats()["skipped"] == {"duplicate_uid": 2}
    warnings = [r.getMessage() for r in caplog.records if "different content" in r.getMessage()]
    assert len(warnings) == 2
    assert any(f"1 uid(s) occur more than once in captions= with different content (first: {uids[3]})" in w
               for w in warnings)
    assert any(f"1 uid(s) occur more than once in image_dir= with different content (first: {uids[1]})" in w
               for w in warnings)
    skipped = [r.getMessage() for r in caplog.records if "[duplicate_uid]" in r.getMessage()]
    assert len(skipped) == 2 and f"uid {uids[1]} has different images in image_dir=" in " ".join(skipped)

    caplog.clear()
    reset_datacompdr_stats()
    with caplog.at_level("WARNING", logger="dataset_scripts.datacompdr"):
        table = load_dataset("datacompdr", data_files=str(tmp_path / "dr.tar"), split="train", **joins)
    assert table["uid"] == [uids[0], uids[2]] and table["text"] == ["gt 0", "gt 2"]
    assert table[1]["image"]["bytes"] == jpeg_bytes((320, 240), 2)
    assert datacompdr_stats()["skipped"] == {"duplicate_uid": 2}
    assert not [r for r in caplog.records if "different content" in r.getMessage()]  # the indexes were built once

    strict = load_dataset("datacompdr", data_files=str(tmp_path / "dr.tar"), split="train", streaming=True,
                          strict=True, **joins)
    with pytest.raises(DataCompDRSampleError, match=rf"\[duplicate_uid\] .*__key__='{uids[1]}'"):
        list(strict)
