"""Tokenizer and image-processor parity with the reference, processor padding, Auto classes, pipeline, remote code."""

import json
import subprocess
import sys
import textwrap

import numpy as np
import open_clip
import pytest
import torch
from conftest import tiny_config
from PIL import Image
from torchvision import transforms as T
from transformers import AutoImageProcessor, AutoModel, AutoModelForZeroShotImageClassification, AutoProcessor
from transformers import AutoTokenizer, pipeline

from modeling_mobileclip import MobileCLIPModel, MobileCLIPProcessor
from modeling_mobileclip.configuration_mobileclip import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD

CAPTIONS = [
    "a photo of a cat", "A Photo Of A CAT!", "two dogs,  playing\tin the   park.", "Café crème & croissant",
    "the &amp; sign &lt;b&gt; and &quot;quotes&quot;", "&amp;amp; double-escaped", "naïve façade — déjà vu…",
    "emoji 🐶🐱 and CJK 猫と犬", "numbers 12,345.67 and 3rd 21st", "it's a dog's life, isn't it? we'll see",
    "don’t “smart” quotes", "ÃƒÂ© mojibake text", "   leading and trailing spaces   ", "UPPER lower MiXeD",
    "hyphen-ated words/slashes_and_underscores", "#hashtag @mention https://example.com/a?b=c", "",
    " ".join(["long caption with many words"] * 20), "x " * 100, "!!!???...,,,;;;", "tab\tnew\nline",
]


