"""The uid each output sample is written under, and the check that no uid occurs twice in the whole input set.

The reinforced shards are joined back to their images and captions by uid (``datacompdr``'s ``image_dir=`` and
``captions=``), so two input samples with one uid would be written as two samples that cannot be told apart: the
run is refused before any work, naming the uids and the inputs that hold them.
"""

from __future__ import annotations

import hashlib
import json
import re
import tarfile
from typing import TYPE_CHECKING, Any, Iterator, Optional

from ..datacompdr.members import MAX_MEMBER_BYTES, split_member_name

if TYPE_CHECKING:
    from .inputs import InputRecord, InputShard

_CLEAN_UID = re.compile(r"^[A-Za-z0-9_-]{1,128}$")
_NAMED_PER_UID, _NAMED_UIDS = 3, 5


def usable_uid(value: Any) -> Optional[str]:
    """An input's own uid if it can name tar members, else None (the sample then gets a uid from its key)."""
    return str(value) if value is not None and _CLEAN_UID.match(str(value)) else None


def output_uid(record: InputRecord) -> str:
    # No usable uid: a DataComp-shaped 32-hex id derived from where the sample came from (stable across runs, and
    # unique, since the key names the input).
    return usable_uid(record.uid) or hashlib.md5(record.key.encode("utf-8")).hexdigest()


def tar_uids(path: str) -> Iterator[Optional[str]]:
    """The ``.json`` ``uid`` of each sample of a tar (None without one), from the member headers and ``.json``
    members alone: the other members' data is seeked past. Damage ends the list; the pipeline reports it."""
    try:
        with tarfile.open(path, mode="r:") as tar:
            key, uid = None, None
            for info in tar:
                name_key, field_name = split_member_name(info.name)
                if name_key is None or not info.isreg() or info.name.rpartition("/")[2].startswith((".", "__")):
                    continue
                if name_key != key:  # a new key starts a new sample, as webdataset readers group members
                    if key is not None:
                        yield uid
                    key, uid = name_key, None
                if field_name == "json" and info.size <= MAX_MEMBER_BYTES:
                    try:
                        meta = json.loads(tar.extractfile(info).read().decode("utf-8"))
                    except ValueError:
                        meta = None
                    uid = meta.get("uid") if isinstance(meta, dict) else None
            if key is not None:
                yield uid
    except (tarfile.TarError, EOFError, OSError):
        return


def refuse_duplicate_uids(dataset: str, shards: list[InputShard]) -> None:
    """Raise if a uid occurs in more than one input sample (in one input or in several)."""
    where: dict[str, list[str]] = {}
    for shard in shards:
        for value in shard.uids():
            uid = usable_uid(value)
            if uid is not None:
                where.setdefault(uid, []).append(shard.source)
    duplicates = {uid: sources for uid, sources in where.items() if len(sources) > 1}
    if duplicates:
        named = "; ".join(f"uid {uid!r} in {', '.join(sources[:_NAMED_PER_UID])}"
                          f"{' ...' if len(sources) > _NAMED_PER_UID else ''}"
                          for uid, sources in list(duplicates.items())[:_NAMED_UIDS])
        raise ValueError(f"--dataset {dataset!r}: {len(duplicates)} uid(s) occur in more than one input sample "
                         f"({named}{'; ...' if len(duplicates) > _NAMED_UIDS else ''}); the reinforced shards could "
                         f"not tell their samples apart. Fix: deduplicate the inputs (one sample per uid) and rerun")
