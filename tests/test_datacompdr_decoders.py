"""Decompression bombs (dataset_scripts/datacompdr/decoders.py, members.py): a member that inflates past the limit is
refused while streaming, skipped as `oversized_member`, and never costs its inflated size in memory."""

import io
import json
import os
import random
import subprocess
import sys
import tarfile
import textwrap
import zipfile

import numpy as np
import pytest

from datacompdr_shards import (
    D_SMALL,
    TEACHERS,
    fresh_datacompdr_stats,  # noqa: F401  (autouse fixture: each test starts at zero counts)
    gzip_bomb,
    make_sample,
    npz_bomb,
    npz_bytes,
    uid_of,
    write_tar,
)
from dataset_scripts.datacompdr.decoders import MemberTooLargeError, decode_npz, decode_pth_gz
from dataset_scripts.datacompdr.members import MAX_MEMBER_BYTES

GIB = 2**30
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Streams the shards in a fresh process and reports the peak of the memory allocated after the first (good) sample,
# once the imports and the first decodes are paid for (tracemalloc sees bytes objects and numpy arrays).
_STREAM_AND_MEASURE = textwrap.dedent("""
    import json, sys, tracemalloc
    import dataset_scripts
    from datasets import load_dataset
    from dataset_scripts.datacompdr import datacompdr_stats

    shards, teachers = json.loads(sys.argv[1]), json.loads(sys.argv[2])
    stream = iter(load_dataset("datacompdr", data_files=shards, split="train", streaming=True, teachers=teachers))
    keys = [next(stream)["__key__"]]
    tracemalloc.start()
    keys += [example["__key__"] for example in stream]
    peak = tracemalloc.get_traced_memory()[1]
    print(json.dumps({"keys": keys, "skipped": datacompdr_stats()["skipped"], "peak_mib": peak / 2**20}))
""")


def _tar_member(name: str, size: int, data: bytes = b"") -> bytes:
    info = tarfile.TarInfo(name)
    info.size = size
    return info.tobuf(format=tarfile.GNU_FORMAT) + data + bytes(-len(data) % tarfile.BLOCKSIZE)


def _tar_gz_with_huge_member(path, before, huge_key, after, huge_size):
    """A .tar.gz of the samples ``before``, one ``{huge_key}.jpg`` of ``huge_size`` zero bytes, then ``after``; a few
    MB on disk (see ``gzip_bomb``)."""
    def members(samples):
        return b"".join(_tar_member(f"{key}.{field}", len(data), data)
                        for key, fields in samples for field, data in fields.items())

    prefix = members(before) + _tar_member(f"{huge_key}.jpg", huge_size)
    suffix = members(after) + bytes(2 * tarfile.BLOCKSIZE)  # end-of-archive marker
    path.write_bytes(gzip_bomb(prefix, huge_size // 2**24, suffix))
    return str(path)


def test_bombs_are_skipped_as_oversized_members_with_low_peak_memory(tmp_path):
    rng = random.Random(5)

    def sample(shard, k, **kwargs):
        return uid_of(shard, k), make_sample(uid_of(shard, k), rng, **kwargs)[0]

    samples = [sample(0, k, fmt="pth.gz" if k < 2 else "npz") for k in range(5)]
    samples[1][1]["pth.gz"] = gzip_bomb(b"", 2 * GIB // 2**24)  # ~2 MB -> 2 GiB
    samples[3][1]["npz"] = npz_bomb("image_emb", 2 * GIB // (4 * D_SMALL), D_SMALL)  # ~2 MB -> a 2 GiB array
    assert len(samples[1][1]["pth.gz"]) < 3 * 2**20 and len(samples[3][1]["npz"]) < 3 * 2**20
    plain = write_tar(tmp_path / "s0.tar", samples)
    huge = MAX_MEMBER_BYTES + 2**24
    compressed = _tar_gz_with_huge_member(tmp_path / "s1.tar.gz", [sample(1, 0)], uid_of(1, 1),
                                          [sample(1, 2)], huge)
    assert os.path.getsize(compressed) < 3 * 2**20
    result = subprocess.run([sys.executable, "-c", _STREAM_AND_MEASURE, json.dumps([plain, compressed]),
                             json.dumps(TEACHERS)], capture_output=True, text=True, timeout=600, check=False,
                            env={**os.environ, "PYTHONPATH": REPO, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["keys"] == [uid_of(0, 0), uid_of(0, 2), uid_of(0, 4), uid_of(1, 0), uid_of(1, 2)]
    assert report["skipped"] == {"oversized_member": 3}
    # Inflating either bomb whole traces >= 2048 MiB (4145 MiB before the limit); the bounded reads stop at 64 MiB.
    assert report["peak_mib"] < 3 * MAX_MEMBER_BYTES / 2**20, report
    assert "more than the" in result.stderr and "inflates past the" in result.stderr


def test_decoders_refuse_past_the_limit_and_keep_exact_values_below_it():
    arrays = {"image_emb": np.arange(3 * D_SMALL, dtype=np.float32).reshape(3, D_SMALL)}
    data = npz_bytes(**arrays)
    np.testing.assert_array_equal(decode_npz(data)["image_emb"], arrays["image_emb"])
    with pytest.raises(MemberTooLargeError, match=r"npz entries declare \d+ bytes uncompressed, more than the 100-"):
        decode_npz(data, max_bytes=100)
    with pytest.raises(MemberTooLargeError, match="inflates past the 1000-byte limit"):
        decode_pth_gz(gzip_bomb(b"", 1), max_bytes=1000)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("image_emb", b"not an array")  # np.load hands back the raw bytes of a non-.npy entry
    with pytest.raises(ValueError, match="entry 'image_emb' is not a .npy array"):
        decode_npz(buffer.getvalue())
