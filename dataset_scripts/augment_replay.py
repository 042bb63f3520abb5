"""Sample, store and replay the image augmentations of DataCompDR / DFNDR.

A reinforced sample stores the parameters of every augmented view its teacher embeddings were computed on,
in the compressed format of Apple's ``dr/transforms.py`` (``Compose.compress``)::

    entry = [[i, j, h, w], [[op, magnitude], [op, magnitude]]]
             ^ RandomResizedCrop box       ^ RandAugment ops, in the order applied

* ``[i, j, h, w]`` is the crop box (top, left, height, width) in pixels of the *original* image, as returned by
  RandomResizedCrop's parameter sampling on that image.
* ``op`` indexes :data:`OPS` (0 Identity ... 13 Equalize). ``magnitude`` is the final, already signed value handed
  to the op (a brightness factor offset, a shear, degrees, pixels, bits or a threshold). It was computed on the
  224-px crop of the generator, so translations are absolute pixels and are not rescaled for other student sizes.
* The RandAugment entry may be ``null`` when the op was skipped at generation time (only possible with p < 1).

Replay (:func:`apply`) re-creates the student's view: crop the box out of the original image, resize it to the
student's size with the student's interpolation, apply the stored ops with NEAREST interpolation and zero fill, then
``to_tensor`` and the student's normalisation. On the PIL path this is pixel-identical to torchvision's own
``transforms.functional.resized_crop`` followed by ``transforms.autoaugment._apply_op`` with the same parameters
(``tests/test_augment_replay.py`` checks it for every op). The geometric and photometric ops are executed by
torchvision's public functional API; this module owns the encoding, the sampling and the dispatch.

Sampling (:func:`sample_params`, :class:`AugmentationSampler`) draws new entries in the same encoding for the
reinforcement tool. The random generator is always passed in (``random.Random``); the global ``random`` module is
never used, so a seeded tool is reproducible. The distribution matches torchvision's RandomResizedCrop (scale, log-
uniform ratio, 10 tries, centre-crop fallback) and RandAugment (uniform op, magnitude bin, random sign), but the
random *stream* is Python's, not torch's.
"""

from __future__ import annotations

import io
import json
import math
import numbers
import random
from dataclasses import dataclass
from functools import lru_cache
from types import MappingProxyType
from typing import Any, Mapping, Optional, Sequence, Union

import numpy as np
import PIL.Image
import torch
import torchvision.transforms.functional as TF
from torchvision.transforms import InterpolationMode

OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

# Index -> op name, in the order of torchvision's RandAugment augmentation space (the stored ``op`` is this index).
OPS = (
    "Identity",
    "ShearX",
    "ShearY",
    "TranslateX",
    "TranslateY",
    "Rotate",
    "Brightness",
    "Color",
    "Contrast",
    "Sharpness",
    "Posterize",
    "Solarize",
    "AutoContrast",
    "Equalize",
)

_PIL_RESAMPLE = {
    "nearest": PIL.Image.Resampling.NEAREST,
    "bilinear": PIL.Image.Resampling.BILINEAR,
    "bicubic": PIL.Image.Resampling.BICUBIC,
    "lanczos": PIL.Image.Resampling.LANCZOS,
    "box": PIL.Image.Resampling.BOX,
    "hamming": PIL.Image.Resampling.HAMMING,
}

ImageSource = Union[PIL.Image.Image, bytes, dict, str]


class CropOutsideImageError(ValueError):
    """A stored crop box does not lie inside the image it is replayed on."""


# --------------------------------------------------------------------------------------------------------------------
# Parameter encoding


@dataclass(frozen=True)
class ReplayParams:
    """One decoded augmentation entry: the crop box and the RandAugment ops."""

    crop: tuple[int, int, int, int]  # top, left, height, width in original pixels
    ops: tuple[tuple[int, float], ...] = ()

    def to_entry(self) -> list:
        """The published, JSON-safe nested-list form ``[[i, j, h, w], [[op, mag], ...]]``."""
        return [list(self.crop), [[op, mag] for op, mag in self.ops]]

    def to_features(self) -> dict:
        """The typed form used by the ``datacompdr`` builder's ``param_aug`` column."""
        return {"crop": list(self.crop), "ops": [{"op": op, "magnitude": mag} for op, mag in self.ops]}


