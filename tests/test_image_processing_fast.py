"""The torchvision image processor (AutoImageProcessor's default) against the PIL path, on photo-like images of many
sizes, every PIL mode and every array/tensor input; backend registration and selection.

PIL images are resized by PIL in both (the reference's resize), so their pixels are equal; arrays and tensors are
resized by torchvision's antialiased kernel in the torchvision path, within 1/255 of PIL's."""

import functools
import io
import logging
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import tiny_config
from PIL import Image, ImageDraw, ImageFilter
from transformers import AutoImageProcessor, AutoProcessor

from modeling_mobileclip import (
    MobileCLIPImageProcessor,
    MobileCLIPImageProcessorPil,
    MobileCLIPModel,
    MobileCLIPProcessor,
    MobileCLIPTokenizer,
)

# Larger than every preset's input (downscaled, as photos are) and smaller (upscaled); odd margins exercise the crop.
DOWNSCALED = [(640, 480), (333, 517), (1000, 1001), (1280, 720), (2000, 1500), (300, 257)]
UPSCALED = [(101, 77), (48, 64), (37, 300), (224, 224)]
ONE_LEVEL = 1 / 255


@functools.cache  # the tests only read the images
def photo(width: int, height: int, seed: int = 0) -> Image.Image:
    """A photo-like RGB image: 1/f-like colour texture (bicubic-upsampled noise at 7 octaves), sharp-edged shapes,
    a slight blur and sensor noise, through a JPEG round trip (block artefacts, chroma subsampling)."""
    rng = np.random.default_rng(seed)
    canvas = np.zeros((height, width, 3))
    for octave in range(1, 8):
        cells = 2**octave
        grid = Image.fromarray(rng.integers(0, 256, (cells, cells, 3), dtype=np.uint8))
        canvas += np.asarray(grid.resize((width, height), Image.BICUBIC), dtype=np.float64) * 0.6**octave
    image = Image.fromarray((canvas / canvas.max() * 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(6):
        (x0, x1), (y0, y1) = sorted(rng.integers(0, width, 2)), sorted(rng.integers(0, height, 2))
        shape = draw.ellipse if rng.random() < 0.5 else draw.rectangle
        shape((x0, y0, x1, y1), fill=tuple(int(c) for c in rng.integers(0, 256, 3)))
    noisy = np.asarray(image.filter(ImageFilter.GaussianBlur(0.6)), dtype=np.float64)
    noisy += rng.normal(0, 4, noisy.shape)
    buffer = io.BytesIO()
    Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8)).save(buffer, "JPEG", quality=90)
    return Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")


def as_input(image: Image.Image, kind: str):
    """The photo as a PIL image of another mode, or as an array / tensor the processors accept."""
    if kind == "RGBA":
        rgba = image.convert("RGBA")
        rgba.putalpha(Image.linear_gradient("L").resize(image.size))
        return rgba
    if kind == "I;16":
        return Image.fromarray(np.asarray(image.convert("L"), dtype=np.uint16) * 257)
    if kind in ("L", "LA", "P", "1", "CMYK", "YCbCr"):
        return image.convert(kind)
    array = np.asarray(image)
    return {"numpy": array, "numpy-uint16": array.astype(np.uint16) * 257,
            "torch": torch.from_numpy(array.copy()).permute(2, 0, 1)}[kind]


shared_tokenizer = functools.cache(MobileCLIPTokenizer.from_bpe_file)


@functools.cache
def image_processors(variant: str) -> tuple[MobileCLIPImageProcessorPil, MobileCLIPImageProcessor]:
    """The preset's PIL and torchvision image processors."""
    pil, fast = (MobileCLIPProcessor.from_variant(variant, shared_tokenizer(), backend=backend).image_processor
                 for backend in ("pil", "torchvision"))
    return pil, fast


def pixel_difference(variant: str, image, **call_kwargs) -> torch.Tensor:
    """|torchvision path - PIL path| per pixel, in [0, 1] pixel units (the normalisation's std divided out)."""
    pil, fast = image_processors(variant)
    assert isinstance(pil, MobileCLIPImageProcessorPil) and isinstance(fast, MobileCLIPImageProcessor)
    expected = pil(image, return_tensors="pt", **call_kwargs)["pixel_values"]
    got = fast(image, return_tensors="pt", **call_kwargs)["pixel_values"]
    assert got.shape == expected.shape and got.dtype == expected.dtype == torch.float32
    return (got - expected).abs() * torch.tensor(pil.image_std).view(1, 3, 1, 1)


# v1 (no normalisation, bilinear, 256), MobileCLIP2-B (224), OpenAI statistics (S3), bicubic (L-14)
VARIANTS = ["mobileclip-s0", "mobileclip2-b", "mobileclip2-s3", "mobileclip2-l-14"]
PIL_MODES = ["RGB", "RGBA", "LA", "L", "P", "1", "CMYK", "YCbCr", "I;16"]


