"""Bad input (dataset_scripts/datacompdr/skips.py, members.py, assemble.py): every damaged sample or tar is skipped,
counted under its reason and logged, and `strict=True` raises instead."""

import io
import json
import logging
import random
import tarfile
from pathlib import Path

import numpy as np
import pytest
from datasets import load_dataset

import dataset_scripts  # noqa: F401  (registers load_dataset("datacompdr"))
from datacompdr_shards import (
    D_SMALL,
    TEACHERS,
    fresh_datacompdr_stats,  # noqa: F401  (autouse fixture: each test starts at zero counts)
    keys_of,
    make_sample,
    npz_bytes,
    uid_of,
    write_tar,
)
from dataset_scripts.datacompdr import DataCompDRSampleError, datacompdr_stats


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

    with caplog.at_level(logging.INFO, logger="dataset_scripts.datacompdr"):
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


def test_many_skips_log_a_few_examples_and_running_counts_not_a_line_each(tmp_path, caplog):
    """Issue 18.10: 2,500 samples without their paug.json (plus 2 with an undecodable one) are 2,502 skips: at
    WARNING, 3 examples of the first reason, both of the second and one line of counts per 1,000 skips."""
    rng = random.Random(4)
    members, _ = make_sample(uid_of(0, 0), rng)
    samples = [(uid_of(1, k), {"json": json.dumps({"uid": uid_of(1, k)}).encode()}) for k in range(2500)]
    samples += [(uid_of(2, k), {**members, "paug.json": b"{not json"}) for k in range(2)]
    shard = write_tar(tmp_path / "00000.tar", samples)
    with caplog.at_level(logging.WARNING, logger="dataset_scripts.datacompdr"):
        assert list(load_dataset("datacompdr", data_files=shard, split="train", streaming=True, teachers=TEACHERS,
                                 dedupe_uids=False)) == []
    assert datacompdr_stats()["skipped"] == {"missing_member": 2500, "undecodable_member": 2}
    lines = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len([m for m in lines if "[missing_member]" in m]) == 3 and "the others at DEBUG" in lines[2]
    assert len([m for m in lines if "[undecodable_member]" in m]) == 2
    assert [m for m in lines if "skipped so far" in m] == [
        "datacompdr: 1000 samples skipped so far in this process: missing_member 1000",
        "datacompdr: 2000 samples skipped so far in this process: missing_member 2000"]
    assert len(lines) == 7  # nothing else: the per-shard line is at INFO


@pytest.mark.parametrize("streaming", [True, False])
def test_out_of_range_param_aug_is_skipped_in_both_modes(tmp_path, streaming):
    """A crop box past int32 (the column type) or an unknown op is one skipped sample, not an aborted build."""
    rng = random.Random(3)
    samples = [(uid_of(0, k), make_sample(uid_of(0, k), rng)[0]) for k in range(4)]
    for k, entry in ((1, [[4294967296, 0, 10, 10], [[0, 0.0]]]), (2, [[0, 0, 10, 10], [[99, 1.0]]])):
        samples[k][1]["paug.json"] = json.dumps({"param_aug": [entry] * 3}).encode()
    shard = write_tar(tmp_path / "00000.tar", samples)
    ds = load_dataset("datacompdr", data_files=shard, split="train", streaming=streaming, teachers=TEACHERS,
                      cache_dir=str(tmp_path / "cache"))
    assert keys_of(ds) == [uid_of(0, 0), uid_of(0, 3)]
    assert datacompdr_stats()["skipped"] == {"bad_param_aug": 2}


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
    # dedupe_uids=False: the three shards are copies of one on purpose (the repeats are test_datacompdr_joins.py's)
    ds = load_dataset("datacompdr", data_files=files, split="train", streaming=True, teachers=TEACHERS,
                      dedupe_uids=False)
    got = [(Path(e["__url__"]).name, e["__key__"]) for e in ds]
    assert got == ([("s0.tar", uid_of(0, 0)), ("s0.tar", uid_of(0, 3))]
                   + [("s1.tar", uid_of(0, k)) for k in (0, 1)]
                   + [("s2.tar", uid_of(0, k)) for k in range(4)])
    assert datacompdr_stats()["skipped"] == {"corrupt_tar_member": 2, "corrupt_tar": 1}
    with pytest.raises(DataCompDRSampleError, match=r"\[corrupt_tar_member\] field '\(tar\)' of sample __key__="):
        list(load_dataset("datacompdr", data_files=files, split="train", streaming=True, teachers=TEACHERS,
                          strict=True, dedupe_uids=False))