# The builder stores crop boxes and op indices as int32 (a larger value would abort a map-style build in Arrow).
INT32_MAX = 2**31 - 1


def _as_int(value: Any, what: str) -> int:
    if type(value) is int:  # fast path: JSON integers (this runs for every entry of every sample)
        return value
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{what} must be a number, got {value!r}")
    if isinstance(value, numbers.Integral):
        return int(value)
    if not math.isfinite(value) or value != int(value):
        raise ValueError(f"{what} must be an integer, got {value!r}")
    return int(value)


def _as_magnitude(value: Any, k: int, op: int) -> float:
    if type(value) is float and math.isfinite(value):  # fast path: JSON floats
        return value
    if not isinstance(value, bool) and isinstance(value, numbers.Real):
        try:
            magnitude = float(value)
        except OverflowError:  # an integer past the float range
            magnitude = math.inf
        if math.isfinite(magnitude):
            return magnitude
    raise ValueError(f"op {k} ({OPS[op]}) magnitude must be a finite number, got {value!r}")


def _parse_ops(ops: Any) -> tuple[tuple[int, float], ...]:
    if ops is None:  # RandAugment skipped at generation time (p < 1)
        return ()
    if not isinstance(ops, (list, tuple)):
        raise ValueError(f"RandAugment ops must be a list of [op, magnitude] pairs or null, got {ops!r}")
    parsed = []
    for k, pair in enumerate(ops):
        if isinstance(pair, dict):
            if set(pair) != {"op", "magnitude"}:
                raise ValueError(f"op {k} must have exactly the keys 'op' and 'magnitude', got {sorted(pair)}")
            op, magnitude = pair["op"], pair["magnitude"]
        elif isinstance(pair, (list, tuple)) and len(pair) == 2:
            op, magnitude = pair
        else:
            raise ValueError(f"op {k} must be [op, magnitude], got {pair!r}")
        op = _as_int(op, f"op {k} index")
        if not 0 <= op < len(OPS):
            raise ValueError(f"op {k} index is {op}, expected 0..{len(OPS) - 1} ({', '.join(OPS)})")
        parsed.append((op, _as_magnitude(magnitude, k, op)))
    return tuple(parsed)


def parse_entry(entry: Any) -> ReplayParams:
    """Decode one stored augmentation entry.

    Accepts the published nested list ``[[i, j, h, w], [[op, mag], ...]]`` (RandAugment part may be ``null``),
    the same as a JSON string, the builder's typed dict ``{"crop": [...], "ops": [{"op", "magnitude"}, ...]}``,
    or a :class:`ReplayParams`. Raises ``ValueError`` naming what is wrong.
    """
    if isinstance(entry, ReplayParams):
        return entry
    if isinstance(entry, (str, bytes)):
        try:
            entry = json.loads(entry)
        except json.JSONDecodeError as err:
            raise ValueError(f"augmentation entry is a string but not valid JSON: {err}") from None
    if isinstance(entry, dict):
        if set(entry) != {"crop", "ops"}:
            raise ValueError(f"augmentation entry dict must have the keys 'crop' and 'ops', got {sorted(entry)}")
        crop, ops = entry["crop"], entry["ops"]
    elif isinstance(entry, (list, tuple)):
        if len(entry) != 2:
            raise ValueError(
                f"augmentation entry must be [crop_box, rand_augment_ops] (RandomResizedCrop + RandAugment, the "
                f"DataCompDR configuration), got {len(entry)} parts: {entry!r}"
            )
        crop, ops = entry
    else:
        raise ValueError(f"augmentation entry must be a list, dict or JSON string, got {type(entry).__name__}")
    if not isinstance(crop, (list, tuple)) or len(crop) != 4:
        raise ValueError(f"crop box must be [top, left, height, width], got {crop!r}")
    top, left, height, width = (_as_int(crop[0], "crop box i"), _as_int(crop[1], "crop box j"),
                                _as_int(crop[2], "crop box h"), _as_int(crop[3], "crop box w"))
    if height <= 0 or width <= 0 or top < 0 or left < 0:
        raise ValueError(f"crop box [top, left, height, width] = {list(crop)} must have top, left >= 0 and a "
                         f"positive height and width")
    if top + height > INT32_MAX or left + width > INT32_MAX:
        raise ValueError(f"crop box [top, left, height, width] = {list(crop)} reaches past {INT32_MAX} pixels (int32, "
                         f"the stored type); no image is that large, so the entry is corrupt")
    return ReplayParams(crop=(top, left, height, width), ops=_parse_ops(ops))


