"""A tiny, deterministic DataCompDR-layout dataset for offline training runs and tests ("toy DataCompDR").

What it holds (everything is built here, from a seed; nothing is downloaded):

* images: procedurally rendered 96x96 pictures of one coloured shape (circle / square / triangle) at one of five
  positions on a coloured background;
* ``txt``: a short, noisy alt-text ground-truth caption ("red thing", "IMG_4821.jpg", ...), as in web data;
* ``syn.json``: ``{"syn_text": [...]}`` descriptive synthetic captions ("a red circle in the top left corner of a
  white picture");
* ``paug.json``: ``num_augmentations`` views per image drawn with ``augment_replay.AugmentationSampler`` (DataCompDR
  encoding ``[[i, j, h, w], [[op, mag], [op, mag]]]``);
* ``npz``: ``image_emb`` [n_aug, D] and ``text_emb`` [1 + n_syn, D] (row 0 = GT) from K = 2 teachers that this
  module trains itself (tiny ViT MobileCLIPs, plain CLIP loss on the synthetic captions), each teacher's slice
  L2-normalised; widths and learned logit scales are recorded in ``config.json`` next to the shard folders.

``build_toy_datacompdr(spec, cache_root)`` writes ``<cache_root>/toy-v<VERSION>-<hash>/{train,validation}/*.tar``
+ ``config.json`` once (keyed by the spec and ``TOY_VERSION``) and returns that folder; the folder is moved into place
atomically, so concurrent builders never see a half-written copy.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import random
import shutil
import tarfile
import tempfile
from pathlib import Path

import numpy as np
import PIL.Image
import PIL.ImageDraw
import torch
import torch.nn.functional as F

from .augment_replay import AugmentationSampler

TOY_VERSION = 1
IMAGE_SIZE = 96
COLOURS = {"red": (220, 30, 30), "green": (30, 170, 40), "blue": (30, 60, 220), "yellow": (235, 215, 30),
           "purple": (140, 40, 170), "orange": (245, 140, 20)}
BACKGROUNDS = {"white": (245, 245, 245), "black": (15, 15, 15), "grey": (128, 128, 128)}
SHAPES = ("circle", "square", "triangle")
POSITIONS = {"top left": (0.3, 0.3), "top right": (0.7, 0.3), "bottom left": (0.3, 0.7), "bottom right": (0.7, 0.7),
             "center": (0.5, 0.5)}

# Tiny model presets (the tests' tiny configs): "tiny" = MCi + Text-RepMixer, "tiny-vit" = ViT + transformer text.
_TINY_TEXT = dict(vocab_size=49408, hidden_size=32, intermediate_size=64, num_attention_heads=4,
                  max_position_embeddings=32)
TINY_PRESETS = {
    "tiny": dict(
        vision=dict(backbone="fastvit", image_size=64, layers=(1, 1, 1, 1), embed_dims=(8, 16, 32, 64),
                    mlp_ratios=(3.0,) * 4, token_mixers=("repmixer",) * 3 + ("attention",),
                    downsamples=(False, True, True, True), se_downsamples=(False, False, True, True),
                    pos_embs=(False, False, False, True), norm="batchnorm", stem_use_scale_branch=True),
        text=dict(_TINY_TEXT, num_hidden_layers=4,
                  block_types=("repmixer", "transformer", "transformer", "repmixer"))),
    "tiny-vit": dict(
        vision=dict(backbone="vit", image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2,
                    num_attention_heads=4, intermediate_size=64, stem="patch", layer_norm_eps=1e-5, pre_norm=True,
                    projection_bias=True),
        text=dict(_TINY_TEXT, num_hidden_layers=2)),
}


def tiny_model_config(preset: str, projection_dim: int = 32):
    """`MobileCLIPConfig` of a tiny preset (`TINY_PRESETS`)."""
    from modeling_mobileclip import MobileCLIPConfig, MobileCLIPTextConfig, MobileCLIPVisionConfig

    if preset not in TINY_PRESETS:
        raise ValueError(f"Unknown tiny preset {preset!r}; choose one of {sorted(TINY_PRESETS)}.")
    spec = TINY_PRESETS[preset]
    return MobileCLIPConfig(text_config=MobileCLIPTextConfig(**spec["text"]),
                            vision_config=MobileCLIPVisionConfig(**spec["vision"]), projection_dim=projection_dim)


@dataclasses.dataclass(frozen=True)
class ToySpec:
    """Everything that determines the toy dataset's bytes (hashed into its cache key)."""

    num_train: int = 512
    num_validation: int = 128
    samples_per_shard: int = 256
    num_augmentations: int = 4
    num_synthetic: int = 2
    teacher_steps: int = 300
    teacher_batch_size: int = 64
    teacher_dims: tuple[int, ...] = (32, 24)
    seed: int = 0

    def key(self) -> str:
        blob = json.dumps({"version": TOY_VERSION, **dataclasses.asdict(self)}, sort_keys=True)
        return f"toy-v{TOY_VERSION}-{hashlib.sha256(blob.encode()).hexdigest()[:12]}"