@pytest.mark.parametrize("variant", VARIANTS)
def test_pil_images_of_every_mode_give_the_pil_paths_pixels(variant):
    for seed, (width, height) in enumerate(DOWNSCALED + UPSCALED):
        for mode in PIL_MODES if seed < 2 else ["RGB"]:  # RGBA/LA drop alpha (convert("RGB")); I;16 is scaled
            image = photo(width, height, seed) if mode == "RGB" else as_input(photo(width, height, seed), mode)
            assert pixel_difference(variant, image).max() == 0, (mode, width, height)


@pytest.mark.parametrize("variant", VARIANTS)
def test_downscaled_arrays_are_within_one_level_of_the_pil_path(variant):
    for seed, (width, height) in enumerate(DOWNSCALED):
        difference = pixel_difference(variant, as_input(photo(width, height, seed), "numpy"))
        assert difference.max() <= ONE_LEVEL + 1e-6, (width, height)
        assert difference.mean() <= 0.01 * ONE_LEVEL, (width, height)  # almost every pixel is identical


@pytest.mark.parametrize("variant", VARIANTS)
def test_upscaled_arrays_differ_by_at_most_two_levels_on_a_handful_of_pixels(variant):
    # Upscaling small images, bicubic rounds differently from PIL's fixed-point kernel on ~1e-5 of the pixels.
    for seed, (width, height) in enumerate(UPSCALED):
        difference = pixel_difference(variant, as_input(photo(width, height, seed), "numpy"))
        assert difference.max() <= 2 * ONE_LEVEL + 1e-6, (width, height)
        assert (difference > ONE_LEVEL + 1e-6).float().mean() <= 1e-4, (width, height)


@pytest.mark.parametrize("kind", ["numpy", "numpy-uint16", "torch"])
def test_arrays_and_tensors_convert_like_the_pil_path(kind):
    # 16-bit arrays are scaled to 8 bits like 16-bit PIL images.
    for seed, (width, height) in enumerate([(640, 480), (333, 517)]):
        difference = pixel_difference("mobileclip-s0", as_input(photo(width, height, seed), kind))
        assert difference.max() <= ONE_LEVEL + 1e-6, (kind, width, height)


def test_float_tensors_in_unit_range():
    chw = torch.from_numpy(np.asarray(photo(640, 480)).copy()).permute(2, 0, 1).float() / 255
    assert pixel_difference("mobileclip-s0", chw, do_rescale=False).max() <= ONE_LEVEL + 1e-6


def test_a_batch_of_mixed_sizes_equals_one_image_at_a_time():
    processor = image_processors("mobileclip2-s3")[1]
    images = [photo(w, h, seed) for seed, (w, h) in enumerate(DOWNSCALED)]
    batch = processor(images, return_tensors="pt")["pixel_values"]
    singles = torch.cat([processor(image, return_tensors="pt")["pixel_values"] for image in images])
    assert batch.shape == (len(images), 3, 256, 256) and torch.equal(batch, singles)


def test_auto_classes_load_the_torchvision_backend_by_default(tmp_path, tokenizer, caplog):
    torch.manual_seed(0)
    MobileCLIPModel(tiny_config("mci-s0text")).save_pretrained(tmp_path)
    MobileCLIPProcessor.from_variant("mobileclip-s0", tokenizer=tokenizer).save_pretrained(tmp_path)
    with caplog.at_level(logging.WARNING, logger="transformers"):
        default = AutoImageProcessor.from_pretrained(tmp_path)
        processor = AutoProcessor.from_pretrained(tmp_path)
    assert type(default) is MobileCLIPImageProcessor and type(processor.image_processor) is MobileCLIPImageProcessor
    assert "Falling back" not in caplog.text
    assert type(AutoImageProcessor.from_pretrained(tmp_path, backend="pil")) is MobileCLIPImageProcessorPil
    assert default.to_dict() == MobileCLIPImageProcessorPil.from_pretrained(tmp_path).to_dict()


def test_unknown_backend_lists_the_valid_ones():
    with pytest.raises(ValueError, match=r"backend='cuda' is unknown; valid: \['pil', 'torchvision'\]"):
        MobileCLIPProcessor.from_variant("mobileclip-s0", backend="cuda")


REMOTE_BACKENDS_SCRIPT = """
import importlib.abc, sys
class NoPackage(importlib.abc.MetaPathFinder):  # remote code must not need the package
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "modeling_mobileclip":
            raise ImportError(name)
sys.meta_path.insert(0, NoPackage())
from transformers import AutoImageProcessor
for backend in (None, "pil"):
    loaded = AutoImageProcessor.from_pretrained(sys.argv[1], trust_remote_code=True, backend=backend)
    print(type(loaded).__module__.split(".")[0], type(loaded).__name__)
"""


@pytest.mark.slow
def test_remote_code_picks_the_backend_too(tmp_path, tokenizer):
    folder = tmp_path / "repo"
    MobileCLIPProcessor.from_variant("mobileclip-s0", tokenizer=tokenizer).save_pretrained(folder)
    env = {"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf_home"), "PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, "-c", REMOTE_BACKENDS_SCRIPT, str(folder)], capture_output=True, text=True,
                          env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split("\n")[:2] == ["transformers_modules MobileCLIPImageProcessor",
                                           "transformers_modules MobileCLIPImageProcessorPil"]
