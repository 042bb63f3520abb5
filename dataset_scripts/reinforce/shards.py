"""Output shards: byte-deterministic tar and embedding encodings, ``.partial`` + rename, the manifest and resume.

A shard is written to a ``<name>.tar...partial`` file of its own and published when complete by a hard link to
``<name>.tar`` (which fails if the name exists: only one writer can ever publish a shard), then its manifest record
``_manifest/<name>.json`` (size, sha256, the identity of the input it was made from, skipped samples, which process
wrote it) is written; a shard counts as done when both exist and agree on the size, so rerunning the same command
after a crash or a kill resumes with the unfinished shards and never duplicates one (left-over ``*.partial`` files
are removed; ``claims.py`` says who writes which shard). A rerun whose input at a done shard's position is not the
recorded one (an input tar removed, another added) is refused, naming the changed inputs. When every shard is done,
``manifest.jsonl`` collects the records.
"""

from __future__ import annotations

import contextlib
import glob
import gzip
import hashlib
import io
import json
import os
import tarfile
import uuid
import zipfile
from collections import Counter
from typing import Optional

import numpy as np
import torch

from .claims import link_exclusive

MANIFEST_DIR = "_manifest"
PARTIAL_SUFFIX = ".partial"


def encode_npz(arrays: dict[str, np.ndarray]) -> bytes:
    """``np.savez`` equivalent with fixed zip timestamps (savez stamps the current time, breaking byte equality)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as archive:
        for name, array in arrays.items():
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            with archive.open(info, "w", force_zip64=True) as f:
                np.lib.format.write_array(f, np.ascontiguousarray(array), allow_pickle=False)
    return buffer.getvalue()


def encode_pth_gz(arrays: dict[str, np.ndarray]) -> bytes:
    """gzip (mtime 0) of ``torch.save`` of bfloat16 tensors, as in ``apple/DataCompDR-12M-bf16``."""
    buffer = io.BytesIO()
    torch.save({k: torch.from_numpy(np.ascontiguousarray(v)).to(torch.bfloat16) for k, v in arrays.items()}, buffer)
    return gzip.compress(buffer.getvalue(), mtime=0)


class ShardWriter:
    """A tar with fixed member metadata (mtime, owner, mode), so equal content gives equal bytes."""

    def __init__(self, path: str):
        self.tar = tarfile.open(path, "w", format=tarfile.GNU_FORMAT)

    def add(self, name: str, data: bytes) -> None:
        info = tarfile.TarInfo(name)
        info.size, info.mtime, info.mode, info.uid, info.gid = len(data), 0, 0o644, 0, 0
        info.uname = info.gname = ""
        self.tar.addfile(info, io.BytesIO(data))

    def close(self) -> None:
        self.tar.close()


def atomic_write(path: str, data: bytes) -> None:
    tmp = f"{path}.{uuid.uuid4().hex}{PARTIAL_SUFFIX}"  # unique across the machines sharing the folder
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def shard_path(output: str, name: str) -> str:
    return os.path.join(output, f"{name}.tar")


def partial_shard_path(output: str, name: str, tag: str = "") -> str:
    """Where a shard is written until it is complete (``tag``: the writer's claim, so writers never share one)."""
    return f"{shard_path(output, name)}{'.' + tag if tag else ''}{PARTIAL_SUFFIX}"


def commit_shard(output: str, name: str, source: str, input_identity: dict, num_uids: int, skipped: Counter,
                 written_by: dict | None, partial: str | None = None) -> dict | None:
    """Publish the complete ``partial`` shard (default ``<name>.tar.partial``) as ``<name>.tar``, then write its
    manifest record; return the record, or None (and drop ``partial``) if another worker published it first."""
    final, partial = shard_path(output, name), partial or partial_shard_path(output, name)
    with open(partial, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    published = link_exclusive(partial, final)
    os.remove(partial)
    if not published:
        return None
    record = {"shard": f"{name}.tar", "num_uids": num_uids, "bytes": os.path.getsize(final),
              "sha256": digest, "source": source, "input": input_identity, "skipped": dict(sorted(skipped.items())),
              "written_by": written_by or {"process_index": 0, "num_processes": 1}}
    os.makedirs(os.path.join(output, MANIFEST_DIR), exist_ok=True)
    atomic_write(_record_path(output, name), json.dumps(record, sort_keys=True).encode("utf-8"))
    return record


def _record_path(output: str, name: str) -> str:
    return os.path.join(output, MANIFEST_DIR, f"{name}.json")


def _done_record(output: str, name: str) -> Optional[dict]:
    """The manifest record of a finished shard (both files exist and agree on the size), else None."""
    record, tar = _record_path(output, name), shard_path(output, name)
    if not (os.path.exists(record) and os.path.exists(tar)):
        return None
    try:
        with open(record, encoding="utf-8") as f:
            loaded = json.load(f)
        return loaded if isinstance(loaded, dict) and loaded.get("bytes") == os.path.getsize(tar) else None
    except (OSError, ValueError):
        return None


def shard_done(output: str, name: str) -> bool:
    return _done_record(output, name) is not None


def unfinished_shards(output: str, shards: list) -> list:
    """The input shards (``InputShard``) whose output shard is still to write.

    A finished output shard must have been made from the input now at its position: if the input set changed (a tar
    removed and another added keeps the count), keeping it would keep a removed input's samples and never read the
    new one, so the run is refused with every changed input named.
    """
    pending, changed = [], []
    for shard in shards:
        record = _done_record(output, shard.name)
        if record is None:
            pending.append(shard)
            continue
        now = shard.input_identity()
        if record.get("input") != now:
            recorded = record.get("input") or "an unrecorded input (a record without 'input')"
            changed.append(f"{shard.name}.tar was made from {json.dumps(recorded, sort_keys=True)}, the input at its "
                           f"position is now {json.dumps(now, sort_keys=True)}")
    if changed:
        raise ValueError(
            f"--output {output!r}: the inputs of {len(changed)} finished shard(s) changed since they were written: "
            f"{'; '.join(changed)}. Refusing to keep shards of other inputs. Use a new --output folder, or delete "
            f"those shards and their {MANIFEST_DIR}/<name>.json records so that the current inputs are reinforced "
            f"into them.")
    return pending


def manifest_lines(output: str) -> tuple[str, list[dict]]:
    """``manifest.jsonl``'s text (one ``{"shard", "num_uids", ...}`` per line, from the per-shard records) and the
    records."""
    records = []
    for path in sorted(glob.glob(os.path.join(output, MANIFEST_DIR, "*.json"))):
        with open(path, encoding="utf-8") as f:
            records.append(json.load(f))
    keys = ("shard", "num_uids", "bytes", "sha256", "source", "input", "skipped")
    return "".join(json.dumps({k: r[k] for k in keys}, sort_keys=True) + "\n" for r in records), records


def write_manifest(output: str) -> list[dict]:
    """Collect the per-shard records into ``manifest.jsonl``; return them."""
    lines, records = manifest_lines(output)
    atomic_write(os.path.join(output, "manifest.jsonl"), lines.encode("utf-8"))
    return records


def clear_shard(output: str, name: str) -> list[str]:
    """Before a new claim writes shard ``name``: remove the half-written files of its earlier claimants, and a
    ``<name>.tar`` without its record (its publisher died between the two); returns what was removed."""
    final = shard_path(output, name)
    stale = glob.glob(f"{glob.escape(final)}*{PARTIAL_SUFFIX}")
    if os.path.exists(final) and not shard_done(output, name):
        stale.append(final)
    for path in stale:
        with contextlib.suppress(FileNotFoundError):  # a lost claimant may drop its own at the same time
            os.remove(path)
    return stale


def remove_stale_partials(output: str) -> list[str]:
    """Half-written files of a killed run (``*.partial``); complete files are only ever made by a rename."""
    stale = glob.glob(os.path.join(output, f"*{PARTIAL_SUFFIX}"))
    stale += glob.glob(os.path.join(output, MANIFEST_DIR, f"*{PARTIAL_SUFFIX}"))
    for path in stale:
        with contextlib.suppress(FileNotFoundError):
            os.remove(path)
    return stale
