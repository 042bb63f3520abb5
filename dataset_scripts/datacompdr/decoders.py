"""Decoders of DataCompDR tar members: small, named, and never unpickling."""

from __future__ import annotations

import gzip
import io
import json
from typing import Any

import numpy as np


def decode_text(data: bytes) -> str:
    return data.decode("utf-8").strip()


def decode_json(data: bytes) -> Any:
    return json.loads(data.decode("utf-8"))


def decode_npz(data: bytes) -> dict[str, np.ndarray]:
    # allow_pickle=False: object arrays would need pickle (CVE-2019-6446).
    with np.load(io.BytesIO(data), allow_pickle=False) as archive:
        return {name: archive[name] for name in archive.files}


def decode_pth_gz(data: bytes) -> dict[str, np.ndarray]:
    import torch

    # weights_only=True: tensors and containers only, never arbitrary pickled objects.
    obj = torch.load(io.BytesIO(gzip.decompress(data)), weights_only=True, map_location="cpu")
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