def parse_param_aug(value: Any) -> list[ReplayParams]:
    """Decode a whole ``param_aug`` value: a list of entries, or that list as a JSON string (the HF card's type)."""
    if isinstance(value, (str, bytes)):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as err:
            raise ValueError(f"param_aug is a string but not valid JSON: {err}") from None
    if not isinstance(value, (list, tuple)) or not value:
        raise ValueError(f"param_aug must be a non-empty list of augmentation entries, got {type(value).__name__}")
    params = []
    for index, entry in enumerate(value):
        try:
            params.append(parse_entry(entry))
        except ValueError as err:
            raise ValueError(f"param_aug[{index}]: {err}") from None
    return params


# --------------------------------------------------------------------------------------------------------------------
# Sampling


def _check_rng(rng: Any) -> random.Random:
    if not isinstance(rng, random.Random):
        raise TypeError(
            f"rng must be a random.Random instance (e.g. random.Random(seed)), got {type(rng).__name__}; the global "
            f"`random` module is never used so that the reinforcement is reproducible."
        )
    return rng


def _normalize_size(size: Union[int, Sequence[int]], what: str = "size") -> tuple[int, int]:
    """Return (height, width) from an int or a (height, width) pair."""
    if isinstance(size, numbers.Integral) and not isinstance(size, bool):
        size = (int(size), int(size))
    if not isinstance(size, (list, tuple)) or len(size) != 2 or not all(
        isinstance(s, numbers.Integral) and not isinstance(s, bool) and s > 0 for s in size
    ):
        raise ValueError(f"{what} must be a positive int or a (height, width) pair of positive ints, got {size!r}")
    return int(size[0]), int(size[1])


