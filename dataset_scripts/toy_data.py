"""The embedded default of `train_accelerate.py`: a tiny DataCompDR dataset that the project builds itself, offline.

    python -m dataset_scripts.toy_data                    # builds once (~2-3 min on 2 CPU cores), prints the folder
    from dataset_scripts.toy_data import build_toy_datacompdr
    root = build_toy_datacompdr()                         # <cache>/toy-v6-<hash>/{train/*.tar, eval/, teachers/}

Everything is generated from a seed; nothing is downloaded. The pipeline is the real one at micro scale:

1. **Web data.** Procedurally rendered 64x64 pictures of one coloured shape (6 colours x circle / ring / triangle /
   bar, small or large, anywhere on a white / black / grey background), JPEG-encoded, each with a short, noisy
   alt-text caption as in web data ("IMG_4821.jpg", "red thing", "my ring", 10 % naming the wrong colour).
2. **Teachers.** Two CLIP models trained here with the plain CLIP loss (`losses.clip_loss`, `optim.build_optimizer`)
   on their own, separately rendered data with clean captions, through the same augmentations the reinforcement
   stores: two tiny MobileCLIPs (MCi image towers, 32-d and 24-d, different seeds). Each batch holds groups of
   pictures that differ only in shape (see :func:`train_teacher`). Both are saved under `teachers/` with their
   processors, and their held-out zero-shot accuracy is recorded in `toy.json`.
3. **Reinforcement.** `dataset_scripts.reinforce.reinforce` turns the web data into DataCompDR shards: stored
   augmentations, the two teachers' embeddings (K = 2, widths 32 + 24, each teacher's learned logit scale as its
   distillation scale) and synthetic captions from :class:`ProceduralCaptioner`, a deterministic "captioner" that
   measures the picture it is given (background from the border pixels, shape colour from the rest, shape from the
   fill ratio, hole and aspect of its bounding box, size and position from its extent and centroid).
4. **Held-out evaluation set** (`eval/`, a `datasets.save_to_disk` folder, also usable with
   `python -m modeling_mobileclip.evaluation --dataset <root>/eval`): one picture per (colour, shape, background, size),
   144 images, with `label` (24 "colour shape" classes, a `ClassLabel`) and a human-style `caption` unique per image.

The folder is keyed by :class:`ToySpec` and `TOY_VERSION`, built in a temporary folder and renamed into place, so a
concurrent or interrupted build never leaves a half-written copy that looks complete.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import io
import json
import os
import random
import shutil
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np
import PIL.Image
import PIL.ImageDraw
import torch

from .augment_replay import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, AugmentationSampler

TOY_VERSION = 6
IMAGE_SIZE = 64
COLOURS = {"red": (220, 30, 30), "green": (30, 170, 40), "blue": (30, 60, 220), "yellow": (235, 215, 30),
           "purple": (140, 40, 170), "orange": (245, 140, 20)}
BACKGROUNDS = {"white": (245, 245, 245), "black": (15, 15, 15), "grey": (128, 128, 128)}
SHAPES = ("circle", "ring", "triangle", "bar")
SIZES = {"small": (12.0, 15.0), "large": (19.0, 23.0)}  # half-extent r in pixels (a bar is 2.5 r x 0.9 r)
_BAR = (1.25, 0.45)  # a bar's half-width and half-height in units of r
_SIZE_THRESHOLD = 17.0  # r between the two size ranges

# The zero-shot pipeline's default prompt (`hypothesis_template`, the Hub widget's too): the toy captions include its
# form, so a user's first `pipeline("zero-shot-image-classification", ...)` call asks the model what it was taught.
PIPELINE_TEMPLATE = "This is a photo of {}."
# The trained model's own prompt ensemble (saved with it, see `evaluation.prompts.MODEL_TEMPLATES_FILE`): the pipeline's
# prompt and prompts over the attributes that are not the class.
EVAL_TEMPLATES = (PIPELINE_TEMPLATE, "a {}", "a small {}", "a large {}", "a {} on a white background",
                  "a {} on a black background", "a {} on a grey background")
_PROMPT_TEMPLATES = ("This is a photo of {colour} {shape}.", "This is a photo of a {colour} {shape}.")
_SYNTHETIC_TEMPLATES = (
    "a {size} {colour} {shape} on a {background} background",
    "a photo of a {colour} {shape} {where}",
    "a {background} picture with a {size} {colour} {shape} {where}",
    "{colour} {shape}, {size}, {where}, {background} background",
    *_PROMPT_TEMPLATES,
)
_TEACHER_TEMPLATES = ("{colour} {shape} on {background}", "a {size} {colour} {shape}", "a {colour} {shape} {where}",
                      *_PROMPT_TEMPLATES)

# Tiny MobileCLIP preset shared by the toy teachers and the training script's default student.
_TINY_TEXT = dict(vocab_size=49408, hidden_size=32, intermediate_size=64, num_attention_heads=4,
                  max_position_embeddings=77)
TINY_PRESETS = {
    # MCi image tower (FastViT: RepMixer stages + one attention stage) + S0's Text-RepMixer hybrid text tower
    "tiny": dict(
        vision=dict(backbone="fastvit", image_size=64, layers=(1, 1, 1, 1), embed_dims=(8, 16, 32, 64),
                    mlp_ratios=(3.0,) * 4, token_mixers=("repmixer",) * 3 + ("attention",),
                    downsamples=(False, True, True, True), se_downsamples=(False, False, True, True),
                    pos_embs=(False, False, False, True), norm="batchnorm", stem_use_scale_branch=True),
        text=dict(_TINY_TEXT, num_hidden_layers=4,
                  block_types=("repmixer", "transformer", "transformer", "repmixer"))),
}
def tiny_model_config(preset: str, projection_dim: int = 32):
    """`MobileCLIPConfig` of a tiny preset (`TINY_PRESETS`)."""
    from modeling_mobileclip import MobileCLIPConfig, MobileCLIPTextConfig, MobileCLIPVisionConfig

    if preset not in TINY_PRESETS:
        raise ValueError(f"Unknown tiny preset {preset!r}; choose one of {sorted(TINY_PRESETS)}.")
    spec = TINY_PRESETS[preset]
    return MobileCLIPConfig(text_config=MobileCLIPTextConfig(**spec["text"]),
                            vision_config=MobileCLIPVisionConfig(**spec["vision"]), projection_dim=projection_dim)


def tiny_mobileclip(projection_dim: int = 32):
    """A randomly initialised tiny MobileCLIP and its processor (OpenAI mean/std, 64 px, bicubic)."""
    from modeling_mobileclip import MobileCLIPImageProcessor, MobileCLIPModel, MobileCLIPProcessor, MobileCLIPTokenizer

    image_processor = MobileCLIPImageProcessor(
        size={"shortest_edge": IMAGE_SIZE}, crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
        resample=PIL.Image.Resampling.BICUBIC, image_mean=OPENAI_CLIP_MEAN, image_std=OPENAI_CLIP_STD)
    model = MobileCLIPModel(tiny_model_config("tiny", projection_dim))
    return model, MobileCLIPProcessor(image_processor, MobileCLIPTokenizer.from_bpe_file())


@dataclasses.dataclass(frozen=True)
class ToySpec:
    """Everything that determines the toy dataset (hashed into its cache key)."""

    num_train: int = 1024
    samples_per_shard: int = 256
    num_augmentations: int = 4
    num_synthetic: int = 2
    teacher_images: int = 2048
    teacher_steps: int = 600
    teacher_batch_size: int = 64
    teacher_lr: float = 5e-3
    seed: int = 0

    def key(self) -> str:
        blob = json.dumps({"version": TOY_VERSION, **dataclasses.asdict(self)}, sort_keys=True)
        return f"toy-v{TOY_VERSION}-{hashlib.sha256(blob.encode()).hexdigest()[:12]}"


def default_cache_root() -> Path:
    return Path.home() / ".cache" / "mobileclip_hf"


# ---------------------------------------------------------------------------------------------------------------------
# Scenes: what is drawn, how it is drawn, and what the alt-text says about it


@dataclasses.dataclass(frozen=True)
class Scene:
    colour: str
    shape: str
    background: str
    size: str
    centre: tuple[float, float]
    radius: float

    @property
    def label(self) -> str:
        return f"{self.colour} {self.shape}"


def _half_extent(shape: str, radius: float) -> tuple[float, float]:
    return (_BAR[0] * radius, _BAR[1] * radius) if shape == "bar" else (radius, radius)


def random_scene(rng: random.Random, colour=None, shape=None, background=None, size=None) -> Scene:
    """A scene with the given attributes (random where None) at a random position that keeps the shape inside."""
    colour = colour or rng.choice(sorted(COLOURS))
    shape = shape or rng.choice(SHAPES)
    background = background or rng.choice(sorted(BACKGROUNDS))
    size = size or rng.choice(sorted(SIZES))
    radius = rng.uniform(*SIZES[size])
    half_w, half_h = _half_extent(shape, radius)
    centre = (rng.uniform(half_w + 2, IMAGE_SIZE - half_w - 2), rng.uniform(half_h + 2, IMAGE_SIZE - half_h - 2))
    return Scene(colour, shape, background, size, centre, radius)


def render(scene: Scene) -> PIL.Image.Image:
    img = PIL.Image.new("RGB", (IMAGE_SIZE, IMAGE_SIZE), BACKGROUNDS[scene.background])
    draw, (x, y), r, fill = PIL.ImageDraw.Draw(img), scene.centre, scene.radius, COLOURS[scene.colour]
    if scene.shape == "circle":
        draw.ellipse([x - r, y - r, x + r, y + r], fill=fill)
    elif scene.shape == "ring":
        draw.ellipse([x - r, y - r, x + r, y + r], outline=fill, width=max(3, round(0.4 * r)))
    elif scene.shape == "triangle":
        draw.polygon([(x, y - r), (x - r, y + r), (x + r, y + r)], fill=fill)
    else:
        half_w, half_h = _half_extent("bar", r)
        draw.rectangle([x - half_w, y - half_h, x + half_w, y + half_h], fill=fill)
    return img


def jpeg_bytes(img: PIL.Image.Image) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, format="JPEG", quality=92)
    return buffer.getvalue()


def alt_text(scene: Scene, rng: random.Random) -> str:
    """Web alt-text: often uninformative, often partial, sometimes wrong (10 % name another colour), sometimes a
    sentence in the zero-shot pipeline's form ("This is a photo of a red ring.": synthetic captions, cut at the
    first full stop as Apple's are, never end with one)."""
    colour = scene.colour if rng.random() > 0.1 else rng.choice(sorted(set(COLOURS) - {scene.colour}))
    kind = rng.random()
    if kind < 0.3:
        return rng.choice([f"IMG_{rng.randrange(10000):04d}.jpg", f"DSC{rng.randrange(10000):04d}", "untitled",
                           f"photo {rng.randrange(1000)}", "image", "free shipping", "click to enlarge"])
    if kind < 0.65:
        return rng.choice([f"{colour} thing", f"my {scene.shape}", scene.shape, colour,
                           f"{scene.shape} on {scene.background}"])
    return rng.choice([f"{colour} {scene.shape} for sale", f"nice {colour} {scene.shape}",
                       *(t.format(colour=colour, shape=scene.shape) for t in _PROMPT_TEMPLATES)])


