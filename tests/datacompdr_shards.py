"""Shards for the `datacompdr` builder tests, written here member by member in the published layouts.

Every shard is a real tar (Python's tarfile) of `{uid}.url.txt`, `{uid}.json`, `{uid}.syn.json`, `{uid}.paug.json`
and `{uid}.npz` (numpy) or `{uid}.pth.gz` (torch.save + gzip of bfloat16 tensors); images are real JPEG/PNG files.
Test modules import the autouse fixture `fresh_datacompdr_stats` from here, so each test starts with zero counts.
"""

import gzip
import io
import json
import random
import struct
import tarfile
import zlib

import numpy as np
import PIL.Image
import pytest
import torch

from dataset_scripts import augment_replay
from dataset_scripts.datacompdr import reset_datacompdr_stats

TEACHERS = [  # deliberately unequal widths, so a swapped or hard-coded split shows
    {"model": "teacher-a", "pretrained": "tag-a", "embedding_dim": 6, "logit_scale": 70.0},
    {"model": "teacher-b", "pretrained": None, "embedding_dim": 10, "logit_scale": 60.0},
]
D_SMALL = 16


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
def fresh_datacompdr_stats():
    reset_datacompdr_stats()
    yield


def deflate_bomb(prefix: bytes, zero_chunks: int, suffix: bytes = b"", chunk: int = 2**24) -> tuple[bytes, int, int]:
    """A raw deflate stream of ``prefix + zero_chunks * chunk zero bytes + suffix``, built without ever holding the
    inflated bytes: each piece ends with a full flush (no back-references across it), so the compressed zero chunk is
    repeated. Returns ``(stream, crc32, inflated size)``."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    head = compressor.compress(prefix) + compressor.flush(zlib.Z_FULL_FLUSH)
    zeros = bytes(chunk)
    piece = compressor.compress(zeros) + compressor.flush(zlib.Z_FULL_FLUSH)
    tail = compressor.compress(suffix) + compressor.flush()
    crc = zlib.crc32(prefix)
    for _ in range(zero_chunks):
        crc = zlib.crc32(zeros, crc)
    return head + piece * zero_chunks + tail, zlib.crc32(suffix, crc), len(prefix) + zero_chunks * chunk + len(suffix)


def gzip_bomb(prefix: bytes, zero_chunks: int, suffix: bytes = b"") -> bytes:
    """A valid one-member gzip file around :func:`deflate_bomb` (header, deflate stream, CRC32 and size trailer)."""
    stream, crc, size = deflate_bomb(prefix, zero_chunks, suffix)
    return b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff" + stream + struct.pack("<II", crc, size & 0xFFFFFFFF)


def npz_bomb(name: str, rows: int, dim: int) -> bytes:
    """A valid npz whose deflated ``{name}.npy`` (float32 zeros [rows, dim]) is tiny: a one-entry zip written field
    by field, since zipfile would have to deflate every inflated byte."""
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, {"descr": "<f4", "fortran_order": False, "shape": (rows, dim)})
    nbytes, chunk = rows * dim * 4, 2**24
    if nbytes % chunk:
        raise ValueError(f"rows * dim * 4 = {nbytes} must be a multiple of {chunk}")
    stream, crc, size = deflate_bomb(buffer.getvalue(), nbytes // chunk)
    entry = f"{name}.npy".encode()
    sizes = struct.pack("<III", crc, len(stream), size)
    local = struct.pack("<IHHHHH", 0x04034B50, 20, 0, 8, 0, 0x21) + sizes + struct.pack("<HH", len(entry), 0)
    central = (struct.pack("<IHHHHHH", 0x02014B50, 20, 20, 0, 8, 0, 0x21) + sizes
               + struct.pack("<HHHHHII", len(entry), 0, 0, 0, 0, 0, 0) + entry)
    directory_offset = len(local) + len(entry) + len(stream)
    end = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, 1, 1, len(central), directory_offset, 0)
    return local + entry + stream + central + end
