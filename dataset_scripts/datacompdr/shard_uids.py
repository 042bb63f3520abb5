"""The uid index of the DataCompDR shards themselves (``data_files``): a uid carried by several samples is yielded
once at most.

Two samples with one uid but different bytes cannot both be the sample of that uid, and which one is right cannot
be known: every sample with such a uid is skipped as ``duplicate_uid`` (in both modes, since both run the same
generator). Byte-identical copies (a shard copied twice under two names, a sample re-written into another shard) are
harmless: the first, in the index's order (sorted shard paths, then position in the shard), is yielded and the
others are skipped as ``duplicate_uid`` too, so every uid is trained at most once per epoch.

The index is built like the join indexes (:func:`.join_index.join_index_file`: once per set of shards, under a file
lock, memory-mapped by every rank and worker) from the tar headers and the small ``json`` members only: the data
of the other members is seeked over, and read only for the uids that repeat, to compare their bytes. Only local,
uncompressed ``.tar`` shards are indexed (a remote or ``.tar.gz`` shard cannot be seeked over; ``dedupe_uids=False``
turns the index off). Cost and rationale: docs/datacompdr.md#repeated-uids-in-the-shards.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tarfile
from collections.abc import Iterator
from typing import Any

from .decoders import decode_json
from .join_index import UidIndex, _uid_from
from .members import split_member_name

logger = logging.getLogger(__name__)

_MAX_JSON_BYTES = 2**20  # a sample's json is {"uid", "sha256", ...}: larger is damage, not read for its uid


class ShardUidIndex(UidIndex):
    """uid -> the first sample carrying it: shard path and the tar offset of its first member."""

    def first_sample(self, uid: str) -> tuple[str, int, bool] | None:
        """(shard path, offset of the sample's first member, ambiguous) of the kept sample of ``uid``, or None."""
        row = self.row(uid)
        if row is None:
            return None
        return self.value("path", row), self.value("offset", row), bool(self.ambiguous[row])

    @staticmethod
    def content(table, row: int) -> str:
        """A digest of the sample's member names and bytes, read only for uids that occur more than once."""
        path = table.column("path")[row].as_py()
        digest = hashlib.sha256()
        try:
            with open(path, "rb") as f:
                for field_name, offset, size in json.loads(table.column("members")[row].as_py()):
                    f.seek(offset)
                    digest.update(f"{field_name}\0{size}\0".encode() + f.read(size))
        except OSError as err:  # unreadable now: not provably a copy
            return f"unreadable {path}: {err}"
        return digest.hexdigest()

    @classmethod
    def build_table(cls, paths: list[str]):
        import pyarrow as pa

        rows = {"uid": [], "path": [], "offset": [], "members": []}
        for path in paths:
            for uid, offset, members in _tar_samples(path):
                for column, value in zip(rows, (uid, path, offset, json.dumps(members))):
                    rows[column].append(value)
        schema = pa.schema([("uid", pa.string()), ("path", pa.large_string()), ("offset", pa.int64()),
                            ("members", pa.large_string())])
        return pa.table(rows, schema=schema)


def _tar_samples(path: str) -> Iterator[tuple[str, int, list]]:
    """(uid, offset of the first member, [(field, data offset, size), ...]) per sample with a uid, grouped as
    :func:`.members.iter_raw_samples` groups them (consecutive members of one key); damage ends the shard's scan
    (the generator then skips the damaged samples itself)."""
    key: str | None = None
    offset, members, meta = 0, [], None
    try:
        with tarfile.open(path, mode="r:", ignore_zeros=True) as tar:
            for info in tar:
                name_key, field_name = split_member_name(info.name)
                if not info.isreg() or name_key is None or info.name.rpartition("/")[2].startswith((".", "__")):
                    continue
                if name_key != key:
                    if key is not None and (uid := _uid_from(key.rpartition("/")[2], meta)) is not None:
                        yield uid, offset, members
                    key, offset, members, meta = name_key, info.offset, [], None
                members.append((field_name, info.offset_data, info.size))
                if field_name == "json" and info.size <= _MAX_JSON_BYTES:
                    meta = _decoded_json(tar.extractfile(info).read())
                tar.members = []  # do not keep every TarInfo
    except (tarfile.TarError, EOFError, OSError) as err:
        logger.warning("datacompdr: shard %s is damaged (%s); its uids after the damage are not checked for repeats",
                       path, err)
        return
    if key is not None and (uid := _uid_from(key.rpartition("/")[2], meta)) is not None:
        yield uid, offset, members


def _decoded_json(data: bytes) -> Any:
    try:
        return decode_json(data)
    except ValueError:
        return None


def indexable_shards(tar_paths: list[str]) -> list[str] | None:
    """The shards to index, or None (with the reason logged) when they are not all local uncompressed tars."""
    others = [p for p in tar_paths if not (str(p).endswith(".tar") and os.path.isfile(p))]
    if others:
        logger.info("datacompdr: repeated uids across the shards are not checked: %s is not a local .tar file "
                    "(remote and compressed shards cannot be indexed without reading them whole)", others[0])
        return None
    return [os.path.abspath(p) for p in tar_paths]