def sample_crop_box(
    rng: random.Random,
    image_size: tuple[int, int],
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3.0 / 4.0, 4.0 / 3.0),
) -> list[int]:
    """Draw a RandomResizedCrop box ``[top, left, height, width]`` for an image of ``image_size = (width, height)``.

    Same distribution as torchvision: area fraction uniform in ``scale``, aspect ratio log-uniform in ``ratio``,
    10 attempts, then a centre crop clamped to ``ratio``.
    """
    rng = _check_rng(rng)
    width, height = image_size
    area = width * height
    log_low, log_high = math.log(ratio[0]), math.log(ratio[1])
    for _ in range(10):
        target_area = area * rng.uniform(scale[0], scale[1])
        aspect = math.exp(rng.uniform(log_low, log_high))
        crop_w = int(round(math.sqrt(target_area * aspect)))
        crop_h = int(round(math.sqrt(target_area / aspect)))
        if 0 < crop_w <= width and 0 < crop_h <= height:
            return [rng.randint(0, height - crop_h), rng.randint(0, width - crop_w), crop_h, crop_w]
    # Fallback: the largest centred box whose aspect ratio lies within ``ratio``.
    image_ratio = width / height
    if image_ratio < min(ratio):
        crop_w, crop_h = width, int(round(width / min(ratio)))
    elif image_ratio > max(ratio):
        crop_w, crop_h = int(round(height * max(ratio))), height
    else:
        crop_w, crop_h = width, height
    return [(height - crop_h) // 2, (width - crop_w) // 2, crop_h, crop_w]


@lru_cache(maxsize=32)
def magnitude_table(num_bins: int, image_hw: tuple[int, int]) -> Mapping[str, tuple[Optional[tuple[float, ...]], bool]]:
    """Magnitude per bin and whether it is signed, for every op, on an image of ``image_hw = (height, width)``.

    Cached, hence read-only. The bins are computed in float32 (``torch.linspace``), so the values are the
    float32-rounded numbers that the generator stored (e.g. TranslateX at bin 9 of 31 on 224 px: 30.45317...).
    """
    height, width = image_hw

    def bins(start: float, end: float) -> tuple[float, ...]:
        return tuple(float(v) for v in torch.linspace(start, end, num_bins).tolist())

    # 8 bits at bin 0 down to 4 bits at the last bin, rounded half to even.
    posterize_bits = tuple(float(8 - round(b * 4 / (num_bins - 1))) for b in range(num_bins))
    return MappingProxyType({
        "Identity": (None, False),
        "ShearX": (bins(0.0, 0.3), True),
        "ShearY": (bins(0.0, 0.3), True),
        "TranslateX": (bins(0.0, 150.0 / 331.0 * width), True),
        "TranslateY": (bins(0.0, 150.0 / 331.0 * height), True),
        "Rotate": (bins(0.0, 30.0), True),
        "Brightness": (bins(0.0, 0.9), True),
        "Color": (bins(0.0, 0.9), True),
        "Contrast": (bins(0.0, 0.9), True),
        "Sharpness": (bins(0.0, 0.9), True),
        "Posterize": (posterize_bits, False),
        "Solarize": (bins(255.0, 0.0), False),
        "AutoContrast": (None, False),
        "Equalize": (None, False),
    })


def sample_rand_augment(
    rng: random.Random,
    crop_hw: tuple[int, int],
    num_ops: int = 2,
    magnitude: int = 9,
    num_magnitude_bins: int = 31,
) -> list[list]:
    """Draw ``num_ops`` RandAugment ops as ``[[op, signed_magnitude], ...]`` for a post-crop image of ``crop_hw``."""
    rng = _check_rng(rng)
    if not 0 <= magnitude < num_magnitude_bins:
        raise ValueError(f"magnitude is {magnitude}, expected 0 <= magnitude < num_magnitude_bins={num_magnitude_bins}")
    table = magnitude_table(num_magnitude_bins, crop_hw)
    ops = []
    for _ in range(num_ops):
        op = rng.randrange(len(OPS))
        values, signed = table[OPS[op]]
        value = values[magnitude] if values is not None else 0.0
        if signed and rng.randrange(2):
            value = -value
        ops.append([op, value])
    return ops


@dataclass(frozen=True)
class AugmentationSampler:
    """Draws and replays augmentations in the DataCompDR encoding (for the reinforcement tool).

    The defaults are the DataCompDR-12M/1B generator configuration: RandomResizedCrop(224, scale=(0.08, 1),
    ratio=(3/4, 4/3), bicubic) + RandAugment(num_ops=2, magnitude=9, num_magnitude_bins=31, NEAREST), with the
    OpenAI CLIP normalisation of the teachers. ``sample`` returns the entry to store in ``paug.json``;
    ``apply`` renders the teacher's view of it.
    """

    size: Union[int, tuple[int, int]] = 224
    interpolation: str = "bicubic"
    scale: tuple[float, float] = (0.08, 1.0)
    ratio: tuple[float, float] = (3.0 / 4.0, 4.0 / 3.0)
    num_ops: int = 2
    magnitude: int = 9
    num_magnitude_bins: int = 31
    mean: tuple[float, ...] = OPENAI_CLIP_MEAN
    std: tuple[float, ...] = OPENAI_CLIP_STD

    def __post_init__(self):
        _normalize_size(self.size)
        _resample(self.interpolation)
        if not (0 < self.scale[0] <= self.scale[1]):
            raise ValueError(f"scale must satisfy 0 < min <= max, got {self.scale}")
        if not (0 < self.ratio[0] <= self.ratio[1]):
            raise ValueError(f"ratio must satisfy 0 < min <= max, got {self.ratio}")
        if self.num_ops < 0:
            raise ValueError(f"num_ops must be >= 0, got {self.num_ops}")
        if not 0 <= self.magnitude < self.num_magnitude_bins:
            raise ValueError(f"magnitude is {self.magnitude}, expected 0 <= magnitude < {self.num_magnitude_bins}")

    def sample(self, rng: random.Random, image_size: tuple[int, int]) -> list:
        """A new entry ``[[i, j, h, w], [[op, mag], ...]]`` for an original image of ``image_size`` (width, height)."""
        box = sample_crop_box(rng, image_size, self.scale, self.ratio)
        ops = sample_rand_augment(rng, _normalize_size(self.size), self.num_ops, self.magnitude,
                                  self.num_magnitude_bins)
        return [box, ops]

    def apply(self, img: ImageSource, entry: Any) -> torch.Tensor:
        """The normalised teacher view of ``entry`` (the tensor the teacher embeddings are computed on)."""
        return apply(img, entry, self.size, self.interpolation, self.mean, self.std)

    def to_config(self) -> dict:
        """The augmentation config in the layout of Apple's ``reinforce.image_augmentation`` (for ``config.json``)."""
        return {
            "random_resized_crop": {"size": self.size, "interpolation": self.interpolation,
                                    "scale": list(self.scale), "ratio": list(self.ratio)},
            "rand_augment": {"enable": True, "p": 1.0, "num_ops": self.num_ops, "magnitude": self.magnitude,
                             "num_magnitude_bins": self.num_magnitude_bins, "interpolation": "nearest"},
            "to_tensor": {"enable": True},
            "normalize": {"mean": list(self.mean), "std": list(self.std)},
        }

    @classmethod
    def from_config(cls, config: dict) -> "AugmentationSampler":
        """Inverse of :meth:`to_config`; also reads Apple's config (absent keys take torchvision's defaults)."""
        unknown = set(config) - {"random_resized_crop", "rand_augment", "to_tensor", "normalize", "to_rgb"}
        if unknown:
            raise ValueError(f"augmentation config has transforms {sorted(unknown)} that the DataCompDR encoding "
                             f"([crop_box, rand_augment_ops]) cannot represent")
        rrc = config.get("random_resized_crop", {})
        ra = config.get("rand_augment", {})
        norm = config.get("normalize", {})
        if ra.get("p", 1.0) != 1.0 or ra.get("interpolation", "nearest") != "nearest":
            raise ValueError(f"rand_augment config {ra} is not supported: only p=1.0 with nearest interpolation")
        size = rrc.get("size", 224)
        return cls(
            size=tuple(size) if isinstance(size, list) else size,
            interpolation=rrc.get("interpolation", "bilinear"),
            scale=tuple(rrc.get("scale", (0.08, 1.0))),
            ratio=tuple(rrc.get("ratio", (3.0 / 4.0, 4.0 / 3.0))),
            num_ops=ra.get("num_ops", 2),
            magnitude=ra.get("magnitude", 9),
            num_magnitude_bins=ra.get("num_magnitude_bins", 31),
            mean=tuple(norm.get("mean", OPENAI_CLIP_MEAN)),
            std=tuple(norm.get("std", OPENAI_CLIP_STD)),
        )


def sample_params(rng: random.Random, image_size: tuple[int, int], **sampler_kwargs) -> list:
    """Draw one entry with the reference configuration (see :class:`AugmentationSampler` for the keywords)."""
    return AugmentationSampler(**sampler_kwargs).sample(rng, image_size)


# --------------------------------------------------------------------------------------------------------------------
# Replay


def load_image(source: ImageSource) -> PIL.Image.Image:
    """Decode an image the way the generator did: no EXIF rotation, ``RGBA`` then ``RGB`` for non-RGB modes.

    ``source`` is a PIL image, raw bytes, a ``{"bytes": ..., "path": ...}`` dict (the builder's ``image`` column)
    or a file path. Crop boxes refer to the stored pixel grid, which is why EXIF orientation is *not* applied
    (``datasets.Image`` decoding would apply it).
    """
    if isinstance(source, dict):
        if source.get("bytes") is not None:
            source = source["bytes"]
        elif source.get("path"):
            source = source["path"]
        else:
            raise ValueError("image dict has neither 'bytes' nor 'path'")
    if isinstance(source, (bytes, bytearray, memoryview)):
        img = PIL.Image.open(io.BytesIO(source))
    elif isinstance(source, str):
        img = PIL.Image.open(source)
    elif isinstance(source, PIL.Image.Image):
        img = source
    else:
        raise TypeError(f"image must be a PIL image, bytes, a {{'bytes', 'path'}} dict or a path, "
                        f"got {type(source).__name__}")
    if img.mode != "RGB":
        img = img.convert("RGBA").convert("RGB")
    return img


def _resample(interpolation: Any) -> int:
    if isinstance(interpolation, InterpolationMode):
        interpolation = interpolation.value
    if isinstance(interpolation, str) and interpolation.lower() in _PIL_RESAMPLE:
        return _PIL_RESAMPLE[interpolation.lower()]
    if isinstance(interpolation, int) and interpolation in set(_PIL_RESAMPLE.values()):
        return interpolation
    raise ValueError(f"interpolation must be one of {sorted(_PIL_RESAMPLE)} (or the matching InterpolationMode / "
                     f"PIL constant), got {interpolation!r}")


def crop_and_resize(img: PIL.Image.Image, crop: tuple[int, int, int, int], size: Union[int, Sequence[int]],
                    interpolation: Any = "bicubic") -> PIL.Image.Image:
    """Cut ``crop = (top, left, height, width)`` out of ``img`` and resize it to ``size`` ((height, width) or int).

    Never pads: a box that does not lie inside the image raises :class:`CropOutsideImageError`.
    """
    top, left, height, width = crop
    if top < 0 or left < 0 or height <= 0 or width <= 0 or top + height > img.height or left + width > img.width:
        raise CropOutsideImageError(
            f"crop box [top, left, height, width] = {list(crop)} does not fit in the {img.width}x{img.height} "
            f"(width x height) image; rescale it from the recorded original size or drop the sample"
        )
    out_h, out_w = _normalize_size(size)
    region = img.crop((left, top, left + width, top + height))
    if region.size == (out_w, out_h):
        return region
    return region.resize((out_w, out_h), _resample(interpolation))


# The stored magnitude is the final value; every op below receives it unchanged (or as its integer part where the
# op takes pixels / bits). Geometric ops use NEAREST and zero fill, as RandAugment's defaults did at generation time.
_NEAREST = InterpolationMode.NEAREST


def _identity(img, magnitude):
    return img


def _shear_x(img, magnitude):
    # The shear is given as a slope; torchvision's affine takes degrees, anchored at the top-left corner.
    return TF.affine(img, angle=0.0, translate=[0, 0], scale=1.0, shear=[math.degrees(math.atan(magnitude)), 0.0],
                     interpolation=_NEAREST, fill=None, center=[0, 0])


def _shear_y(img, magnitude):
    return TF.affine(img, angle=0.0, translate=[0, 0], scale=1.0, shear=[0.0, math.degrees(math.atan(magnitude))],
                     interpolation=_NEAREST, fill=None, center=[0, 0])


def _translate_x(img, magnitude):
    # Whole pixels: the fractional part of the stored magnitude is dropped (truncation towards zero).
    return TF.affine(img, angle=0.0, translate=[int(magnitude), 0], scale=1.0, shear=[0.0, 0.0],
                     interpolation=_NEAREST, fill=None)


def _translate_y(img, magnitude):
    return TF.affine(img, angle=0.0, translate=[0, int(magnitude)], scale=1.0, shear=[0.0, 0.0],
                     interpolation=_NEAREST, fill=None)


def _rotate(img, magnitude):
    return TF.rotate(img, magnitude, interpolation=_NEAREST, fill=None)


def _brightness(img, magnitude):
    return TF.adjust_brightness(img, 1.0 + magnitude)


def _color(img, magnitude):
    return TF.adjust_saturation(img, 1.0 + magnitude)


def _contrast(img, magnitude):
    return TF.adjust_contrast(img, 1.0 + magnitude)


def _sharpness(img, magnitude):
    return TF.adjust_sharpness(img, 1.0 + magnitude)


def _posterize(img, magnitude):
    return TF.posterize(img, int(magnitude))


def _solarize(img, magnitude):
    return TF.solarize(img, magnitude)


def _autocontrast(img, magnitude):
    return TF.autocontrast(img)


def _equalize(img, magnitude):
    return TF.equalize(img)


_OP_FUNCTIONS = (
    _identity, _shear_x, _shear_y, _translate_x, _translate_y, _rotate, _brightness, _color, _contrast, _sharpness,
    _posterize, _solarize, _autocontrast, _equalize,
)


def replay_pil(img: ImageSource, entry: Any, size: Union[int, Sequence[int]] = 224,
               interpolation: Any = "bicubic") -> PIL.Image.Image:
    """Crop, resize and apply the stored RandAugment ops; returns the augmented PIL image (before ``to_tensor``)."""
    params = parse_entry(entry)
    view = crop_and_resize(load_image(img), params.crop, size, interpolation)
    for op, magnitude in params.ops:
        view = _OP_FUNCTIONS[op](view, magnitude)
    return view


def to_normalized_tensor(img: PIL.Image.Image, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """``to_tensor`` then ``normalize``: float32 [3, H, W], bit-identical to torchvision's pair.

    The same float32 operations in the same order (/255, -mean, /std), done in numpy: torchvision's version runs
    the elementwise ops on torch's intra-op thread pool, which for one 224-px image costs about twice the CPU time.
    """
    pixels = np.asarray(img, dtype=np.uint8)
    if pixels.ndim != 3 or pixels.shape[2] != len(mean) or len(mean) != len(std):
        raise ValueError(f"expected an RGB image and {pixels.shape[-1]} mean/std values, got image shape "
                         f"{pixels.shape}, mean {tuple(mean)}, std {tuple(std)}")
    chw = np.empty((pixels.shape[2], pixels.shape[0], pixels.shape[1]), dtype=np.float32)
    chw[...] = pixels.transpose(2, 0, 1)
    chw /= np.float32(255)
    chw -= np.asarray(mean, dtype=np.float32)[:, None, None]
    chw /= np.asarray(std, dtype=np.float32)[:, None, None]
    return torch.from_numpy(chw)


def apply(img: ImageSource, entry: Any, size: Union[int, Sequence[int]] = 224, interpolation: Any = "bicubic",
          mean: Sequence[float] = OPENAI_CLIP_MEAN, std: Sequence[float] = OPENAI_CLIP_STD) -> torch.Tensor:
    """Replay one stored augmentation ``entry`` on the original image ``img`` for a student.

    ``size`` / ``interpolation`` / ``mean`` / ``std`` are the *student's* preprocessing (e.g. 256 for MobileCLIP2-S*),
    the crop box and ops come from ``entry``. Returns a float32 tensor [3, H, W].
    """
    return to_normalized_tensor(replay_pil(img, entry, size, interpolation), mean, std)


def choose_aug_index(num_augmentations: int, rng: Optional[random.Random] = None, epoch: Optional[int] = None) -> int:
    """Which stored view to train on: uniform with ``rng``, or ``epoch % num_augmentations`` (sequential mode)."""
    if num_augmentations <= 0:
        raise ValueError(f"num_augmentations must be positive, got {num_augmentations}")
    if (rng is None) == (epoch is None):
        raise ValueError("pass exactly one of rng (uniform choice) or epoch (sequential choice)")
    if epoch is not None:
        return epoch % num_augmentations
    return _check_rng(rng).randrange(num_augmentations)


@dataclass
class ReplayTransform:
    """The student's transform for reinforced samples.

    ``ReplayTransform(size, interpolation, mean, std)(img, entry)`` returns the replayed, normalised view.
    :meth:`view` does the whole per-sample step on a ``datacompdr`` example: pick the augmentation index, replay it
    and return the teacher target ``image_emb[aug_idx]`` of exactly that view.
    """

    size: Union[int, tuple[int, int]] = 224
    interpolation: Any = "bicubic"
    mean: Sequence[float] = OPENAI_CLIP_MEAN
    std: Sequence[float] = OPENAI_CLIP_STD

    def __post_init__(self):
        _normalize_size(self.size)
        _resample(self.interpolation)
        if len(self.mean) != 3 or len(self.std) != 3 or any(s <= 0 for s in self.std):
            raise ValueError(f"mean and std must have 3 entries with std > 0, got mean={self.mean}, std={self.std}")

    def __call__(self, img: ImageSource, entry: Any) -> torch.Tensor:
        return apply(img, entry, self.size, self.interpolation, self.mean, self.std)

    def view(self, example: dict, aug_idx: Optional[int] = None, rng: Optional[random.Random] = None,
             epoch: Optional[int] = None) -> dict:
        """``{"pixel_values", "image_emb", "aug_idx"}`` for one example that has ``image`` joined.

        Give ``aug_idx`` directly, or ``rng`` (uniform choice) or ``epoch`` (sequential choice).
        ``image_emb`` is the teacher embedding row of the returned view.
        """
        if example.get("image") is None:
            raise ValueError(f"example {example.get('__key__')!r} has no 'image'; load the dataset with image_dir=")
        param_aug = example["param_aug"]
        if aug_idx is None:
            aug_idx = choose_aug_index(len(param_aug), rng=rng, epoch=epoch)
        if not 0 <= aug_idx < len(param_aug):
            raise ValueError(f"aug_idx {aug_idx} is out of range for {len(param_aug)} stored augmentations "
                             f"(example {example.get('__key__')!r})")
        return {
            "pixel_values": self(example["image"], param_aug[aug_idx]),
            "image_emb": torch.as_tensor(np.asarray(example["image_emb"][aug_idx], dtype=np.float32)),
            "aug_idx": aug_idx,
        }