def rng_image(width: int, height: int, mode: str = "RGB", seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    if mode == "I;16":
        return Image.fromarray(rng.integers(0, 65535, (height, width), dtype=np.uint16))
    if mode in ("P", "LA", "1"):
        return rng_image(width, height, "RGB", seed).convert(mode)
    channels = {"RGB": 3, "RGBA": 4, "L": 1, "CMYK": 4}[mode]
    array = rng.integers(0, 256, (height, width, channels), dtype=np.uint8)
    return Image.fromarray(array[..., 0] if channels == 1 else array, mode=mode)


@pytest.fixture(scope="module")
def processor(tokenizer):
    return MobileCLIPProcessor.from_variant("mobileclip-s0", tokenizer=tokenizer)


@pytest.fixture(scope="module")
def saved_model_dir(tmp_path_factory, processor):
    path = tmp_path_factory.mktemp("mobileclip-tiny")
    torch.manual_seed(0)
    model = MobileCLIPModel(tiny_config("mci-s0text")).eval()
    model.save_pretrained(path)
    MobileCLIPProcessor(processor.image_processor.__class__(
        size={"shortest_edge": 64}, crop_size={"height": 64, "width": 64}), processor.tokenizer).save_pretrained(path)
    return path


# ---------------------------------------------------------------- tokenizer

def test_tokenizer_ids_equal_open_clip(processor):
    reference = open_clip.get_tokenizer("MobileCLIP-S1")(CAPTIONS)
    ours = processor(text=CAPTIONS, return_tensors="pt")["input_ids"]
    assert ours.shape == reference.shape == (len(CAPTIONS), 77)
    mismatched = [c for c, a, b in zip(CAPTIONS, ours, reference) if not torch.equal(a, b)]
    assert mismatched == []


def test_truncation_keeps_eot_last(processor):
    ids = processor(text=["word " * 200], return_tensors="pt")["input_ids"][0]
    assert ids.shape == (77,) and ids[0] == 49406 and ids[-1] == 49407


def test_padding_true_pads_to_longest_with_zero(processor):
    out = processor(text=["a cat", "a very small grey cat"], padding=True, return_tensors="pt")
    assert out["input_ids"].shape[1] == 7  # BOS + 5 words + EOT
    assert out["input_ids"][0].tolist()[-4:] == [49407, 0, 0, 0]
    assert out["attention_mask"][0].tolist() == [1, 1, 1, 1, 0, 0, 0]


def test_empty_text_list_is_a_clear_error(processor):
    with pytest.raises(ValueError, match="text is an empty list"):
        processor(text=[], return_tensors="pt")
    with pytest.raises(ValueError, match="needs `images`, `text` or both"):
        processor(return_tensors="pt")


# ---------------------------------------------------------------- image processor

def reference_transform(size: int, interpolation, mean=(0, 0, 0), std=(1, 1, 1)):
    """Apple's v1 / open_clip preprocessing on PIL images."""
    return T.Compose([T.Resize(size, interpolation=interpolation), T.CenterCrop(size), T.ToTensor(),
                      T.Normalize(mean, std)])


@pytest.mark.parametrize("variant, size, interpolation, mean, std", [
    ("mobileclip-s0", 256, T.InterpolationMode.BILINEAR, (0, 0, 0), (1, 1, 1)),
    ("mobileclip-b", 224, T.InterpolationMode.BILINEAR, (0, 0, 0), (1, 1, 1)),
    ("mobileclip2-s3", 256, T.InterpolationMode.BILINEAR, OPENAI_CLIP_MEAN, OPENAI_CLIP_STD),
    ("mobileclip2-l-14", 224, T.InterpolationMode.BICUBIC, OPENAI_CLIP_MEAN, OPENAI_CLIP_STD),
])
def test_image_preprocessing_equals_reference(tokenizer, variant, size, interpolation, mean, std):
    processor = MobileCLIPProcessor.from_variant(variant, tokenizer=tokenizer)
    reference = reference_transform(size, interpolation, mean, std)
    # odd margins (e.g. 101x77 -> 335x256) exercise torchvision's round-half-even centre crop
    for i, (w, h) in enumerate([(640, 480), (333, 517), (101, 77), (1000, 1001), (size, size), (7, 3)]):
        image = rng_image(w, h, seed=i)
        ours = processor(images=image, return_tensors="pt")["pixel_values"][0]
        assert ours.shape == (3, size, size)
        assert (ours - reference(image)).abs().max() <= 1e-5, (w, h)


@pytest.mark.parametrize("mode", ["RGBA", "LA", "L", "P", "1", "CMYK", "I;16"])
def test_any_image_mode_gives_the_reference_rgb(processor, mode):
    image = rng_image(300, 200, mode)
    ours = processor(images=image, return_tensors="pt")["pixel_values"][0]
    if mode == "I;16":  # 16-bit greyscale is scaled to 8 bits (PIL's convert("RGB") would clip it to white)
        eight_bit = Image.fromarray(np.round(np.asarray(image) * (255 / 65535)).astype(np.uint8))
        expected = reference_transform(256, T.InterpolationMode.BILINEAR)(eight_bit.convert("RGB"))
    else:
        expected = reference_transform(256, T.InterpolationMode.BILINEAR)(image.convert("RGB"))
    assert ours.shape == (3, 256, 256) and (ours - expected).abs().max() <= 1e-5


def test_numpy_and_tensor_images(processor):
    image = rng_image(320, 240)
    from_pil = processor(images=image, return_tensors="pt")["pixel_values"]
    array = np.asarray(image)
    assert torch.allclose(processor(images=array, return_tensors="pt")["pixel_values"], from_pil)
    # CHW float tensors in [0, 1]: transformers' convention is do_rescale=False, routed to the image processor.
    chw = torch.tensor(array).permute(2, 0, 1).float() / 255
    from_tensor = processor(images=chw, do_rescale=False, return_tensors="pt")["pixel_values"]
    assert (from_tensor - from_pil).abs().max() <= 1e-5
    # 16-bit arrays (e.g. cv2.IMREAD_UNCHANGED of a 16-bit PNG) are scaled to 8 bits like 16-bit PIL images.
    sixteen_bit = array.astype(np.uint16) * 257
    assert torch.allclose(processor(images=sixteen_bit, return_tensors="pt")["pixel_values"], from_pil)


@pytest.mark.parametrize("backend", ["pil", "torchvision"])
@pytest.mark.parametrize("image, size", [
    (Image.new("RGB", (0, 0)), r"size 0x0 \(width x height\)"),
    (Image.new("RGB", (0, 5)), r"size 0x5 \(width x height\)"),
    (np.zeros((0, 5, 3), np.uint8), r"shape \(0, 5, 3\)"),
    (torch.zeros(3, 5, 0, dtype=torch.uint8), r"shape \(3, 5, 0\)"),
], ids=["pil-0x0", "pil-0x5", "array-hwc", "tensor-chw"])
def test_image_without_pixels_is_a_clear_error(tokenizer, backend, image, size):
    processor = MobileCLIPProcessor.from_variant("mobileclip-s0", tokenizer=tokenizer, backend=backend)
    # Was a ZeroDivisionError from the shortest-edge resize.
    with pytest.raises(ValueError, match=f"image 1 has {size}: no pixels to preprocess; drop it or replace it"):
        processor(images=[rng_image(32, 32), image], return_tensors="pt")


@pytest.mark.parametrize("backend", ["pil", "torchvision"])
@pytest.mark.parametrize("images", [[], [[]], np.zeros((0, 8, 8, 3), np.uint8)], ids=["list", "nested", "array"])
def test_empty_image_batch_is_a_clear_error(tokenizer, backend, images):
    processor = MobileCLIPProcessor.from_variant("mobileclip-s0", tokenizer=tokenizer, backend=backend)
    # Was pixel_values of shape [0] (PIL) or an IndexError (torchvision).
    for call in (processor, processor.image_processor):
        with pytest.raises(ValueError, match=r"images holds no image .* images=None to tokenize text only"):
            call(images=images, return_tensors="pt")

# ---------------------------------------------------------------- Auto classes and pipeline

def test_auto_classes_resolve(saved_model_dir):
    assert isinstance(AutoModel.from_pretrained(saved_model_dir), MobileCLIPModel)
    assert isinstance(AutoModelForZeroShotImageClassification.from_pretrained(saved_model_dir), MobileCLIPModel)
    assert isinstance(AutoProcessor.from_pretrained(saved_model_dir), MobileCLIPProcessor)
    assert type(AutoTokenizer.from_pretrained(saved_model_dir)).__name__ == "MobileCLIPTokenizer"
    assert type(AutoImageProcessor.from_pretrained(saved_model_dir)).__name__ == "MobileCLIPImageProcessor"
    auto_map = json.loads((saved_model_dir / "config.json").read_text())["auto_map"]
    assert auto_map["AutoModelForZeroShotImageClassification"] == "modeling_mobileclip.MobileCLIPModel"


def test_processor_round_trip(saved_model_dir, processor):
    loaded = AutoProcessor.from_pretrained(saved_model_dir)
    out = loaded(text=CAPTIONS[:5], images=[rng_image(90, 70)], return_tensors="pt")
    assert torch.equal(out["input_ids"], processor(text=CAPTIONS[:5], return_tensors="pt")["input_ids"])
    assert out["pixel_values"].shape == (1, 3, 64, 64)


def test_zero_shot_pipeline_matches_the_model(saved_model_dir):
    classifier = pipeline("zero-shot-image-classification", model=str(saved_model_dir))
    image = rng_image(120, 90)
    labels = ["cat", "dog", "a red sports car", "bird"]
    result = classifier(image, candidate_labels=labels)
    scores = [r["score"] for r in result]
    assert scores == sorted(scores, reverse=True) and sum(scores) == pytest.approx(1.0, abs=1e-5)
    model, processor = AutoModel.from_pretrained(saved_model_dir), AutoProcessor.from_pretrained(saved_model_dir)
    inputs = processor(text=[f"This is a photo of {label}." for label in labels], images=image, return_tensors="pt")
    with torch.no_grad():
        probs = model(**inputs).logits_per_image.softmax(-1)[0]
    assert {r["label"]: r["score"] for r in result} == pytest.approx(dict(zip(labels, probs.tolist())), abs=1e-5)


REMOTE_CODE_SCRIPT = textwrap.dedent("""
    import importlib.abc, json, sys
    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("modeling_mobileclip", "dataset_scripts"):
                raise ImportError(f"{name} is blocked: remote code must not need the package")
    sys.meta_path.insert(0, Block())
    import numpy as np, torch
    from PIL import Image
    from transformers import AutoModel, AutoProcessor, pipeline
    path = sys.argv[1]
    model = AutoModel.from_pretrained(path, trust_remote_code=True).eval()
    processor = AutoProcessor.from_pretrained(path, trust_remote_code=True)
    image = Image.fromarray(np.random.default_rng(1).integers(0, 256, (90, 120, 3), dtype=np.uint8))
    inputs = processor(text=["a cat", "a dog"], images=image, return_tensors="pt", padding=True)
    with torch.no_grad():
        logits = model(**inputs).logits_per_image
    classifier = pipeline("zero-shot-image-classification", model=path, trust_remote_code=True)
    result = classifier(image, candidate_labels=["cat", "dog"])
    print(json.dumps({"module": type(model).__module__, "logits": logits.tolist(), "pipeline": result}))
""")


@pytest.mark.slow
def test_remote_code_loads_without_the_package(saved_model_dir, tmp_path):
    script = tmp_path / "load_remote.py"
    script.write_text(REMOTE_CODE_SCRIPT)
    env = {"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf_home"), "PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, str(script), str(saved_model_dir)], capture_output=True, text=True,
                          env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["module"].startswith("transformers_modules.")
    model, processor = AutoModel.from_pretrained(saved_model_dir), AutoProcessor.from_pretrained(saved_model_dir)
    image = Image.fromarray(np.random.default_rng(1).integers(0, 256, (90, 120, 3), dtype=np.uint8))
    with torch.no_grad():
        expected = model(**processor(text=["a cat", "a dog"], images=image, return_tensors="pt")).logits_per_image
    assert torch.allclose(torch.tensor(result["logits"]), expected, atol=1e-5)
    assert sum(r["score"] for r in result["pipeline"]) == pytest.approx(1.0, abs=1e-5)