def default_cache_root() -> Path:
    return Path.home() / ".cache" / "mobileclip_hf"


# ---------------------------------------------------------------------------------------------------------------------
# Rendering and captions


def _draw_shape(draw: PIL.ImageDraw.ImageDraw, shape: str, centre: tuple[float, float], radius: float, fill) -> None:
    x, y = centre
    if shape == "circle":
        draw.ellipse([x - radius, y - radius, x + radius, y + radius], fill=fill)
    elif shape == "square":
        draw.rectangle([x - radius, y - radius, x + radius, y + radius], fill=fill)
    else:
        draw.polygon([(x, y - radius), (x - radius, y + radius), (x + radius, y + radius)], fill=fill)


def render_sample(rng: random.Random) -> dict:
    """One picture with its attributes, GT alt-text and synthetic captions (uses only `rng`)."""
    colour, shape = rng.choice(sorted(COLOURS)), rng.choice(SHAPES)
    position, background = rng.choice(sorted(POSITIONS)), rng.choice(sorted(BACKGROUNDS))
    img = PIL.Image.new("RGB", (IMAGE_SIZE, IMAGE_SIZE), BACKGROUNDS[background])
    fx, fy = POSITIONS[position]
    jitter = [rng.uniform(-4, 4) for _ in range(2)]
    _draw_shape(PIL.ImageDraw.Draw(img), shape, (fx * IMAGE_SIZE + jitter[0], fy * IMAGE_SIZE + jitter[1]),
                rng.uniform(11, 17), COLOURS[colour])
    buffer = io.BytesIO()
    img.save(buffer, format="JPEG", quality=90)
    noisy = [f"IMG_{rng.randrange(10000):04d}.jpg", f"{colour} thing", f"my {shape}", f"{colour} {shape} for sale",
             f"photo {rng.randrange(1000)}"]
    synthetic = [f"a {colour} {shape} in the {position} of a {background} picture",
                 f"{position}: a {colour} {shape} on {background}",
                 f"a picture with a {background} background and a {colour} {shape} at the {position}"]
    return {"jpg": buffer.getvalue(), "txt": rng.choice(noisy), "syn_text": synthetic}


# ---------------------------------------------------------------------------------------------------------------------
# Teachers


def _tokenize(tokenizer, texts: list[str], max_length: int) -> torch.Tensor:
    tokens = tokenizer(texts, padding="max_length", truncation=True, max_length=max_length, return_tensors="pt")
    return tokens["input_ids"].masked_fill(tokens["attention_mask"] == 0, 0)


def _teacher_views(samples: list[dict], sampler: AugmentationSampler, rng: random.Random) -> list[torch.Tensor]:
    return [sampler.apply(s["jpg"], sampler.sample(rng, (IMAGE_SIZE, IMAGE_SIZE))) for s in samples]


def train_teacher(samples: list[dict], tokenizer, projection_dim: int, spec: ToySpec, seed: int):
    """A tiny ViT MobileCLIP trained with plain CLIP loss on (augmented view, first synthetic caption) pairs."""
    from modeling_mobileclip import MobileCLIPModel
    from modeling_mobileclip.losses import clip_loss

    torch.manual_seed(seed)
    config = tiny_model_config("tiny-vit", projection_dim)
    model = MobileCLIPModel(config).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.0)
    sampler = AugmentationSampler(size=config.vision_config.image_size)
    rng = random.Random(seed)
    ctx = config.text_config.max_position_embeddings
    for _ in range(spec.teacher_steps):
        batch = rng.sample(samples, min(spec.teacher_batch_size, len(samples)))
        pixels = torch.stack(_teacher_views(batch, sampler, rng))
        out = model(input_ids=_tokenize(tokenizer, [rng.choice(s["syn_text"]) for s in batch], ctx),
                    pixel_values=pixels)
        loss = sum(clip_loss(out.image_embeds, out.text_embeds, out.logit_scale, rank=0, world_size=1).values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval(), sampler


@torch.no_grad()
def embed_sample(teachers: list, tokenizer, sample: dict, entries: list) -> tuple[np.ndarray, np.ndarray]:
    """`image_emb` [n_aug, D] and `text_emb` [1 + n_syn, D], each teacher's slice L2-normalised, concatenated."""
    image_parts, text_parts = [], []
    texts = [sample["txt"]] + sample["syn_text"]
    for model, sampler in teachers:
        pixels = torch.stack([sampler.apply(sample["jpg"], e) for e in entries])
        ctx = model.config.text_config.max_position_embeddings
        image_parts.append(F.normalize(model.get_image_features(pixel_values=pixels).pooler_output, dim=-1))
        text_parts.append(F.normalize(model.get_text_features(input_ids=_tokenize(tokenizer, texts, ctx))
                                      .pooler_output, dim=-1))
    return torch.cat(image_parts, 1).numpy().astype(np.float32), torch.cat(text_parts, 1).numpy().astype(np.float32)


# ---------------------------------------------------------------------------------------------------------------------
# Shards


def _add_member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), 0, 0o644  # fixed mtime: identical bytes for identical specs
    tar.addfile(info, io.BytesIO(data))


