"""Why a DataCompDR sample is dropped, and the per-process counts of what was yielded and skipped.

Bad input never stops the stream and is never yielded: the sample is skipped, counted under a reason
(:data:`SKIP_REASONS`) and logged with the field, ``__key__`` and shard: the first 3 per reason and process at
WARNING, the others at DEBUG, with one WARNING line of counts per reason every 1000 skips of a process (so a shard
set with many bad samples logs a few examples and running totals, not a line per sample) and one INFO line per
shard. ``datacompdr_stats()`` returns this process' counts (with a
DataLoader, each worker process keeps its own; the per-shard log lines are the cross-process record).
``strict=True`` raises :class:`DataCompDRSampleError` instead. Deliberately, decoding errors of *one sample* are
caught and not re-raised: that is the contract the issue asks for.
"""

from __future__ import annotations

import logging
from collections import Counter

logger = logging.getLogger(__name__)

# Why a sample was dropped. Each is counted in ``datacompdr_stats()["skipped"]``.
SKIP_REASONS = (
    "corrupt_tar",  # the tar stream could not be read on (truncated / bad compression); the open sample is dropped
    "corrupt_tar_member",  # unreadable bytes (bad header) inside the tar; the samples around them are dropped
    "duplicate_member",  # the same {key}.{field} twice in one sample
    "missing_member",  # paug.json / syn.json / npz|pth.gz (or an array inside it) absent
    "undecodable_member",  # JSON / npz / gzip / torch payload cannot be decoded
    "oversized_member",  # a member (or what it decompresses to) is past the size limit: damage or a decompression bomb
    "bad_param_aug",  # paug.json does not hold valid [[i, j, h, w], [[op, mag], ...]] entries
    "bad_syn_text",  # no synthetic-caption key matches, or the value is not a list of strings
    "bad_embedding",  # wrong rank, wrong width, non-float or non-finite embeddings
    "count_mismatch",  # image_emb rows != len(param_aug), or text rows != GT + synthetic captions
    "uid_mismatch",  # json uid differs from the uid-shaped __key__
    "missing_caption",  # captions= given, uid not found
    "missing_image",  # image_dir= given, uid not found
    "duplicate_uid",  # the uid repeats with different content in captions=, image_dir= or the shards; or a later
    # identical copy of a sample in the shards (the first is kept)
    "unreadable_image",  # image bytes cannot be decoded
    "sha256_mismatch",  # check_sha256=True and the image bytes differ from the recorded hash
    "image_size_mismatch",  # the joined image is not a proportional resize of the recorded original
    "crop_outside_image",  # a crop box does not fit the joined image, even after rescaling
)
_LOGGED_PER_REASON = 3  # examples per reason and process at WARNING; the rest at DEBUG
_SUMMARY_EVERY = 1000  # one WARNING line of running counts per this many skips of a process


class DataCompDRSampleError(ValueError):
    """One sample cannot be used. Raised in strict mode; otherwise counted and skipped."""

    def __init__(self, reason: str, field_name: str, key: str, shard: str, detail: str):
        if reason not in SKIP_REASONS:
            raise ValueError(f"unknown skip reason {reason!r}; expected one of {SKIP_REASONS}")
        self.reason, self.field_name, self.key, self.shard, self.detail = reason, field_name, key, shard, detail
        super().__init__(f"[{reason}] field {field_name!r} of sample __key__={key!r} in shard {shard!r}: {detail}")


_COUNTS: Counter = Counter()  # per process


def datacompdr_stats() -> dict:
    """``{"yielded": n, "skipped": {reason: n}, "crop_rescaled": n}`` for this process since the last reset."""
    return {
        "yielded": _COUNTS["yielded"],
        "skipped": {reason: _COUNTS[f"skipped:{reason}"] for reason in SKIP_REASONS if _COUNTS[f"skipped:{reason}"]},
        "crop_rescaled": _COUNTS["crop_rescaled"],
    }


def reset_datacompdr_stats() -> None:
    _COUNTS.clear()


def record_skip(error: DataCompDRSampleError, shard_counts: Counter) -> None:
    _COUNTS[f"skipped:{error.reason}"] += 1
    _COUNTS["skipped"] += 1
    shard_counts[error.reason] += 1
    count = _COUNTS[f"skipped:{error.reason}"]
    logger.log(logging.WARNING if count <= _LOGGED_PER_REASON else logging.DEBUG, "datacompdr: skipped sample: %s%s",
               error, f" (the first {_LOGGED_PER_REASON} skips of a reason are logged, the others at DEBUG)"
               if count == _LOGGED_PER_REASON else "")
    if _COUNTS["skipped"] % _SUMMARY_EVERY == 0:
        logger.warning("datacompdr: %d samples skipped so far in this process: %s", _COUNTS["skipped"],
                       ", ".join(f"{reason} {n}" for reason, n in sorted(datacompdr_stats()["skipped"].items())))


def record_yielded() -> None:
    _COUNTS["yielded"] += 1


def record_crop_rescaled() -> None:
    _COUNTS["crop_rescaled"] += 1
