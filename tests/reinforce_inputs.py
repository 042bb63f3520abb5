"""Inputs and models for the reinforcement tool's tests: the tiny random teachers / captioners (saved to local folders
and loaded through the same path as Hub models), tar datasets with the awkward cases mixed in, and readers of the
result. Test modules import the module-scoped fixture `tiny_models_fixture` (named `models`) from here."""

import glob
import io
import json
import os
import tarfile

import numpy as np
import PIL.Image
import pytest

from dataset_scripts.tiny_reinforce_models import build_tiny_models

CROP = 48
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module", name="models")
def tiny_models_fixture(tmp_path_factory):
    return build_tiny_models(str(tmp_path_factory.mktemp("models")), crop_size=CROP)


def image_bytes(seed: int, mode: str = "RGB", fmt: str = "JPEG", size=(61, 45)) -> bytes:
    rng = np.random.default_rng(seed)
    base = PIL.Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))
    if mode == "I;16":
        img = PIL.Image.fromarray((rng.integers(0, 65536, (size[1], size[0]))).astype(np.uint16))
    elif mode != "RGB":
        img = base.convert(mode)
    else:
        img = base
    buffer = io.BytesIO()
    img.save(buffer, format=fmt)
    return buffer.getvalue()


# (uid, image bytes or None, caption or None, extension) - the awkward cases the issue lists are mixed in.
def awkward_samples():
    return [
        ("a0", image_bytes(0), "a red car on the street.", "jpg"),
        ("a1", image_bytes(1, "L", "PNG"), "a grey picture", "png"),
        ("a2", image_bytes(2, "CMYK", "JPEG"), "a cmyk photo", "jpg"),
        ("a3", image_bytes(3, "RGBA", "PNG", size=(30, 80)), "a transparent image", "png"),
        ("a4", image_bytes(4, "I;16", "PNG"), "a 16-bit image", "png"),
        ("a5", b"", "zero bytes", "jpg"),
        ("a6", b"not an image at all", "garbage", "jpg"),
        ("a7", image_bytes(7, "P", "PNG"), None, "png"),  # missing caption
        ("a8", image_bytes(8, fmt="WEBP"), "a webp image", "webp"),
        ("a9", image_bytes(9), "another photo", "jpg"),
    ]


def add_member(tar, name, data):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def write_tar_dataset(root, per_shard=5):
    os.makedirs(root, exist_ok=True)
    samples = awkward_samples()
    for shard, start in enumerate(range(0, len(samples), per_shard)):
        with tarfile.open(os.path.join(root, f"{shard:05d}.tar"), "w") as tar:
            for key, data, text, ext in samples[start:start + per_shard]:
                add_member(tar, f"{key}.{ext}", data)
                if text is not None:
                    add_member(tar, f"{key}.txt", text.encode())
                add_member(tar, f"{key}.json", json.dumps({"uid": f"uid{key}"}).encode())
                add_member(tar, f"{key}.url.txt", f"https://example.com/{key}.{ext}".encode())
    return root


def load_reinforced(out, joins=True):
    from datasets import load_dataset

    shards = sorted(glob.glob(os.path.join(out, "*.tar")))
    extra = dict(image_dir=shards, captions=shards) if joins else {}
    return load_dataset("datacompdr", data_files=shards, split="train", cache_dir=os.path.join(out, "..", "hf"),
                        **extra)


def shard_bytes(out):
    return {os.path.basename(p): open(p, "rb").read() for p in sorted(glob.glob(os.path.join(out, "*.tar")))}