def write_shard(path: Path, records: list[dict]) -> None:
    """One webdataset tar in the DataCompDR sample layout (`jpg`, `txt`, `json`, `syn.json`, `paug.json`, `npz`)."""
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tar:
        for r in records:
            uid = r["uid"]
            npz = io.BytesIO()
            np.savez(npz, image_emb=r["image_emb"], text_emb=r["text_emb"])
            meta = {"uid": uid, "sha256": hashlib.sha256(r["jpg"]).hexdigest(),
                    "original_width": IMAGE_SIZE, "original_height": IMAGE_SIZE}
            for field, data in (("jpg", r["jpg"]), ("txt", r["txt"].encode()), ("json", json.dumps(meta).encode()),
                                ("syn.json", json.dumps({"syn_text": r["syn_text"]}).encode()),
                                ("paug.json", json.dumps({"param_aug": r["param_aug"]}).encode()),
                                ("npz", npz.getvalue())):
                _add_member(tar, f"{uid}.{field}", data)


def _records(samples: list[dict], teachers: list, tokenizer, spec: ToySpec, seed: int) -> list[dict]:
    rng = random.Random(seed)
    sampler = teachers[0][1]
    records = []
    for index, sample in enumerate(samples):
        sample = dict(sample, syn_text=sample["syn_text"][:spec.num_synthetic])
        entries = [sampler.sample(rng, (IMAGE_SIZE, IMAGE_SIZE)) for _ in range(spec.num_augmentations)]
        image_emb, text_emb = embed_sample(teachers, tokenizer, sample, entries)
        uid = hashlib.md5(f"toy-{spec.seed}-{seed}-{index}".encode()).hexdigest()
        records.append(dict(sample, uid=uid, param_aug=entries, image_emb=image_emb, text_emb=text_emb))
    return records


def _write_split(root: Path, split: str, records: list[dict], per_shard: int) -> None:
    (root / split).mkdir(parents=True)
    for shard, start in enumerate(range(0, len(records), per_shard)):
        write_shard(root / split / f"{shard:05d}.tar", records[start:start + per_shard])


def build_toy_datacompdr(spec: ToySpec = ToySpec(), cache_root: str | os.PathLike | None = None,
                         log=print) -> Path:
    """Build (once) and return the folder holding `train/*.tar`, `validation/*.tar` and `config.json`."""
    from modeling_mobileclip import MobileCLIPTokenizer

    root = Path(cache_root) if cache_root is not None else default_cache_root()
    target = root / spec.key()
    if (target / "config.json").is_file():
        return target
    root.mkdir(parents=True, exist_ok=True)
    log(f"Building the toy DataCompDR dataset in {target} (one-time; trains {len(spec.teacher_dims)} tiny teachers)")
    rng = random.Random(spec.seed)
    samples = [render_sample(rng) for _ in range(spec.num_train + spec.num_validation)]
    tokenizer = MobileCLIPTokenizer.from_bpe_file()
    with torch.random.fork_rng():
        teachers = [train_teacher(samples[:spec.num_train], tokenizer, dim, spec, seed=spec.seed * 1000 + k)
                    for k, dim in enumerate(spec.teacher_dims)]
    config = {
        "teachers": [{"model": f"toy-teacher-{k}", "pretrained": spec.key(), "embedding_dim": dim,
                      "logit_scale": round(float(model.logit_scale.detach().exp().clamp(max=100)), 2)}
                     for k, (dim, (model, _)) in enumerate(zip(spec.teacher_dims, teachers))],
        "num_augmentations": spec.num_augmentations, "augmentation": teachers[0][1].to_config(), "seed": spec.seed,
        "layout": "v1", "embedding_format": "npz", "syn_text_key_regex": "^syn_text$",
        "embedding_source_dtype": "float32",
    }
    tmp = Path(tempfile.mkdtemp(prefix=".building-", dir=root))
    try:
        _write_split(tmp, "train", _records(samples[:spec.num_train], teachers, tokenizer, spec, 1), spec.samples_per_shard)
        _write_split(tmp, "validation", _records(samples[spec.num_train:], teachers, tokenizer, spec, 2),
                     spec.samples_per_shard)
        (tmp / "config.json").write_text(json.dumps(config, indent=1))
        try:
            os.rename(tmp, target)
        except OSError:  # another process finished first: keep its copy
            if not (target / "config.json").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target
