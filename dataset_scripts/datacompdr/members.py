"""The tar layout of DataCompDR shards: group consecutive ``{key}.{field}`` members into samples, and detect damage
instead of dying on it.

Shard layout (one sample = consecutive tar members ``{key}.{field}``):

* ``url.txt`` (image URL), ``json`` (``{"uid", "sha256"}``): optional.
* ``syn.json``: synthetic captions, ``{"syn_text": [...]}`` (v1) or several ``syn_text_*`` keys (raygen);
  keys are selected with ``syn_text_key_regex`` (``re.match``, as Apple's training code does).
* ``paug.json``: ``{"param_aug": [entry, ...]}``, entry ``[[i, j, h, w], [[op, mag], ...]]``; the list may also
  be stored as a JSON string (the HF card's type). See ``augment_replay``.
* ``npz`` (float32) or ``pth.gz`` (gzip of ``torch.save`` of bfloat16 tensors): ``image_emb`` [n_aug, D_total],
  ``text_emb``. Layout **v1**: ``text_emb`` = 1 GT row + one row per synthetic caption, exactly. Layout
  **raygen**: ``text_emb`` = GT row(s) only and ``<syn_key>_emb`` [n_syn, D_total] per synthetic-caption key.
"""

from __future__ import annotations

import gzip
import re
import tarfile
import zlib
from dataclasses import dataclass, field
from typing import Iterator, Optional

from datasets.utils.file_utils import xopen

IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp", "bmp", "gif", "tif", "tiff")
HEX_UID = re.compile(r"^[0-9a-f]{32}$")  # a DataComp uid; a sample key of this shape is the sample's uid
# The most bytes one member may hold, read or decompressed (``decoders``). A member is read whole into memory, and a
# compressed shard (.tar.gz) or member (pth.gz) can hold far more than its own size. A real sample is far smaller:
# DataCompDR-12M's 30 augmentation + 6 caption rows x D_total 1536 in bfloat16 are 110 kB, and 1000 rows x 16384
# dims in float32 or a 60-megapixel JPEG still fit. Past it there is damage or a decompression bomb: skipped.
MAX_MEMBER_BYTES = 64 * 2**20


@dataclass
class RawSample:
    key: str
    fields: dict = field(default_factory=dict)
    problem: Optional[tuple[str, str, str]] = None  # (reason, field, detail) when the sample must be dropped
    offset: int = -1  # of its first member's header in the (uncompressed) tar stream: its place in the shard

    def taint(self, reason: str, field_name: str, detail: str) -> None:
        if self.problem is None:
            self.problem = (reason, field_name, detail)


def split_member_name(name: str) -> tuple[Optional[str], Optional[str]]:
    """``dir/0001.url.txt`` -> (``dir/0001``, ``url.txt``): the key ends at the first dot of the basename."""
    directory, _, base = name.rpartition("/")
    stem, dot, extension = base.partition(".")
    if not dot or not stem:
        return None, None
    return (f"{directory}/{stem}" if directory else stem), extension.lower()


def _padded(size: int) -> int:
    return (size + tarfile.BLOCKSIZE - 1) // tarfile.BLOCKSIZE * tarfile.BLOCKSIZE


def iter_raw_samples(tar_path: str, download_config=None) -> Iterator[RawSample]:
    """Yield the samples of one (possibly remote, possibly damaged) webdataset tar.

    The tar is read as a stream with ``ignore_zeros=True``, so a corrupt header does not end the archive silently:
    tarfile resynchronises on the next valid header, and the jump in member offsets reveals the lost bytes. The
    samples on both sides of such a gap are tainted, since the lost member may belong to either. A truncated
    member, a compression error, or a missing end-of-archive marker taints the open sample and ends the shard.
    """
    current: Optional[RawSample] = None
    taint_next: Optional[tuple[str, str, str]] = None
    expected_offset = 0
    with xopen(tar_path, "rb", download_config=download_config, block_size=0) as fileobj:
        try:
            with tarfile.open(fileobj=fileobj, mode="r|*", ignore_zeros=True) as stream:
                for info in stream:
                    if info.offset != expected_offset:
                        detail = (f"{info.offset - expected_offset} unreadable bytes at offset {expected_offset} "
                                  f"before member {info.name!r}")
                        if current is not None:
                            current.taint("corrupt_tar_member", "(tar)", detail)
                        taint_next = ("corrupt_tar_member", "(tar)", detail)
                    expected_offset = info.offset_data + _padded(info.size)
                    if not info.isreg():
                        continue
                    basename = info.name.rpartition("/")[2]
                    key, field_name = split_member_name(info.name)
                    if key is None or basename.startswith((".", "__")):
                        continue
                    if current is None or key != current.key:  # a new key: the previous sample is complete
                        if current is not None:
                            yield current
                        current = RawSample(key, offset=info.offset)
                        if taint_next is not None:
                            current.taint(*taint_next)
                    taint_next = None  # a gap inside the open sample has already tainted it
                    stream.members = []  # streaming: do not keep every TarInfo
                    if info.size > MAX_MEMBER_BYTES:  # skipped unread: the stream seeks past its data
                        current.taint("oversized_member", field_name, f"member {info.name!r} is {info.size} bytes, "
                                      f"more than the {MAX_MEMBER_BYTES}-byte limit for one member")
                        continue
                    data = stream.extractfile(info).read()
                    if field_name in current.fields:
                        current.taint("duplicate_member", field_name, f"member {info.name!r} appears twice")
                    else:
                        current.fields[field_name] = data
                end_offset = stream.offset
        except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as err:
            if current is None:
                current = RawSample("(shard start)")
            current.taint("corrupt_tar", "(tar)", f"{type(err).__name__}: {err}; the rest of the shard is lost")
            yield current
            return
    if current is not None:
        # A complete archive ends with two zero blocks after the last member; without them the file was cut at a
        # member boundary and the last sample may be incomplete.
        if end_offset < expected_offset + 2 * tarfile.BLOCKSIZE:
            current.taint("corrupt_tar", "(tar)", "archive ends without its end-of-archive marker (truncated file)")
        yield current
