"""Image processors matching each MobileCLIP variant's reference preprocessing.

Reference (Apple / open_clip, torchvision on PIL): resize the shorter side (bilinear; bicubic for L-14), centre crop,
[0, 1] pixels, then normalise (mean 0 / std 1 for v1 and MobileCLIP2-S0/S2/B, OpenAI statistics for S3/S4/L-14).

Two backends, as transformers 5 has for every model: `MobileCLIPImageProcessor` (torchvision, batched tensor ops; what
AutoImageProcessor loads by default) and `MobileCLIPImageProcessorPil` (PIL throughout). They convert images the same
way, resize PIL images with PIL (the reference's resize: exact) and crop at the same offsets; arrays and tensors are
resized by torchvision in the first, within 1/255 of PIL on photos.
Hub-facing remote code: imports only transformers, numpy, PIL and (when installed) torch and torchvision.
"""

import numpy as np
import PIL.Image
from transformers.image_processing_backends import PilBackend, TorchvisionBackend
from transformers.image_utils import PILImageResampling
from transformers.utils import is_torchvision_available

if is_torchvision_available():  # optional, as for transformers: without it AutoImageProcessor picks the PIL class
    import torch
    from torchvision.transforms.v2 import functional as tvF

_HIGH_BIT_DEPTH_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")
_HIGH_BIT_DEPTH_DTYPES = (np.uint16, np.int32, np.uint32)


def _to_8bit(array: np.ndarray, sixteen_bit: bool) -> np.ndarray:
    """16/32-bit integer pixels -> 8 bits by their bit depth (PIL's convert and transformers would clip at 255 or
    refuse the array); 32-bit values that fit in 8 bits are kept as they are."""
    max_value = 65535 if sixteen_bit or array.max(initial=0) > 255 else 255
    return np.round(array.astype(np.float64) * (255.0 / max_value)).astype(np.uint8)


def _pil_to_rgb(image: PIL.Image.Image) -> np.ndarray:
    """[height, width, 3] uint8 as the reference's `PIL.Image.convert("RGB")`: alpha is dropped, not composited on
    white as transformers' default does; high-bit-depth images (16-bit PNGs as "I;16"/"I") are scaled to 8 bits."""
    if image.mode in _HIGH_BIT_DEPTH_MODES:
        image = PIL.Image.fromarray(_to_8bit(np.asarray(image), image.mode.startswith("I;16")))
    return np.array(image.convert("RGB"))


def _array_to_8bit(array: np.ndarray) -> np.ndarray:
    """High-bit-depth integer arrays (e.g. cv2.IMREAD_UNCHANGED of a 16-bit PNG) scaled to 8 bits like PIL images."""
    return _to_8bit(array, array.dtype == np.uint16) if array.dtype in _HIGH_BIT_DEPTH_DTYPES else array


def _crop_offsets(height: int, width: int, size) -> tuple[int, int]:
    """torchvision's CenterCrop offsets, round((H - h) / 2) (half to even); transformers floors, which shifts the crop
    by one pixel whenever the margin is odd."""
    return int(round((height - size.height) / 2.0)), int(round((width - size.width) / 2.0))


def _check_has_pixels(image, index: int) -> None:
    """An image without pixels would divide by zero in the shortest-edge resize: name it instead."""
    if isinstance(image, PIL.Image.Image):
        size, empty = f"size {image.size[0]}x{image.size[1]} (width x height)", 0 in image.size
    else:
        size, empty = f"shape {tuple(image.shape)}", 0 in tuple(image.shape)
    if empty:
        raise ValueError(f"image {index} has {size}: no pixels to preprocess; drop it or replace it with an image "
                         f"of non-zero height and width.")


