"""uid index files for the caption and image joins: uid-sorted Arrow tables, memory-mapped, built once.

``captions=`` (DataComp metadata parquet files or metadata tar shards: ``uid``, ``text``, ``original_width``,
``original_height``) and ``image_dir=`` (a folder of ``{uid}.jpg``-style files, a folder / list / glob of img2dataset
webdataset tars whose ``.json`` carries ``uid``, or image files with such a ``.json`` sidecar) are each indexed into
one file under ``<cache_dir>/datacompdr-join-index/``, built once per set of sources and shared by every rank and
DataLoader worker. How a sample uses them is in :mod:`.joins`.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tarfile
from dataclasses import dataclass
from typing import Any, Iterator, Optional, Sequence, Union

import numpy as np

from .decoders import decode_json, decode_text
from .members import HEX_UID, IMAGE_EXTENSIONS, iter_raw_samples, split_member_name

logger = logging.getLogger(__name__)


def _resolve_sources(spec: Union[str, Sequence[str]], what: str) -> list[str]:
    """Paths from a path / glob / list of them, sorted and de-duplicated; directories are walked recursively."""
    import glob as _glob

    patterns = [spec] if isinstance(spec, (str, os.PathLike)) else list(spec)
    paths = []
    for pattern in patterns:
        pattern = os.path.expanduser(os.fspath(pattern))
        matches = sorted(_glob.glob(pattern, recursive=True)) if _glob.has_magic(pattern) else [pattern]
        if not matches or not all(os.path.exists(m) for m in matches):
            raise FileNotFoundError(f"{what}: nothing found at {pattern!r}")
        for match in matches:
            if os.path.isdir(match):
                for root, dirs, files in os.walk(match):
                    dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                    paths.extend(os.path.join(root, f) for f in sorted(files) if not f.startswith("."))
            else:
                paths.append(match)
    return list(dict.fromkeys(paths))


def _original_size(meta: Any) -> Optional[tuple[int, int]]:
    if not isinstance(meta, dict):
        return None
    width, height = meta.get("original_width"), meta.get("original_height")
    if isinstance(width, (int, float)) and isinstance(height, (int, float)) and width > 0 and height > 0:
        return int(width), int(height)
    return None


JOIN_INDEX_VERSION = 2  # part of every index file's name: bump it when the index layout changes


def _uid_from(key: str, meta: Any) -> Optional[str]:
    """The uid of a sample keyed ``key`` with ``.json`` metadata ``meta``: ``meta["uid"]``, else a uid-shaped key."""
    if isinstance(meta, dict) and isinstance(meta.get("uid"), str) and meta["uid"]:
        return meta["uid"].lower()
    return key.lower() if HEX_UID.match(key.lower()) else None


@dataclass(frozen=True)
class ImageRef:
    path: str
    offset: Optional[int]  # None: a plain file; else the member's data offset inside the tar at ``path``
    size: int
    name: str
    original_size: Optional[tuple[int, int]]  # (width, height) recorded next to the image, if any

    def read(self) -> bytes:
        with open(self.path, "rb") as f:
            if self.offset is None:
                return f.read()
            f.seek(self.offset)
            return f.read(self.size)


class UidIndex:
    """A uid-sorted Arrow table in a memory-mapped file: lookups by binary search, no per-row Python objects.

    Built once per set of sources by :func:`join_index_file` and opened read-only by every process (ranks and
    DataLoader workers), which then share one copy through the page cache.
    """

    def __init__(self, path: str):
        import pyarrow as pa

        table = pa.ipc.open_file(pa.memory_map(path, "r")).read_all()
        self.columns = {name: table.column(name).combine_chunks() for name in table.column_names}  # 1 chunk: no copy
        uids = self.columns["uid"]
        width = uids.type.byte_width
        self.uids = np.frombuffer(uids.buffers()[1], dtype=f"S{width}", count=len(uids), offset=uids.offset * width)
        self.ambiguous = self.columns["ambiguous"].to_numpy(zero_copy_only=False)

    def is_ambiguous(self, uid: str) -> bool:
        """Whether ``uid`` occurs more than once in the sources with different content (see ``_write_sorted_index``)."""
        row = self.row(uid)
        return row is not None and bool(self.ambiguous[row])

    def row(self, uid: str) -> Optional[int]:
        needle = uid.lower().encode("utf-8")
        pos = int(np.searchsorted(self.uids, needle))
        return pos if pos < len(self.uids) and self.uids[pos] == needle else None

    def value(self, column: str, row: int) -> Any:
        return self.columns[column][row].as_py()

    def original_size(self, row: int) -> Optional[tuple[int, int]]:
        width, height = self.value("original_width", row), self.value("original_height", row)
        return (width, height) if width > 0 and height > 0 else None


class CaptionIndex(UidIndex):
    """uid -> (ground-truth caption, original (width, height)) from DataComp metadata parquet files or tar shards."""

    def get(self, uid: str) -> Optional[tuple[str, Optional[tuple[int, int]]]]:
        row = self.row(uid)
        return None if row is None else (self.value("text", row), self.original_size(row))

    @staticmethod
    def content(table, row: int) -> str:
        return table.column("text")[row].as_py()

    @classmethod
    def build_table(cls, paths: list[str]):
        import pyarrow as pa
        import pyarrow.compute as pc

        tables = [cls._parquet_rows(p) if p.endswith(".parquet") else cls._tar_rows(p)
                  for p in paths if p.endswith((".parquet", ".tar"))]
        table = pa.concat_tables(tables) if tables else None
        if table is not None:
            table = table.filter(pc.and_(pc.is_valid(table.column("uid")), pc.is_valid(table.column("text"))))
        if table is None or table.num_rows == 0:
            raise ValueError(f"captions: no (uid, text) rows in {paths[:5]}{'...' if len(paths) > 5 else ''}; expected "
                             f"DataComp metadata parquet files (uid, text) or tar shards of {{key}}.txt + {{key}}.json")
        return table

    @staticmethod
    def _parquet_rows(path: str):
        import pyarrow as pa
        import pyarrow.compute as pc
        import pyarrow.parquet as pq

        schema_names = set(pq.read_schema(path).names)
        text_column = next((c for c in ("text", "caption") if c in schema_names), None)
        if "uid" not in schema_names or text_column is None:
            raise ValueError(f"captions file {path} needs a 'uid' and a 'text' (or 'caption') column; "
                             f"it has {sorted(schema_names)}")
        size_columns = [c for c in ("original_width", "original_height") if c in schema_names]
        table = pq.read_table(path, columns=["uid", text_column] + size_columns)
        zeros = pa.array(np.zeros(table.num_rows, np.int32))
        sizes = {name: table.column(name).fill_null(0).cast(pa.int32()) if name in size_columns else zeros
                 for name in ("original_width", "original_height")}
        return pa.table({"uid": pc.utf8_lower(table.column("uid").cast(pa.string())),
                         "text": table.column(text_column).cast(pa.large_string()), **sizes})

    @staticmethod
    def _tar_rows(path: str):
        import pyarrow as pa

        rows = {"uid": [], "text": [], "original_width": [], "original_height": []}
        for raw in iter_raw_samples(path):
            if raw.problem is not None or "txt" not in raw.fields:
                continue
            try:
                meta = decode_json(raw.fields["json"]) if "json" in raw.fields else {}
                text = decode_text(raw.fields["txt"])
            except ValueError:
                continue
            uid = _uid_from(raw.key.rpartition("/")[2], meta)
            if uid is not None:
                size = _original_size(meta) or (0, 0)
                for column, value in zip(rows, (uid, text, *size)):
                    rows[column].append(value)
        return pa.table(rows, schema=pa.schema([("uid", pa.string()), ("text", pa.large_string()),
                                                 ("original_width", pa.int32()), ("original_height", pa.int32())]))


class ImageIndex(UidIndex):
    """uid -> image location: image files (named by uid, or with a ``.json`` sidecar) and img2dataset-style tars."""

    def get(self, uid: str) -> Optional[ImageRef]:
        row = self.row(uid)
        if row is None:
            return None
        offset = self.value("offset", row)
        return ImageRef(self.value("path", row), None if offset < 0 else offset, self.value("size", row),
                        self.value("name", row), self.original_size(row))

    @staticmethod
    def content(table, row: int) -> str:
        """A digest of the image bytes: two copies of one picture (another tar, another file name) are the same."""
        offset = table.column("offset")[row].as_py()
        ref = ImageRef(table.column("path")[row].as_py(), None if offset < 0 else offset,
                       table.column("size")[row].as_py(), "", None)
        try:
            return hashlib.sha256(ref.read()).hexdigest()
        except OSError as err:  # unreadable now: not provably the same picture
            return f"unreadable {ref.path}@{offset}: {err}"

    @classmethod
    def build_table(cls, paths: list[str]):
        import pyarrow as pa

        rows = {"uid": [], "path": [], "offset": [], "size": [], "name": [], "original_width": [],
                "original_height": []}

        def add(uid, path, offset, size, name, meta):
            if uid is not None:
                values = (uid, path, offset, size, name, *(_original_size(meta) or (0, 0)))
                for column, value in zip(rows, values):
                    rows[column].append(value)

        by_stem: dict[str, dict[str, str]] = {}
        for path in paths:
            if not path.endswith(".tar"):
                stem, _, extension = path.rpartition(".")
                by_stem.setdefault(stem, {})[extension.lower()] = path
        for stem, members in by_stem.items():
            image_ext = next((ext for ext in IMAGE_EXTENSIONS if ext in members), None)
            if image_ext is not None:
                meta = cls._read_sidecar(members.get("json"))
                image = members[image_ext]
                add(_uid_from(os.path.basename(stem), meta), image, -1, os.path.getsize(image),
                    os.path.basename(image), meta)
        for path in paths:
            if path.endswith(".tar"):
                for key, name, info, meta in cls._tar_images(path):
                    add(_uid_from(key, meta), path, info.offset_data, info.size, name, meta)
        if not rows["uid"]:
            raise ValueError(f"image_dir: no images ({', '.join(IMAGE_EXTENSIONS)}) named by uid, with a .json "
                             f"sidecar holding 'uid', or in webdataset tars, in {paths[:5]}"
                             f"{'...' if len(paths) > 5 else ''}")
        schema = pa.schema([("uid", pa.string()), ("path", pa.large_string()), ("offset", pa.int64()),
                            ("size", pa.int64()), ("name", pa.large_string()), ("original_width", pa.int32()),
                            ("original_height", pa.int32())])
        return pa.table(rows, schema=schema)

    @staticmethod
    def _read_sidecar(path: Optional[str]) -> Any:
        if path is None:
            return None
        try:
            with open(path, "rb") as f:
                return decode_json(f.read())
        except (OSError, ValueError) as err:
            logger.warning("datacompdr: image sidecar %s is unreadable (%s); using the file name as uid", path, err)
            return None

    @staticmethod
    def _tar_images(path: str) -> Iterator[tuple[str, str, tarfile.TarInfo, Any]]:
        """(key, image name, image member, parsed .json or None) per sample of an image tar; damage is logged."""
        groups: dict[str, dict[str, tarfile.TarInfo]] = {}
        metas: dict[str, Any] = {}
        try:
            with tarfile.open(path, mode="r:", ignore_zeros=True) as tar:
                for info in tar:
                    key, field_name = split_member_name(info.name)
                    if key is None or not info.isreg():
                        continue
                    groups.setdefault(key, {})[field_name] = info
                    if field_name == "json":
                        try:
                            metas[key] = decode_json(tar.extractfile(info).read())
                        except ValueError:
                            metas[key] = None
        except (tarfile.TarError, EOFError, OSError) as err:
            logger.warning("datacompdr: image shard %s is damaged (%s); indexed %d samples before the damage",
                           path, err, len(groups))
        for key, members in groups.items():
            image_ext = next((ext for ext in IMAGE_EXTENSIONS if ext in members), None)
            if image_ext is not None:
                base = key.rpartition("/")[2]
                yield base, f"{base}.{image_ext}", members[image_ext], metas.get(key)


def _write_sorted_index(table, path: str, content) -> list[str]:
    """Sort ``table`` by uid, keep one row per uid, and write it as one Arrow IPC batch; returns the ambiguous uids.

    A uid with several rows keeps the first (stable sort). Its rows' ``content(table, row)`` decides: all equal (the
    same caption, the same image bytes) is a harmless copy; else the uid is marked ``ambiguous`` and every sample
    with it is skipped, since which copy belongs to the sample cannot be known.
    """
    import pyarrow as pa

    uids = table.column("uid").cast(pa.binary()).to_numpy(zero_copy_only=False)
    width = max((len(u) for u in uids), default=1) or 1
    uids = uids.astype(f"S{width}")
    order = np.argsort(uids, kind="stable")
    uids, table = uids[order], table.take(pa.array(order))
    firsts = np.flatnonzero(np.concatenate([[True], uids[1:] != uids[:-1]]))
    ends = np.append(firsts[1:], len(uids))
    ambiguous = np.zeros(len(firsts), dtype=bool)
    for run in np.flatnonzero(ends - firsts > 1):
        ambiguous[run] = len({content(table, row) for row in range(firsts[run], ends[run])}) > 1
    fixed = pa.FixedSizeBinaryArray.from_buffers(pa.binary(width), len(firsts),
                                                 [None, pa.py_buffer(uids[firsts].tobytes())])
    table = (table.take(pa.array(firsts)).set_column(0, pa.field("uid", pa.binary(width)), fixed)
             .append_column("ambiguous", pa.array(ambiguous)).combine_chunks())
    with pa.OSFile(path, "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)
    return [u.decode("utf-8") for u in uids[firsts[ambiguous]]]


def join_index_file(kind: type, spec: Union[str, Sequence[str]], what: str, cache_dir: str) -> str:
    """Path of the index of ``spec`` under ``cache_dir``; built now (once, under a file lock) if absent.

    The name fingerprints the sources (path, size and mtime of every file), so changed sources get a new index. The
    index is written under a temporary name and renamed, so an interrupted build is never mistaken for a complete
    index.
    """
    from filelock import FileLock

    paths = _resolve_sources(spec, what)
    digest = hashlib.sha256(f"{kind.__name__} v{JOIN_INDEX_VERSION}\n".encode())
    for path in paths:
        stat = os.stat(path)
        digest.update(f"{os.path.abspath(path)}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    folder = os.path.join(cache_dir, "datacompdr-join-index")
    os.makedirs(folder, exist_ok=True)
    index_path = os.path.join(folder, f"{what}-{digest.hexdigest()[:32]}.arrow")
    with FileLock(index_path + ".lock"):
        if not os.path.exists(index_path):
            table = kind.build_table(paths)
            partial = f"{index_path}.{os.getpid()}.incomplete"
            ambiguous = _write_sorted_index(table, partial, kind.content)
            os.replace(partial, index_path)
            logger.info("datacompdr: indexed %d %s rows from %d files into %s", table.num_rows, what, len(paths),
                        index_path)
            if ambiguous:
                logger.warning("datacompdr: %d uid(s) occur more than once in %s= with different content (first: "
                               "%s); every sample with one of them is skipped as duplicate_uid. Fix: deduplicate "
                               "the %s sources", len(ambiguous), what, ", ".join(ambiguous[:5]), what)
    return index_path


_OPEN_INDEXES: dict[str, UidIndex] = {}  # per process: path -> memory-mapped index


def open_join_index(kind: type, path: str) -> UidIndex:
    if path not in _OPEN_INDEXES:
        _OPEN_INDEXES[path] = kind(path)
    return _OPEN_INDEXES[path]
