"""The caption and image joins applied to one sample, and the crop boxes mapped onto the joined image.

Samples without an image (or caption), or whose uid has several different ones, are dropped and counted. Crop boxes
are in the pixels of the image Apple had: if the recorded original size (``captions`` metadata first, then the
image's own ``.json``) differs from the joined image, all boxes are rescaled, provided the image is a proportional
resize of that original (else the sample is dropped: a cropped or padded download cannot be mapped); a box that
still does not fit drops the sample. Nothing is padded. The uid lookups go through the index files of
:mod:`.join_index`.
"""

from __future__ import annotations

import hashlib
import io
from typing import TYPE_CHECKING, Optional

import PIL.Image

from .configs import DataCompDRConfig
from .join_index import CaptionIndex, ImageIndex, open_join_index
from .members import RawSample
from .skips import record_crop_rescaled

if TYPE_CHECKING:
    from .assemble import SampleAssembler


def rescale_box(box: list[int], from_size: tuple[int, int], to_size: tuple[int, int]) -> list[int]:
    """Map ``[top, left, height, width]`` from an image of ``from_size`` (w, h) to one of ``to_size`` (w, h).

    Rounding may overshoot the border by one pixel; only that is clamped. A box that lies further out stays out
    (and the caller drops the sample).
    """
    scale_y, scale_x = to_size[1] / from_size[1], to_size[0] / from_size[0]
    top, left = int(round(box[0] * scale_y)), int(round(box[1] * scale_x))
    height, width = max(1, int(round(box[2] * scale_y))), max(1, int(round(box[3] * scale_x)))
    if top + height == to_size[1] + 1:
        height -= 1
    if left + width == to_size[0] + 1:
        width -= 1
    return [top, left, height, width]


def read_image_size(data: bytes, verify: bool = True) -> tuple[int, int]:
    """``(width, height)`` of the stored pixel grid: no EXIF rotation, since the crop boxes refer to that grid.

    With ``verify`` the whole file is decoded, so a truncated or corrupt image fails here and not in training.
    JPEGs are decoded at 1/8 scale (DCT scaling): all entropy-coded data is still read, for ~20 % less CPU.
    """
    with PIL.Image.open(io.BytesIO(data)) as img:
        size = img.size
        if verify:
            img.draft(None, (max(1, size[0] // 8), max(1, size[1] // 8)))
            img.load()
    return size


def _same_aspect(original: tuple[int, int], actual: tuple[int, int]) -> bool:
    """Whether ``actual`` (w, h) is a proportional resize of ``original``, up to rounding each side to a pixel."""
    relative = (actual[0] / original[0]) / (actual[1] / original[1]) - 1.0
    return abs(relative) <= 1.0 / min(actual) + 1e-9


def _box_fits(box: list[int], size: tuple[int, int]) -> bool:
    top, left, height, width = box
    return top >= 0 and left >= 0 and height > 0 and width > 0 and top + height <= size[1] and left + width <= size[0]


class SampleJoins:
    """The optional caption and image joins of one builder, over the index files built in ``_split_generators``."""

    def __init__(self, config: DataCompDRConfig, caption_index: Optional[str], image_index: Optional[str]):
        self.config = config
        self.captions = None if caption_index is None else open_join_index(CaptionIndex, caption_index)
        self.images = None if image_index is None else open_join_index(ImageIndex, image_index)

    def apply(self, example: dict, raw: RawSample, shard: str, assembler: SampleAssembler) -> None:
        uid = example["uid"].lower()
        original_size = None
        if self.captions is not None:
            if self.captions.is_ambiguous(uid):
                assembler.fail("duplicate_uid", "text", raw, shard, f"uid {uid} has different captions in captions=")
            found = self.captions.get(uid)
            if found is None:
                assembler.fail("missing_caption", "text", raw, shard, f"uid {uid} not in captions=")
            example["text"], original_size = found
        if self.images is None:
            return
        if self.images.is_ambiguous(uid):
            assembler.fail("duplicate_uid", "image", raw, shard, f"uid {uid} has different images in image_dir=")
        ref = self.images.get(uid)
        if ref is None:
            assembler.fail("missing_image", "image", raw, shard, f"uid {uid} not in image_dir=")
        try:
            data = ref.read()
        except OSError as err:
            assembler.fail("unreadable_image", "image", raw, shard, f"{ref.path}: {type(err).__name__}: {err}")
        if self.config.check_sha256 and example["sha256"] and hashlib.sha256(data).hexdigest() != example["sha256"]:
            assembler.fail("sha256_mismatch", "image", raw, shard, f"{ref.name}: bytes differ from json sha256")
        try:
            size = read_image_size(data, verify=self.config.verify_images)
        except Exception as err:  # PIL raises many types for broken files; one broken image drops one sample
            assembler.fail("unreadable_image", "image", raw, shard, f"{ref.name}: {type(err).__name__}: {err}")
        original_size = original_size or ref.original_size
        rescaled = original_size is not None and tuple(original_size) != tuple(size)
        if rescaled and not _same_aspect(original_size, size):
            assembler.fail("image_size_mismatch", "image", raw, shard,
                           f"{ref.name} is {size[0]}x{size[1]}, not a resize of the recorded {original_size[0]}x"
                           f"{original_size[1]} original (cropped or padded?): its crop boxes cannot be mapped")
        for index, entry in enumerate(example["param_aug"]):
            box = entry["crop"]
            if rescaled:
                box = entry["crop"] = rescale_box(box, original_size, size)
            if not _box_fits(box, size):
                how = f" after rescaling from the original {original_size[0]}x{original_size[1]}" if rescaled else ""
                assembler.fail("crop_outside_image", f"param_aug[{index}].crop", raw, shard,
                               f"box [top, left, height, width] = {box} does not fit the {size[0]}x{size[1]} image "
                               f"{ref.name}{how}")
        if rescaled:
            record_crop_rescaled()
        example.update(image={"bytes": data, "path": ref.name}, image_width=size[0], image_height=size[1],
                       crop_rescaled=rescaled)
