"""Decoders of DataCompDR tar members: small, named, never unpickling, and bounded in what they allocate.

A compressed member (``pth.gz``, or a deflated ``npz``) is decompressed as a stream and refused with
:class:`MemberTooLargeError` past :data:`~.members.MAX_MEMBER_BYTES`, so a decompression bomb costs at most that
much memory instead of its full size.
"""

from __future__ import annotations

import gzip
import io
import json
from typing import Any

import numpy as np

from .members import MAX_MEMBER_BYTES


class MemberTooLargeError(ValueError):
    """A member decodes to more than the limit; the sample is skipped as ``oversized_member``."""


def decode_text(data: bytes) -> str:
    return data.decode("utf-8").strip()


def decode_json(data: bytes) -> Any:
    return json.loads(data.decode("utf-8"))


def decode_npz(data: bytes, max_bytes: int = MAX_MEMBER_BYTES) -> dict[str, np.ndarray]:
    # allow_pickle=False: object arrays would need pickle (CVE-2019-6446).
    with np.load(io.BytesIO(data), allow_pickle=False) as archive:
        # zipfile never yields more than an entry's declared size (more fails its CRC check), and an array read stops
        # at the end of its entry, so the declared sizes bound what the arrays can fill.
        declared = sum(info.file_size for info in archive.zip.infolist())
        if declared > max_bytes:
            raise MemberTooLargeError(f"npz entries declare {declared} bytes uncompressed, more than the "
                                      f"{max_bytes}-byte limit for one sample")
        arrays = {}
        for name in archive.files:
            value = archive[name]
            if not isinstance(value, np.ndarray):  # np.load returns the raw bytes of a non-.npy entry
                raise ValueError(f"entry {name!r} is not a .npy array")
            arrays[name] = value
        return arrays


def gunzip_bounded(data: bytes, max_bytes: int = MAX_MEMBER_BYTES) -> bytes:
    """gzip-decompress ``data`` as a stream, refusing past ``max_bytes`` (GzipFile.read(n) never inflates more)."""
    with gzip.GzipFile(fileobj=io.BytesIO(data)) as stream:
        inflated = stream.read(max_bytes + 1)
    if len(inflated) > max_bytes:
        raise MemberTooLargeError(f"gzip member of {len(data)} bytes inflates past the {max_bytes}-byte limit for "
                                  f"one sample (a decompression bomb or damage); not decompressed further")
    return inflated


def decode_pth_gz(data: bytes, max_bytes: int = MAX_MEMBER_BYTES) -> dict[str, np.ndarray]:
    import torch

    # weights_only=True: tensors and containers only, never arbitrary pickled objects.
    obj = torch.load(io.BytesIO(gunzip_bounded(data, max_bytes)), weights_only=True, map_location="cpu")
    if not isinstance(obj, dict):
        raise ValueError(f"expected a dict of tensors, got {type(obj).__name__}")
    arrays = {}
    for name, value in obj.items():
        if not isinstance(value, torch.Tensor):
            raise ValueError(f"entry {name!r} is a {type(value).__name__}, expected a tensor")
        # bfloat16 -> float32 is exact; numpy has no bfloat16.
        arrays[name] = value.float().numpy() if value.is_floating_point() else value.numpy()
    return arrays


EMBEDDING_DECODERS = {"npz": decode_npz, "pth.gz": decode_pth_gz}