class _ReferenceDefaults:
    """MobileCLIP-S0's preprocessing (`MobileCLIPProcessor.from_variant` sets each preset's), and the remote-code
    entry of both backends."""

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

    def _prepare_images_structure(self, images, expected_ndims: int = 3):
        images = super()._prepare_images_structure(images, expected_ndims=expected_ndims)
        if len(images) == 0:  # else the PIL backend returns pixel_values of shape [0], torchvision an IndexError
            raise ValueError("images holds no image (an empty list or batch); pass at least one image "
                             "(MobileCLIPProcessor: images=None to tokenize text only).")
        for index, image in enumerate(images):
            _check_has_pixels(image, index)
        return images

    def to_dict(self) -> dict:
        # Saving records the class that was saved; record both, so that AutoImageProcessor with trust_remote_code
        # picks the backend as it does for local code (torchvision by default, `backend="pil"`).
        output = super().to_dict()
        reference = output.get("auto_map", {}).get("AutoImageProcessor")
        if isinstance(reference, str):
            module = reference.rsplit(".", 1)[0]
            output["auto_map"] = {**output["auto_map"], "AutoImageProcessor": {
                "torchvision": f"{module}.{MobileCLIPImageProcessor.__name__}",
                "pil": f"{module}.{MobileCLIPImageProcessorPil.__name__}"}}
        return output


class MobileCLIPImageProcessor(_ReferenceDefaults, TorchvisionBackend):
    """Torchvision path: batched crop, rescale and normalisation in torch (on any device). PIL images are resized by
    PIL, as the reference resizes them, so their pixels equal the reference's; arrays and tensors by torchvision's
    antialiased kernel (within 1/255 of PIL's on photos)."""

    def process_image(self, image, do_convert_rgb=None, input_data_format=None, device=None, do_resize=None,
                      size=None, resample=None, **kwargs):
        if isinstance(image, PIL.Image.Image) and do_convert_rgb:
            image = np.moveaxis(_pil_to_rgb(image), -1, 0)
            if do_resize:  # the PIL backend's own resize; `resize` below then keeps the size (torchvision no-op)
                image = PilBackend.resize(self, image, size, resample)
            image = torch.from_numpy(np.ascontiguousarray(image))
            return image.to(device) if device is not None else image
        if isinstance(image, torch.Tensor) and image.dtype in (torch.uint16, torch.int32, torch.uint32):
            image = image.numpy()
        if isinstance(image, np.ndarray):
            image = _array_to_8bit(image)
        return super().process_image(image, do_convert_rgb=do_convert_rgb, input_data_format=input_data_format,
                                     device=device, do_resize=do_resize, size=size, resample=resample, **kwargs)

    def center_crop(self, image: "torch.Tensor", size, **kwargs) -> "torch.Tensor":
        height, width = image.shape[-2:]
        if size.height > height or size.width > width:
            return super().center_crop(image, size, **kwargs)
        top, left = _crop_offsets(height, width, size)
        return tvF.crop(image, top, left, size.height, size.width)

    def rescale_and_normalize(self, images, do_rescale, rescale_factor, do_normalize, image_mean, image_std):
        # The reference's ToTensor (x / 255) then Normalize, in float32: transformers fuses them into
        # (x - 255 mean) / (255 std), which differs from the reference in the last bit.
        images = images.to(torch.float32)
        if do_rescale:
            images = images / (1 / rescale_factor)
        return tvF.normalize(images, image_mean, image_std) if do_normalize else images


class MobileCLIPImageProcessorPil(_ReferenceDefaults, PilBackend):
    """PIL path: the reference's own resize, so its pixels equal the reference's (1e-5)."""

    def convert_to_rgb(self, image, input_data_format=None):
        if isinstance(image, PIL.Image.Image):
            return _pil_to_rgb(image)
        if isinstance(image, np.ndarray):
            image = _array_to_8bit(image)
        return super().convert_to_rgb(image, input_data_format=input_data_format)

    def center_crop(self, image: np.ndarray, size, **kwargs) -> np.ndarray:
        height, width = image.shape[-2:]
        if size.height > height or size.width > width:
            return super().center_crop(image, size, **kwargs)
        top, left = _crop_offsets(height, width, size)
        return image[..., top: top + size.height, left: left + size.width]


__all__ = ["MobileCLIPImageProcessor", "MobileCLIPImageProcessorPil"]
