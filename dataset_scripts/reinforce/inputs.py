"""The reinforcement's inputs: webdataset tars, parquet files, an imagefolder or a Hub dataset, read as shards of
:class:`InputRecord`; :class:`BadSample` is why one record cannot be used (counted in the manifest, then skipped).

Tar inputs keep their shards (output shard k = k-th input tar, sorted); other inputs are cut into shards of
``samples_per_shard`` consecutive rows.
"""

from __future__ import annotations

import glob
import hashlib
import io
import itertools
import json
import os
import tarfile
from dataclasses import dataclass
from typing import Callable, Iterator, Optional, Sequence

import PIL.Image

from ..datacompdr.data_files import expand_braces
from ..datacompdr.members import IMAGE_EXTENSIONS, iter_raw_samples, split_member_name
from .uids import tar_uids

_TEXT_FIELDS = ("txt", "text", "caption")


class BadSample(ValueError):
    """One input sample cannot be used: skipped and counted under ``reason``."""

    def __init__(self, reason: str, detail: str):
        self.reason = reason
        super().__init__(detail)


@dataclass
class InputRecord:
    key: str  # the sample's key in its source (tar key, row index, file name)
    image: Optional[bytes]
    text: Optional[str]
    uid: Optional[str] = None
    url: Optional[str] = None
    image_ext: Optional[str] = None
    problem: Optional[tuple[str, str]] = None  # (reason, detail) when the input itself is damaged


@dataclass
class InputShard:
    name: str  # output shard name, e.g. "00000003"
    source: str  # what it was read from (for the manifest)
    read: Callable[[], Iterator[InputRecord]]
    num_samples: Optional[int] = None
    count: Optional[Callable[[], Optional[int]]] = None  # counts the samples (tar headers) when asked
    identity: Optional[Callable[[], dict]] = None  # what the output shard is bound to (see input_identity)
    uids: Callable[[], Iterator] = lambda: iter(())  # each sample's own uid or None, read cheaply (uids.py)

    def size(self) -> Optional[int]:
        return self.num_samples if self.num_samples is not None or self.count is None else self.count()

    def input_identity(self) -> dict:
        """Recorded with the output shard; a rerun whose input at this position differs is refused."""
        return self.identity() if self.identity is not None else {"source": self.source}


_ENDS_BYTES = 64 * 2**10


def tar_identity(path: str, root: str) -> dict:
    """A tar input's path under the dataset folder, its size and a sha256 of its first and last 64 KiB (the first
    and last samples' members): cheap on many multi-GB tars, and unlike an mtime it survives a copy."""
    size = os.path.getsize(path)
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        digest.update(f.read(_ENDS_BYTES))
        f.seek(max(_ENDS_BYTES, size - _ENDS_BYTES))
        digest.update(f.read(_ENDS_BYTES))
    return {"path": _relative(path, root), "bytes": size, "sha256_first_last_64k": digest.hexdigest()}


def _relative(path: str, root: str) -> str:
    return os.path.relpath(path, root) if root else os.path.basename(path)


def estimate_sizes(shards: list[InputShard]) -> tuple[list[Optional[int]], bool]:
    """Samples per shard for the storage estimate and the progress bar, and whether that is exact. Tar shards are
    not all counted up front (reading every header of thousands of large tars would take long): unknown sizes are
    taken to be the first shard's."""
    sizes = [s.num_samples for s in shards]
    if all(n is not None for n in sizes):
        return sizes, True
    first = shards[0].size()
    return [n if n is not None else first for n in sizes], False


def _natural_sort(paths: list[str]) -> list[str]:
    return sorted(dict.fromkeys(paths))


def _resolve_files(spec: str, suffix: str) -> list[str]:
    if os.path.isdir(spec):
        return _natural_sort(glob.glob(os.path.join(spec, "**", f"*{suffix}"), recursive=True))
    matches = [m for pattern in expand_braces(spec) for m in sorted(glob.glob(pattern))]
    return _natural_sort([m for m in matches if m.endswith(suffix)])


