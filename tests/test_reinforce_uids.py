"""Duplicate uids in the reinforcement's inputs (dataset_scripts/reinforce/uids.py): the same uid in two input
samples (two tars, one tar, two parquet shards) is refused before any work, naming the uid, its inputs and the fix;
the deduplicated inputs then run."""

import glob
import json
import os
import tarfile

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dataset_scripts.reinforce import reinforce
from reinforce_inputs import CROP, add_member, image_bytes, load_reinforced
from reinforce_inputs import tiny_models_fixture  # noqa: F401  (provides the models fixture)


def _kwargs(models, **overrides):
    return dict(teachers=[models["open_clip_small"]], captioner=models["ved"], num_captions=1, num_augmentations=2,
                crop_size=CROP, seed=3, batch_size=2, max_caption_tokens=8, progress=False, license="cc-by-4.0",
                **overrides)


def _write_tar(path, samples):
    """``samples``: (key, uid, image seed); the uid is in the sample's .json, as img2dataset writes it."""
    with tarfile.open(path, "w") as tar:
        for key, uid, seed in samples:
            add_member(tar, f"{key}.jpg", image_bytes(seed))
            add_member(tar, f"{key}.txt", f"photo {seed}".encode())
            add_member(tar, f"{key}.json", json.dumps({"uid": uid}).encode())


def test_a_uid_in_two_input_tars_is_refused_naming_both(models, tmp_path):
    data, out = tmp_path / "data", str(tmp_path / "out")
    data.mkdir()
    _write_tar(data / "00000.tar", [("k0", "u0", 0), ("k1", "same", 1)])
    _write_tar(data / "00001.tar", [("k2", "u2", 2), ("k3", "same", 3)])  # another picture under the same uid
    with pytest.raises(ValueError, match=r"1 uid\(s\) occur in more than one input sample \(uid 'same' in "
                                         r".*00000\.tar, .*00001\.tar\).*Fix: deduplicate the inputs"):
        reinforce(str(data), out, **_kwargs(models))
    assert not glob.glob(os.path.join(out, "*.tar*"))  # refused before any shard was started

    _write_tar(data / "00001.tar", [("k2", "u2", 2), ("k3", "u3", 3)])
    summary = reinforce(str(data), out, **_kwargs(models))
    assert summary["complete"] and summary["total_uids"] == 4
    ds = load_reinforced(out)
    assert sorted(ds["uid"]) == ["same", "u0", "u2", "u3"]


def test_a_uid_twice_in_one_tar_and_max_samples(models, tmp_path):
    data, out = tmp_path / "data", str(tmp_path / "out")
    data.mkdir()
    _write_tar(data / "00000.tar", [("k0", "u0", 0), ("k1", "u1", 1)])
    _write_tar(data / "00001.tar", [("k2", "u2", 2), ("k3", "u2", 3)])
    with pytest.raises(ValueError, match=r"uid 'u2' in .*00001\.tar, .*00001\.tar\)"):
        reinforce(str(data), out, **_kwargs(models))
    # only the samples that would be read are checked: the first three hold no duplicate
    summary = reinforce(str(data), out, **_kwargs(models, max_samples=3))
    assert summary["complete"] and summary["total_uids"] == 3


def test_a_uid_in_two_parquet_shards_is_refused(models, tmp_path):
    path = str(tmp_path / "data.parquet")
    pq.write_table(pa.table({"image": [{"bytes": image_bytes(k), "path": f"{k}.jpg"} for k in range(3)],
                             "caption": [f"photo {k}" for k in range(3)], "uid": ["p0", "p1", "p0"]}), path)
    with pytest.raises(ValueError, match=r"uid 'p0' in data\.parquet\[0:2\], data\.parquet\[2:3\]"):
        reinforce(path, str(tmp_path / "out"), **_kwargs(models, samples_per_shard=2))
