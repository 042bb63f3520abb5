"""Image processor matching each MobileCLIP variant's reference preprocessing exactly.

Reference (Apple / open_clip, torchvision on PIL): resize the shorter side (bilinear; bicubic for L-14), centre crop,
[0, 1] pixels, then normalise (mean 0 / std 1 for v1 and MobileCLIP2-S0/S2/B, OpenAI statistics for S3/S4/L-14).
Hub-facing remote code: imports only transformers, numpy and PIL.
"""

import numpy as np
import PIL.Image
from transformers.image_processing_backends import PilBackend
from transformers.image_utils import PILImageResampling

_HIGH_BIT_DEPTH_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")


def _to_8bit(array: np.ndarray, sixteen_bit: bool) -> np.ndarray:
    """16/32-bit integer pixels -> 8 bits by their bit depth (PIL's convert and transformers would clip at 255 or
    refuse the array); 32-bit values that fit in 8 bits are kept as they are."""
    max_value = 65535 if sixteen_bit or array.max(initial=0) > 255 else 255
    return np.round(array.astype(np.float64) * (255.0 / max_value)).astype(np.uint8)


class MobileCLIPImageProcessor(PilBackend):
    """PIL-path processor: shortest-side resize, centre crop with torchvision's rounding, rescale, normalise."""

    resample = PILImageResampling.BILINEAR
    image_mean = (0.0, 0.0, 0.0)
    image_std = (1.0, 1.0, 1.0)
    size = {"shortest_edge": 256}
    default_to_square = False
    crop_size = {"height": 256, "width": 256}
    do_resize = True
    do_center_crop = True
    do_rescale = True
    do_normalize = True
    do_convert_rgb = True

    def convert_to_rgb(self, image, input_data_format=None):
        # The reference does `PIL.Image.convert("RGB")`: alpha is dropped, not composited on white as transformers'
        # default does. High-bit-depth images (16-bit PNGs as PIL "I;16"/"I" or uint16 arrays) are scaled to 8 bits.
        if isinstance(image, PIL.Image.Image):
            if image.mode in _HIGH_BIT_DEPTH_MODES:
                image = PIL.Image.fromarray(_to_8bit(np.asarray(image), image.mode.startswith("I;16")))
            return np.array(image.convert("RGB"))
        if isinstance(image, np.ndarray) and image.dtype in (np.uint16, np.int32, np.uint32):
            image = _to_8bit(image, image.dtype == np.uint16)
        return super().convert_to_rgb(image, input_data_format=input_data_format)

    def center_crop(self, image: np.ndarray, size, **kwargs) -> np.ndarray:
        # torchvision's CenterCrop offsets are round((H - h) / 2) (half to even); transformers floors, which shifts
        # the crop by one pixel whenever the margin is odd.
        height, width = image.shape[-2:]
        if size.height > height or size.width > width:
            return super().center_crop(image, size, **kwargs)
        top = int(round((height - size.height) / 2.0))
        left = int(round((width - size.width) / 2.0))
        return image[..., top: top + size.height, left: left + size.width]


__all__ = ["MobileCLIPImageProcessor"]