def _read_tar(path: str, root: str) -> Iterator[InputRecord]:
    rel = _relative(path, root)
    for raw in iter_raw_samples(path):
        fields = raw.fields
        image_ext = next((ext for ext in fields if ext.split(".")[-1] in IMAGE_EXTENSIONS), None)
        meta: dict = {}
        if "json" in fields:
            try:
                meta = json.loads(fields["json"].decode("utf-8"))
            except ValueError:
                meta = {}
        text = next((fields[f].decode("utf-8", "replace") for f in _TEXT_FIELDS if f in fields), None)
        if text is None and isinstance(meta, dict):
            text = meta.get("caption") or meta.get("text")
        url = fields["url.txt"].decode("utf-8").strip() if "url.txt" in fields else (
            meta.get("url") if isinstance(meta, dict) else None)
        uid = meta.get("uid") if isinstance(meta, dict) else None
        yield InputRecord(key=f"{rel}/{raw.key}", image=fields.get(image_ext) if image_ext else None, text=text,
                          uid=uid, url=url, image_ext=image_ext,
                          problem=(raw.problem[0], raw.problem[2]) if raw.problem else None)


def _count_tar_samples(path: str) -> Optional[int]:
    """Distinct sample keys from the member headers alone (seeks past the data); None if the tar is damaged."""
    try:
        with tarfile.open(path) as tar:
            keys = {split_member_name(m.name)[0] for m in tar.getmembers() if m.isreg()}
    except (OSError, tarfile.TarError):
        return None
    keys.discard(None)
    return len(keys)


def _tar_shards(files: list[str], root: str) -> list[InputShard]:
    return [InputShard(name=f"{i:08d}", source=path, read=lambda path=path: _read_tar(path, root),
                       count=lambda path=path: _count_tar_samples(path),
                       identity=lambda path=path: tar_identity(path, root), uids=lambda path=path: tar_uids(path))
            for i, path in enumerate(files)]


def _pick_column(columns: Sequence[str], given: Optional[str], candidates: Sequence[str], what: str,
                 required: bool) -> Optional[str]:
    if given is not None:
        if given not in columns:
            raise ValueError(f"--{what}-column {given!r} is not a column of the dataset; columns: {list(columns)}")
        return given
    found = next((c for c in candidates if c in columns), None)
    if found is None and required:
        raise ValueError(f"cannot find the {what} column among {list(columns)}; pass --{what}-column "
                         f"(tried {list(candidates)})")
    return found


