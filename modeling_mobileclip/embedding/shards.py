"""The output folder: safetensors shards of embeddings, each written to a temporary name and renamed, and `index.json`
written last (a folder holding it is complete).

    shard-00000.safetensors   tensor "embeddings" float32 [n, dim]; metadata "ids" (JSON list, row order) and
                              "items" (JSON list of every id the shard covers, skipped ones included: what a resume
                              compares) and "skipped" (JSON list of [id, reason])
    index.json                what was embedded (model, source, kind, dim, count), the shards, every skip, images/s

A shard covers a fixed range of the source (`shard_size` items), so a run interrupted and started again finds the
shards already written (same ids), keeps them and embeds only the rest.
"""

import json
import os
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file

INDEX = "index.json"


def shard_name(index: int) -> str:
    return f"shard-{index:05d}.safetensors"


def _atomic_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.partial-{os.getpid()}")


def write_shard(folder: Path, index: int, embeddings: torch.Tensor, ids: list[str], items: list[str],
                skipped: list[list[str]]) -> Path:
    target = folder / shard_name(index)
    partial = _atomic_path(target)
    metadata = {"ids": json.dumps(ids), "items": json.dumps(items), "skipped": json.dumps(skipped)}
    save_file({"embeddings": embeddings.float().contiguous()}, str(partial), metadata=metadata)
    os.replace(partial, target)
    return target


def read_shard_metadata(path: Path) -> dict | None:
    """The shard's metadata (ids, items, skipped decoded), or None when it is missing or unreadable."""
    try:
        with safe_open(str(path), framework="pt") as shard:
            metadata = shard.metadata() or {}
        return {key: json.loads(metadata[key]) for key in ("ids", "items", "skipped")}
    except (OSError, ValueError, KeyError, json.JSONDecodeError):  # missing, truncated or foreign: embed it again
        return None


def write_index(folder: Path, record: dict) -> None:
    target = folder / INDEX
    partial = _atomic_path(target)
    partial.write_text(json.dumps(record, indent=1) + "\n")
    os.replace(partial, target)


def load_embeddings(folder: str | os.PathLike) -> tuple[list[str], np.ndarray]:
    """`(ids, embeddings [n, dim] float32)` of a finished `mobileclip-embed` output folder, in source order."""
    folder = Path(folder)
    if not (folder / INDEX).is_file():
        raise ValueError(f"{str(folder)!r} has no {INDEX}: it is not a finished embedding folder (an interrupted "
                         f"run resumes when started again with the same arguments).")
    record = json.loads((folder / INDEX).read_text())
    ids, chunks = [], []
    for name in record["shards"]:
        with safe_open(str(folder / name), framework="np") as shard:
            ids += json.loads(shard.metadata()["ids"])
            chunks.append(shard.get_tensor("embeddings"))
    return ids, np.concatenate(chunks) if chunks else np.zeros((0, record["dim"]), np.float32)