def position(centre: tuple[float, float]) -> str:
    """Where a point lies: "top left", "top", ..., "center" (thirds of the picture, by 0.4 / 0.6)."""
    x, y = centre[0] / IMAGE_SIZE, centre[1] / IMAGE_SIZE
    vertical = "top" if y < 0.4 else "bottom" if y > 0.6 else ""
    horizontal = "left" if x < 0.4 else "right" if x > 0.6 else ""
    return " ".join(p for p in (vertical, horizontal) if p) or "center"


def _where(position: str) -> str:
    return "in the center" if position == "center" else (
        f"in the {position} corner" if " " in position else f"on the {position}")


# ---------------------------------------------------------------------------------------------------------------------
# The captioner


def _nearest(palette: dict, rgb: np.ndarray) -> str:
    return min(palette, key=lambda name: float(np.abs(np.asarray(palette[name]) - rgb).sum()))


def measure(img: PIL.Image.Image) -> dict:
    """The scene's attributes as read from the pixels (what :class:`ProceduralCaptioner` describes)."""
    pixels = np.asarray(img.convert("RGB"), dtype=np.int16)
    border = np.concatenate([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]])
    background_rgb = np.median(border, axis=0)
    distance = np.abs(pixels - background_rgb).sum(axis=-1)
    attributes = {"background": _nearest(BACKGROUNDS, background_rgb)}
    if (distance > 90).sum() < 4:
        return attributes
    # Second pass at half the object/background contrast: JPEG blurs edges (most for chroma, e.g. purple on grey).
    object_rgb = np.median(pixels[distance > 90], axis=0)
    mask = distance > np.abs(object_rgb - background_rgb).sum() / 2
    ys, xs = np.nonzero(mask)
    height, width = np.ptp(ys) + 1, np.ptp(xs) + 1
    fill, aspect = mask.sum() / (height * width), max(width, height) / min(width, height)
    hole = not mask[(ys.min() + ys.max()) // 2, (xs.min() + xs.max()) // 2]
    shape = "bar" if aspect >= 2 else "ring" if hole else "circle" if fill > 0.65 else "triangle"
    half = max(width, height) / 2 / (_BAR[0] if shape == "bar" else 1.0)
    return dict(attributes, colour=_nearest(COLOURS, object_rgb), shape=shape,
                size="small" if half < _SIZE_THRESHOLD else "large", position=position((xs.mean(), ys.mean())))


class ProceduralCaptioner:
    """A deterministic captioner for the toy pictures (the `captioners.CaptionModel` interface of `reinforce`).

    It measures each picture (:func:`measure`) and writes caption c with the template chosen by `seeds[i][c]`, so
    the captions depend only on the picture and the seed, as the reinforcement tool requires.
    """

    name = f"mobileclip-hf-toy-captioner-v{TOY_VERSION}"

    def caption(self, images, seeds) -> list[list[str]]:
        captions = []
        for img, image_seeds in zip(images, seeds):
            found = measure(img)
            if "shape" not in found:
                captions.append([f"an empty {found['background']} picture"] * len(image_seeds))
                continue
            fields = dict(found, where=_where(found["position"]))
            captions.append([random.Random(seed).choice(_SYNTHETIC_TEMPLATES).format(**fields)
                             for seed in image_seeds])
        return captions


# ---------------------------------------------------------------------------------------------------------------------
# Teachers


def _teacher_caption(scene: Scene, rng: random.Random) -> str:
    return rng.choice(_TEACHER_TEMPLATES).format(colour=scene.colour, shape=scene.shape, background=scene.background,
                                                 size=scene.size, where=_where(position(scene.centre)))


def train_teacher(model, processor, images: list, captions: list[str], groups: list[list[int]], spec: ToySpec,
                  seed: int):
    """Plain CLIP training (this project's loss, optimizer and schedule) on (augmented view, clean caption) pairs.

    A batch is made of `groups`: pictures that differ only in their shape (same colour, background and size), so
    telling shapes apart is needed to match captions. In random batches a pair that only the shape separates is
    rare (1 in 36), and a short training learns colour, background and size but hardly any shape.

    The views are drawn with the reinforcement's augmentation sampler (RandomResizedCrop + RandAugment) at the
    teacher's resolution, so the teacher embeds augmented views as well as it will have to in `reinforce`.
    """
    from modeling_mobileclip.training.losses import clip_loss, total_loss
    from modeling_mobileclip.training.optim import build_optimizer, warmup_cosine_schedule

    ip = processor.image_processor
    sampler = AugmentationSampler(size=ip.crop_size["height"], mean=tuple(ip.image_mean), std=tuple(ip.image_std))
    context = model.config.text_config.max_position_embeddings
    optimizer = build_optimizer(model, type(model).__name__, lr=spec.teacher_lr, weight_decay=0.1)
    scheduler = warmup_cosine_schedule(optimizer, warmup_steps=spec.teacher_steps // 10, total_steps=spec.teacher_steps)
    rng = random.Random(seed)
    model.train()
    for _ in range(spec.teacher_steps):
        batch = [i for group in rng.sample(groups, spec.teacher_batch_size // len(SHAPES)) for i in group]
        pixels = torch.stack([sampler.apply(images[i], sampler.sample(rng, images[i].size)) for i in batch])
        ids = processor(text=[captions[i] for i in batch], padding="max_length", truncation=True, max_length=context,
                        return_tensors="pt")["input_ids"]
        out = model(input_ids=ids, pixel_values=pixels)
        scale = model.logit_scale.exp().clamp(max=100)
        loss = total_loss(clip_loss(out.image_embeds, out.text_embeds, scale, rank=0, world_size=1))
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
    return model.eval()


TEACHER_WIDTHS = (32, 24)  # two tiny MobileCLIPs, different widths and seeds


def _teacher_data(spec: ToySpec) -> tuple[list, list[str], list[list[int]]]:
    """The teachers' own pictures, clean captions and shape groups (deterministic in `spec`)."""
    rng = random.Random(f"{spec.seed}:teacher-data")
    scenes, groups = [], []
    for _ in range(spec.teacher_images // len(SHAPES)):
        colour, background = rng.choice(sorted(COLOURS)), rng.choice(sorted(BACKGROUNDS))
        size = rng.choice(sorted(SIZES))
        groups.append(list(range(len(scenes), len(scenes) + len(SHAPES))))
        scenes += [random_scene(rng, colour, shape, background, size) for shape in SHAPES]
    return [render(s) for s in scenes], [_teacher_caption(s, rng) for s in scenes], groups


def _train_teachers(spec: ToySpec, eval_ds, folder: Path, log, threads: int | None = None) -> list:
    """Both teachers, trained side by side in `threads` Python threads (default: one per teacher, at most one per
    core), each running its ops on one core; the result is the same for any number of threads (tested).

    The models are created one after the other (their initialisation draws from torch's global generator); the
    training draws only from each teacher's own `random.Random`, so the threads do not share a random stream."""
    import concurrent.futures

    from modeling_mobileclip.evaluation.zeroshot import zeroshot_accuracy

    from .teachers import teacher_from_transformers

    images, captions, groups = _teacher_data(spec)
    classnames = eval_ds.features["label"].names
    models = []
    for k in range(len(TEACHER_WIDTHS)):
        torch.manual_seed(spec.seed * 100 + k)
        models.append(tiny_mobileclip(TEACHER_WIDTHS[k]))

    def train(k: int) -> float:
        start = time.perf_counter()
        train_teacher(*models[k], images, captions, groups, spec, seed=spec.seed * 100 + k)
        return time.perf_counter() - start

    threads = threads or min(len(models), os.cpu_count() or 1)
    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        seconds = list(pool.map(train, range(len(models))))
    teachers, at_once = [], f" ({threads} teachers at once)" if threads > 1 else ""
    for (model, processor), width, took in zip(models, TEACHER_WIDTHS, seconds):
        name = f"mci-{width}d"
        label = f"toy-teacher-{name}"
        accuracy = zeroshot_accuracy(model, processor, eval_ds, classnames, list(EVAL_TEMPLATES))["acc1"]
        prompt_accuracy = zeroshot_accuracy(model, processor, eval_ds, classnames, [PIPELINE_TEMPLATE])["acc1"]
        model.save_pretrained(folder / name)
        processor.save_pretrained(folder / name)
        scale = round(float(model.logit_scale.detach().exp().clamp(max=100)), 2)
        log(f"  teacher {name} ({width}-d): {spec.teacher_steps} steps in {took:.0f} s{at_once}, "
            f"held-out zero-shot acc1 {accuracy:.3f} ({prompt_accuracy:.3f} with {PIPELINE_TEMPLATE!r} alone), "
            f"logit scale {scale}")
        teachers.append(dict(name=label, teacher=teacher_from_transformers(model, processor, label), width=width,
                             logit_scale=scale, zeroshot_acc1=accuracy, zeroshot_acc1_pipeline_prompt=prompt_accuracy,
                             seconds=round(took, 1)))
    return teachers


# ---------------------------------------------------------------------------------------------------------------------
# Files


def _add_member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), 0, 0o644  # fixed mtime: identical bytes for identical specs
    tar.addfile(info, io.BytesIO(data))


def write_web_shards(folder: Path, spec: ToySpec) -> int:
    """The "web data" to reinforce: webdataset tars of `{uid}.jpg`, `{uid}.txt` (alt-text), `{uid}.json`."""
    folder.mkdir(parents=True)
    rng = random.Random(f"{spec.seed}:web")
    for shard, start in enumerate(range(0, spec.num_train, spec.samples_per_shard)):
        with tarfile.open(folder / f"{shard:05d}.tar", "w", format=tarfile.USTAR_FORMAT) as tar:
            for index in range(start, min(start + spec.samples_per_shard, spec.num_train)):
                scene = random_scene(rng)
                uid = hashlib.md5(f"toy-{spec.seed}-{index}".encode()).hexdigest()
                _add_member(tar, f"{uid}.jpg", jpeg_bytes(render(scene)))
                _add_member(tar, f"{uid}.txt", alt_text(scene, rng).encode())
                _add_member(tar, f"{uid}.json", json.dumps({"uid": uid}).encode())
    return spec.num_train


def build_eval_set(folder: Path, seed: int):
    """One picture per (colour, shape, background, size) with its class label and a human-style caption."""
    import datasets

    rng = random.Random(f"{seed}:eval")
    classnames = [f"{c} {s}" for c in sorted(COLOURS) for s in SHAPES]
    rows = {"image": [], "label": [], "caption": []}
    for colour in sorted(COLOURS):
        for shape in SHAPES:
            for background in sorted(BACKGROUNDS):
                for size in sorted(SIZES):
                    scene = random_scene(rng, colour, shape, background, size)
                    rows["image"].append(PIL.Image.open(io.BytesIO(jpeg_bytes(render(scene)))))
                    rows["label"].append(classnames.index(scene.label))
                    rows["caption"].append(f"there is one {size} {colour} {shape} against {background}")
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=classnames),
                                  "caption": datasets.Value("string")})
    ds = datasets.Dataset.from_dict(rows, features=features)
    ds.save_to_disk(str(folder))
    return datasets.load_from_disk(str(folder))


# The model card's widget examples: held-out pictures (colour, shape, background, size), each with four candidate
# labels: its class, its colour with another shape, its shape in another colour and a third class.
WIDGET_SCENES = (
    ("red", "ring", "black", "large", ("red ring", "red circle", "blue ring", "green triangle")),
    ("blue", "triangle", "white", "large", ("blue triangle", "blue bar", "yellow triangle", "red circle")),
    ("yellow", "bar", "grey", "large", ("yellow bar", "yellow circle", "purple bar", "green ring")),
)


def widget_examples(eval_ds) -> list[dict]:
    """The widget examples of a model trained on the toy set (`hub_cards.generate_model_card(widget_images=...)`):
    pictures of the held-out set `eval_ds` with candidate labels from its class names; `label` is the true one."""
    names = eval_ds.features["label"].names
    examples = []
    for colour, shape, background, size, labels in WIDGET_SCENES:
        if f"{colour} {shape}" != labels[0] or not set(labels) <= set(names):
            raise ValueError(f"WIDGET_SCENES entry {(colour, shape)} has labels {labels} that are not classes of "
                             f"the held-out set (or do not start with the true one); classes: {names}.")
        index = (((sorted(COLOURS).index(colour) * len(SHAPES) + SHAPES.index(shape)) * len(BACKGROUNDS)
                  + sorted(BACKGROUNDS).index(background)) * len(SIZES) + sorted(SIZES).index(size))
        row = eval_ds[index]
        if names[row["label"]] != labels[0] or f" {size} " not in row["caption"] or background not in row["caption"]:
            raise ValueError(f"held-out row {index} is {row['caption']!r}, not a {size} {colour} {shape} on "
                             f"{background}: the held-out set's order changed; update widget_examples.")
        examples.append({"image": row["image"], "candidate_labels": list(labels), "label": labels[0],
                         "example_title": f"A {size} {colour} {shape} on {background} (held-out toy picture)",
                         "src": f"widget/{colour}-{shape}-on-{background}.png"})
    return examples


@contextlib.contextmanager
def _one_thread():
    # The models are tiny: thread start-up and synchronisation cost more than the maths (and far more on a shared CPU).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def build_toy_datacompdr(spec: ToySpec = ToySpec(), cache_root: str | os.PathLike | None = None, log=print,
                         teacher_threads: int | None = None) -> Path:
    """Build (once) and return the folder with `train/*.tar` (+ `config.json`), `eval/`, `teachers/`, `toy.json`.

    `teacher_threads`: how many teachers train at once (default: both on a multi-core machine); the build is the same
    whatever the number."""
    from .reinforce import reinforce

    root = Path(cache_root) if cache_root is not None else default_cache_root()
    target = root / spec.key()
    if (target / "toy.json").is_file():
        return target
    root.mkdir(parents=True, exist_ok=True)
    log(f"Building the toy DataCompDR dataset in {target} (one-time)")
    start = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix=".building-", dir=root))
    try:
        with torch.random.fork_rng(), _one_thread():
            eval_ds = build_eval_set(tmp / "eval", spec.seed)
            teachers = _train_teachers(spec, eval_ds, tmp / "teachers", log, teacher_threads)
            write_web_shards(tmp / "web", spec)
            summary = reinforce(
                str(tmp / "web"), output=str(tmp / "train"), teachers=[t["teacher"] for t in teachers],
                captioner=ProceduralCaptioner(), num_captions=spec.num_synthetic,
                num_augmentations=spec.num_augmentations, crop_size=IMAGE_SIZE, seed=spec.seed,
                teacher_logit_scales=[t["logit_scale"] for t in teachers], license="apache-2.0", device="cpu",
                progress=False, batch_size=64)
        shutil.rmtree(tmp / "web")
        record = {"spec": dataclasses.asdict(spec), "version": TOY_VERSION, "num_train": summary["total_uids"],
                  "num_eval": len(eval_ds), "eval_classnames": eval_ds.features["label"].names,
                  "eval_templates": list(EVAL_TEMPLATES), "build_seconds": round(time.perf_counter() - start, 1),
                  "teachers": [{k: t[k] for k in ("name", "width", "logit_scale", "zeroshot_acc1",
                                                "zeroshot_acc1_pipeline_prompt", "seconds")} for t in teachers]}
        (tmp / "toy.json").write_text(json.dumps(record, indent=1))
        try:
            os.rename(tmp, target)
        except OSError:  # another process finished first: keep its copy
            if not (target / "toy.json").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log(f"Built the toy DataCompDR dataset in {time.perf_counter() - start:.0f} s: {target}")
    return target


def main(argv=None) -> Path:
    p = argparse.ArgumentParser(description="Build the toy DataCompDR dataset (train_accelerate.py's default).")
    p.add_argument("--cache-dir", default=None, help="default ~/.cache/mobileclip_hf")
    for field in dataclasses.fields(ToySpec):
        p.add_argument(f"--{field.name.replace('_', '-')}", type=type(field.default), default=field.default)
    args = vars(p.parse_args(argv))
    root = build_toy_datacompdr(ToySpec(**{k: v for k, v in args.items() if k != "cache_dir"}), args["cache_dir"])
    print(root)
    return root


if __name__ == "__main__":
    main()