def _datasets_shards(ds, samples_per_shard: int, source: str, image_column: Optional[str],
                     text_column: Optional[str], uid_column: Optional[str], url_column: Optional[str]) -> list:
    import datasets

    columns = list(ds.column_names)
    image_column = _pick_column(columns, image_column, ("image", "jpg", "png", "webp", "img"), "image", True)
    text_column = _pick_column(columns, text_column, ("text", "caption", "txt", "sentence", "captions"), "text",
                               False)
    uid_column = _pick_column(columns, uid_column, ("uid", "key", "__key__", "id"), "uid", False)
    url_column = _pick_column(columns, url_column, ("url", "url.txt"), "url", False)
    if isinstance(ds.features.get(image_column), datasets.Image):
        ds = ds.cast_column(image_column, datasets.Image(decode=False))
    n = len(ds)

    def read(start: int, stop: int) -> Iterator[InputRecord]:
        for index in range(start, stop):
            row = ds[index]
            value = row[image_column]
            data, ext = None, None
            if isinstance(value, dict):
                data = value.get("bytes")
                path = value.get("path")
                if data is None and path and os.path.exists(path):
                    with open(path, "rb") as f:
                        data = f.read()
                ext = path.rpartition(".")[2].lower() if path and "." in path else None
            elif isinstance(value, (bytes, bytearray)):
                data = bytes(value)
            elif isinstance(value, PIL.Image.Image):
                buffer = io.BytesIO()
                value.save(buffer, format="PNG")
                data, ext = buffer.getvalue(), "png"
            text = row.get(text_column) if text_column else None
            if isinstance(text, list):  # several captions (e.g. COCO): the first is the GT caption
                text = text[0] if text else None
            uid = row.get(uid_column) if uid_column else None
            yield InputRecord(key=f"{source}#{index}", image=data, text=text,
                              uid=str(uid) if uid is not None else None,
                              url=row.get(url_column) if url_column else None, image_ext=ext)

    # The rows' identity: the row range and the dataset's fingerprint (datasets derives it from the data files, so it
    # changes with them).
    fingerprint = ds._fingerprint
    uid_rows = ds.select_columns([uid_column]) if uid_column else None  # slices of it read only that column

    def shard(k: int, start: int) -> InputShard:
        stop = min(start + samples_per_shard, n)
        where = f"{source}[{start}:{stop}]"
        return InputShard(name=f"{k:08d}", source=where, read=lambda: read(start, stop), num_samples=stop - start,
                          identity=lambda: {"source": where, "fingerprint": fingerprint},
                          uids=lambda: iter(uid_rows[start:stop][uid_column] if uid_column else ()))

    return [shard(k, a) for k, a in enumerate(range(0, n, samples_per_shard))]


def discover_inputs(dataset: str, split: str = "train", samples_per_shard: int = 1000,
                    image_column: Optional[str] = None, text_column: Optional[str] = None,
                    uid_column: Optional[str] = None, url_column: Optional[str] = None,
                    cache_dir: Optional[str] = None) -> tuple[str, list[InputShard]]:
    """``(kind, shards)`` for a folder / glob of webdataset tars, parquet files, an imagefolder or a Hub dataset id.

    Tar inputs keep their shards (output shard k = k-th input tar, sorted); other inputs are cut into shards of
    ``samples_per_shard`` consecutive rows.
    """
    import datasets

    tars = _resolve_files(dataset, ".tar")
    if tars:
        root = dataset if os.path.isdir(dataset) else os.path.commonpath([os.path.dirname(t) for t in tars])
        return "webdataset", _tar_shards(tars, root)
    parquets = _resolve_files(dataset, ".parquet")
    if parquets:
        ds = datasets.load_dataset("parquet", data_files=parquets, split="train", cache_dir=cache_dir)
        kind = "parquet"
    elif os.path.isdir(dataset):
        ds = datasets.load_dataset("imagefolder", data_dir=dataset, split="train", cache_dir=cache_dir)
        kind = "imagefolder"
    elif os.path.exists(dataset) or glob.has_magic(dataset):
        raise ValueError(f"--dataset {dataset!r}: expected a folder or glob of .tar / .parquet files or an "
                         f"imagefolder, found none")
    else:
        ds = datasets.load_dataset(dataset, split=split, cache_dir=cache_dir)
        kind = "hub"
    return kind, _datasets_shards(ds, samples_per_shard, os.path.basename(dataset.rstrip("/")) or dataset,
                                  image_column, text_column, uid_column, url_column)


def limit_samples(shards: list[InputShard], max_samples: Optional[int]) -> list[InputShard]:
    """Keep the first ``max_samples`` samples (whole shards, the last one cut)."""
    if max_samples is None:
        return shards
    kept, left = [], max_samples
    for shard in shards:
        if left <= 0:
            break
        size = shard.size()

        def read(shard=shard, n=left):
            for i, record in enumerate(shard.read()):
                if i >= n:
                    return
                yield record

        kept.append(InputShard(shard.name, shard.source, read, min(size, left) if size is not None else None,
                               identity=shard.input_identity,
                               uids=lambda shard=shard, n=left: itertools.islice(shard.uids(), n)))
        left -= size if size is not None else left
    return kept
