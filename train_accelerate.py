"""Reinforced (DataCompDR-style) training of MobileCLIP with 🤗 Accelerate.

    accelerate launch train_accelerate.py                     # tiny model on the built-in toy DataCompDR, offline
    accelerate launch train_accelerate.py --resume outputs/train-tiny
    accelerate launch --num_processes 2 train_accelerate.py --train-data 'shards/{00000..00015}.tar' \
        --validation-data 'val/00000.tar' --image-dir images/ --captions 'metadata/*.parquet' --model mobileclip-s0

Per step, every image is one stored augmentation replayed at the student's resolution, its teacher target is that
augmentation's stored embedding, and the text batch holds each image's ground-truth caption and one synthetic caption,
encoded in one text forward. The loss is `losses.mobileclip_loss`'s two-term sum (GT + synthetic captions), each term
`w0 * contrastive + w1 * distillation`.

Data order is a pure function of (seed, micro-step): micro-step m takes global positions [m * G, (m + 1) * G) of a
per-epoch permutation (G = per-device batch x processes) and rank r keeps its slice, so a resumed run, and a run on
another number of processes with the same global batch, sees exactly the same samples and augmentations.

The loop never branches on the model family: a small adapter per family (`ADAPTERS`) builds the model and processor,
provides the student's image transform and tokenizer, and returns (image features, text features, logit scale).
"""

from __future__ import annotations

import argparse
import json
import math
import random
import re
import shutil
import time
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.tracking import GeneralTracker, on_main_process
from accelerate.utils import ProjectConfiguration, set_seed
from tqdm.auto import tqdm

from modeling_mobileclip.losses import mobileclip_loss, total_loss
from modeling_mobileclip.optim import build_optimizer, warmup_cosine_schedule

REQUIRED_COLUMNS = ("image", "image_width", "image_height", "text", "syn_text", "param_aug", "image_emb", "text_emb",
                    "num_gt_emb")
COMPLETE_MARKER = "checkpoint_complete.json"


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--family", default="mobileclip", choices=sorted(ADAPTERS), help="model family (adapter)")
    p.add_argument("--model", default="tiny", help="tiny | tiny-vit | a MobileCLIP variant (random init) | a "
                                                   "local save_pretrained folder")
    p.add_argument("--train-data", default=None, help="DataCompDR shards (brace ranges ok); default: the toy set")
    p.add_argument("--validation-data", default=None, help="held-out shards; default: the toy set's validation")
    p.add_argument("--image-dir", default=None, help="images joined by uid (default: the train/val shards)")
    p.add_argument("--captions", default=None, help="GT captions by uid (default: the train/val shards)")
    p.add_argument("--cache-dir", default=None, help="root of the toy data and datasets caches "
                                                     "(default ~/.cache/mobileclip_hf)")
    p.add_argument("--toy-size", type=int, nargs=3, default=None, metavar=("TRAIN", "VAL", "TEACHER_STEPS"),
                   help="toy dataset size and teacher training steps (default 512 128 300)")
    p.add_argument("--output-dir", default=None, help="default outputs/train-<model> (or the --resume folder)")
    p.add_argument("--resume", default=None, help="output dir of an earlier run: continue from its latest checkpoint")
    p.add_argument("--overwrite-output-dir", action="store_true")
    p.add_argument("--max-steps", type=int, default=120, help="optimizer steps")
    p.add_argument("--batch-size", type=int, default=32, help="per device and micro-step")
    p.add_argument("--gradient-accumulation-steps", type=int, default=1)
    p.add_argument("--mixed-precision", default="no", choices=["no", "bf16", "fp16"])
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--weight-decay", type=float, default=0.2)
    p.add_argument("--warmup-steps", type=int, default=None, help="default: 10%% of --max-steps, at most 1000")
    p.add_argument("--max-grad-norm", type=float, default=1.0)
    p.add_argument("--loss-weights", default="0.0,1.0", help="w0,w1: contrastive and distillation weights")
    p.add_argument("--teacher-dims", default=None, help="per-teacher widths, e.g. 768,768 (default: dataset metadata)")
    p.add_argument("--teacher-logit-scales", default=None, help="one per teacher (default: dataset metadata)")
    p.add_argument("--checkpoint-every", type=int, default=50, help="optimizer steps between save_state")
    p.add_argument("--eval-every", type=int, default=50, help="optimizer steps between held-out evaluations")
    p.add_argument("--log-every", type=int, default=1)
    p.add_argument("--num-workers", type=int, default=0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--push-to-hub", default=None, metavar="REPO_ID")
    p.add_argument("--debug-nan-at-step", type=int, default=None, help=argparse.SUPPRESS)  # tests the NaN guard
    args = p.parse_args(argv)
    args.loss_weights = _floats("--loss-weights", args.loss_weights)
    if len(args.loss_weights) != 2:
        p.error(f"--loss-weights takes two numbers w0,w1, got {args.loss_weights}")
    args.teacher_dims = _ints("--teacher-dims", args.teacher_dims) if args.teacher_dims else None
    args.teacher_logit_scales = _floats("--teacher-logit-scales", args.teacher_logit_scales) \
        if args.teacher_logit_scales else None
    args.output_dir = args.output_dir or args.resume or f"outputs/train-{Path(args.model).name}"
    if args.warmup_steps is None:
        args.warmup_steps = min(1000, args.max_steps // 10)
    return args


def _floats(flag: str, text: str) -> list[float]:
    try:
        return [float(v) for v in str(text).split(",")]
    except ValueError:
        raise SystemExit(f"{flag}={text!r}: expected comma-separated numbers, e.g. 100,100") from None


def _ints(flag: str, text: str) -> list[int]:
    values = _floats(flag, text)
    if any(v != int(v) or v <= 0 for v in values):
        raise SystemExit(f"{flag}={text!r}: expected comma-separated positive integers, e.g. 768,768")
    return [int(v) for v in values]


# ---------------------------------------------------------------------------------------------------------------------
# Model families: the loop only talks to these adapters.


class MobileCLIPAdapter:
    """MobileCLIPModel: tiny presets, named variants (random init) or a local `save_pretrained` folder."""

    def __init__(self, name: str):
        self.name = name

    def build(self):
        from dataset_scripts.toy_data import TINY_PRESETS, tiny_model_config
        from modeling_mobileclip import (MobileCLIPConfig, MobileCLIPImageProcessor, MobileCLIPModel,
                                         MobileCLIPProcessor, MobileCLIPTokenizer)

        if Path(self.name).is_dir():
            return MobileCLIPModel.from_pretrained(self.name), MobileCLIPProcessor.from_pretrained(self.name)
        if self.name in TINY_PRESETS:
            config = tiny_model_config(self.name)
            size = config.vision_config.image_size
            image_processor = MobileCLIPImageProcessor(size={"shortest_edge": size},
                                                       crop_size={"height": size, "width": size})
            return MobileCLIPModel(config), MobileCLIPProcessor(image_processor, MobileCLIPTokenizer.from_bpe_file())
        return MobileCLIPModel(MobileCLIPConfig.from_variant(self.name)), MobileCLIPProcessor.from_variant(self.name)

    def image_transform(self, processor):
        from dataset_scripts.augment_replay import ReplayTransform

        ip = processor.image_processor
        return ReplayTransform(size=ip.crop_size["height"], interpolation=ip.resample.name.lower(),
                               mean=tuple(ip.image_mean), std=tuple(ip.image_std))

    def tokenize(self, processor, model_config, texts: list[str]) -> torch.Tensor:
        return processor(text=texts, return_tensors="pt",
                         max_length=model_config.text_config.max_position_embeddings)["input_ids"]

    def features(self, model, pixel_values, input_ids):
        """(image features [b, d], text features [t, d], logit scale), L2-normalised, scale exponentiated."""
        out = model(input_ids=input_ids, pixel_values=pixel_values)
        return out.image_embeds, out.text_embeds, out.logit_scale


class CLIPAdapter(MobileCLIPAdapter):
    """transformers `CLIPModel` from a local folder (`--family clip --model path`); `tiny` builds a small one."""

    def build(self):
        from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

        from modeling_mobileclip import MobileCLIPTokenizer

        if Path(self.name).is_dir():
            return CLIPModel.from_pretrained(self.name), CLIPProcessor.from_pretrained(self.name)
        if self.name != "tiny":
            raise ValueError(f"--family clip needs --model tiny or a local CLIPModel folder, got {self.name!r}")
        config = CLIPConfig(text_config=dict(hidden_size=32, intermediate_size=64, num_attention_heads=4,
                                             num_hidden_layers=2, max_position_embeddings=32),
                            vision_config=dict(hidden_size=32, intermediate_size=64, num_attention_heads=4,
                                               num_hidden_layers=2, image_size=32, patch_size=8),
                            projection_dim=32)
        image_processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
        return CLIPModel(config), CLIPProcessor(image_processor, MobileCLIPTokenizer.from_bpe_file())

    def tokenize(self, processor, model_config, texts: list[str]) -> torch.Tensor:
        return processor(text=texts, return_tensors="pt", padding="max_length", truncation=True,
                         max_length=model_config.text_config.max_position_embeddings)["input_ids"]

    def features(self, model, pixel_values, input_ids):
        out = model(input_ids=input_ids, pixel_values=pixel_values)
        # CLIPModel's output has no scale; read the parameter (through DDP's `.module`), clamped as open_clip does.
        scale = getattr(model, "module", model).logit_scale.exp().clamp(max=100.0)
        return out.image_embeds, out.text_embeds, scale


ADAPTERS = {"mobileclip": MobileCLIPAdapter, "clip": CLIPAdapter}


# ---------------------------------------------------------------------------------------------------------------------
# Data


def resolve_data_files(args, accelerator) -> dict:
    """Shard lists for train / validation; without --train-data, the toy DataCompDR (built once, main process)."""
    if args.train_data is not None:
        if args.validation_data is None:
            raise ValueError("--train-data needs --validation-data (held-out shards for the periodic evaluation).")
        return {"train": args.train_data, "validation": args.validation_data,
                "image_dir": args.image_dir, "captions": args.captions}
    from dataset_scripts.toy_data import ToySpec, build_toy_datacompdr

    spec = ToySpec() if args.toy_size is None else ToySpec(num_train=args.toy_size[0], num_validation=args.toy_size[1],
                                                            teacher_steps=args.toy_size[2])
    with accelerator.main_process_first():
        root = build_toy_datacompdr(spec, args.cache_dir, log=accelerator.print)
    train, val = sorted(str(p) for p in (root / "train").glob("*.tar")), sorted(
        str(p) for p in (root / "validation").glob("*.tar"))
    return {"train": train, "validation": val, "image_dir": train + val, "captions": train + val}


def load_split(files: dict, split: str, args, accelerator):
    import datasets

    import dataset_scripts  # noqa: F401  (registers the "datacompdr" builder)

    image_dir = files["image_dir"] if files["image_dir"] is not None else files[split]
    captions = files["captions"] if files["captions"] is not None else files[split]
    cache_dir = str(Path(args.cache_dir) / "datasets") if args.cache_dir else None
    with accelerator.main_process_first():  # the main process prepares the Arrow cache, the others reuse it
        ds = datasets.load_dataset("datacompdr", data_files={split: files[split]}, split=split, image_dir=image_dir,
                                   captions=captions, cache_dir=cache_dir)
    check_columns(ds, split)
    return ds


def check_columns(ds, split: str) -> None:
    missing = [c for c in REQUIRED_COLUMNS if c not in ds.column_names]
    if missing:
        raise ValueError(f"The {split} split has no column(s) {missing} (it has {ds.column_names}); images need "
                         f"--image-dir, ground-truth captions need --captions, embeddings/augmentations/synthetic "
                         f"captions come from the DataCompDR shards themselves.")
    if len(ds) == 0:
        raise ValueError(f"The {split} split is empty: every sample was skipped (see the datacompdr log lines).")


def resolve_teachers(args, ds) -> tuple[list[int], list[float]]:
    """Per-teacher widths and distillation logit scales; their sum must be the stored embedding width."""
    from dataset_scripts import get_metadata

    meta = get_metadata(ds)
    width = ds.features["image_emb"].shape[1]
    dims = args.teacher_dims or meta.embedding_dims
    if not dims:
        raise ValueError(f"The dataset records no teacher widths; pass --teacher-dims (summing to {width}).")
    if sum(dims) != width:
        raise ValueError(f"--teacher-dims {dims} sum to {sum(dims)}, but the stored teacher embeddings are {width} "
                         f"wide (dataset metadata: teachers {[t.model for t in meta.teachers]} with widths "
                         f"{meta.embedding_dims}); pass widths that split {width}, e.g. "
                         f"{','.join(map(str, meta.embedding_dims or [width]))}.")
    scales = args.teacher_logit_scales or meta.logit_scales
    if len(scales) == 1 and len(dims) > 1:
        scales = scales * len(dims)
    if len(scales) != len(dims) or any(s is None for s in scales):
        raise ValueError(f"--teacher-logit-scales needs one value per teacher ({len(dims)}: widths {dims}), got "
                         f"{scales}; e.g. --teacher-logit-scales {','.join(['100'] * len(dims))}.")
    return list(dims), [float(s) for s in scales]


class StepBatches(torch.utils.data.Dataset):
    """Item m = this rank's slice of the global batch of micro-step m (a pure function of seed and m)."""

    def __init__(self, ds, transform, tokenize, *, seed: int, batch_size: int, rank: int, world_size: int):
        self.ds, self.transform, self.tokenize = ds, transform, tokenize
        self.seed, self.batch_size, self.rank, self.world_size = seed, batch_size, rank, world_size

    def __len__(self) -> int:
        return 2**62

    @lru_cache(maxsize=4)
    def _permutation(self, epoch: int) -> np.ndarray:
        return np.random.default_rng([self.seed, epoch]).permutation(len(self.ds))

    def global_indices(self, micro_step: int) -> list[int]:
        size, n = self.batch_size * self.world_size, len(self.ds)
        return [int(self._permutation(p // n)[p % n]) for p in range(micro_step * size, (micro_step + 1) * size)]

    def __getitem__(self, micro_step: int) -> dict:
        ids = self.global_indices(micro_step)[self.rank * self.batch_size:(self.rank + 1) * self.batch_size]
        views = [self._view(i, random.Random(f"{self.seed}:{micro_step}:{i}")) for i in ids]
        return {"pixel_values": torch.stack([v["pixel_values"] for v in views]),
                "input_ids": self.tokenize([v["gt"] for v in views] + [v["syn"] for v in views]),
                "teacher_image_emb": torch.stack([v["t_img"] for v in views]),
                "teacher_text_emb": torch.stack([v["t_gt"] for v in views]),
                "teacher_syn_text_emb": torch.stack([v["t_syn"] for v in views]),
                "sample_ids": torch.tensor(ids)}

    def _view(self, index: int, rng: random.Random) -> dict:
        ex = self.ds[index]
        aug = rng.randrange(len(ex["param_aug"]))
        syn = rng.randrange(len(ex["syn_text"]))
        text_emb = np.asarray(ex["text_emb"], dtype=np.float32)
        return {"pixel_values": self.transform(ex["image"], ex["param_aug"][aug]), "gt": ex["text"],
                "syn": ex["syn_text"][syn], "t_img": torch.from_numpy(np.asarray(ex["image_emb"][aug], np.float32)),
                "t_gt": torch.from_numpy(text_emb[0]), "t_syn": torch.from_numpy(text_emb[ex["num_gt_emb"] + syn])}


class HeldOutViews(torch.utils.data.Dataset):
    """Validation items: the full image resized to the student's size, and its first synthetic caption."""

    def __init__(self, ds, transform, tokenize):
        self.ds, self.transform, self.tokenize = ds, transform, tokenize

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, index: int) -> dict:
        ex = self.ds[index]
        full = [[0, 0, ex["image_height"], ex["image_width"]], []]
        return {"pixel_values": self.transform(ex["image"], full),
                "input_ids": self.tokenize([ex["syn_text"][0]])[0], "index": torch.tensor(index)}


def build_dataloaders(args, accelerator, adapter, processor, model_config):
    """(train loader over micro-steps from `start`, held-out loader, (teacher_dims, teacher_logit_scales))."""
    files = resolve_data_files(args, accelerator)
    train_ds, val_ds = load_split(files, "train", args, accelerator), load_split(files, "validation", args,
                                                                                 accelerator)
    teachers = resolve_teachers(args, train_ds)
    transform = adapter.image_transform(processor)
    tokenize = lambda texts: adapter.tokenize(processor, model_config, texts)  # noqa: E731
    steps = StepBatches(train_ds, transform, tokenize, seed=args.seed, batch_size=args.batch_size,
                        rank=accelerator.process_index, world_size=accelerator.num_processes)
    val_loader = torch.utils.data.DataLoader(HeldOutViews(val_ds, transform, tokenize), batch_size=args.batch_size,
                                             num_workers=args.num_workers)
    return steps, val_loader, teachers


def train_loader(steps: StepBatches, start: int, stop: int, num_workers: int):
    # Not passed to `prepare`: StepBatches already splits each global batch across ranks, deterministically.
    return torch.utils.data.DataLoader(steps, batch_size=None, sampler=range(start, stop), num_workers=num_workers)


# ---------------------------------------------------------------------------------------------------------------------
# Trackers, state, evaluation, checkpoints


class JSONLTracker(GeneralTracker):
    """Appends one JSON object per `log` call to `<logging_dir>/metrics.jsonl` (offline, dependency-free)."""

    name = "jsonl"
    requires_logging_directory = True

    @on_main_process
    def __init__(self, run_name: str, logging_dir: str):
        super().__init__()
        self.path = Path(logging_dir) / run_name / "metrics.jsonl"
        self.path.parent.mkdir(parents=True, exist_ok=True)

    @property
    def tracker(self):
        return self.path

    @on_main_process
    def store_init_configuration(self, values: dict):
        (self.path.parent / "config.json").write_text(json.dumps(values, indent=1, default=str))

    @on_main_process
    def log(self, values: dict, step: int | None = None, **kwargs):
        with self.path.open("a") as f:
            f.write(json.dumps({"step": step, **{k: float(v) for k, v in values.items()}}) + "\n")


class TrainState:
    """Optimizer steps done; registered for checkpointing, so a resume knows where the data order continues."""

    def __init__(self):
        self.step = 0

    def state_dict(self) -> dict:
        return {"step": self.step}

    def load_state_dict(self, state: dict) -> None:
        self.step = int(state["step"])


@torch.no_grad()
def evaluate(accelerator, adapter, model, val_loader) -> dict:
    """Held-out image<->text recall@1 (first synthetic caption), features gathered with `gather_for_metrics`."""
    model.eval()
    images, texts = [], []
    for batch in val_loader:
        img, txt, _ = adapter.features(model, batch["pixel_values"], batch["input_ids"])
        img, txt = accelerator.gather_for_metrics((img.float(), txt.float()))
        images.append(img)
        texts.append(txt)
    model.train()
    images, texts = torch.cat(images), torch.cat(texts)
    sims = images @ texts.T  # [n_images, n_texts]; caption i belongs to image i
    target = torch.arange(len(images), device=sims.device)
    # A caption shared by several images (toy data) counts as a hit for each of them.
    same_text = (texts @ texts.T) > 1 - 1e-6
    i2t = same_text[target, sims.argmax(dim=1)].float().mean()
    t2i = same_text[target, sims.argmax(dim=0)].float().mean()
    return {"eval/image_to_text_r1": i2t.item(), "eval/text_to_image_r1": t2i.item()}


def latest_checkpoint(output_dir: Path) -> tuple[Path, int] | None:
    """The newest *complete* `checkpoints/checkpoint_<i>` (incomplete ones, e.g. from a killed run, are ignored)."""
    found = []
    for folder in (output_dir / "checkpoints").glob("checkpoint_*"):
        match = re.fullmatch(r"checkpoint_(\d+)", folder.name)
        if match and (folder / COMPLETE_MARKER).is_file():
            found.append((int(match.group(1)), folder))
    return (max(found)[1], max(found)[0]) if found else None


def save_checkpoint(accelerator, state: TrainState) -> Path:
    path = Path(accelerator.save_state())
    if accelerator.is_main_process:
        (path / COMPLETE_MARKER).write_text(json.dumps({"step": state.step}))
    accelerator.wait_for_everyone()
    return path


def resume(accelerator, args, state: TrainState) -> Path | None:
    found = latest_checkpoint(Path(args.resume))
    if found is None:
        raise ValueError(f"--resume {args.resume}: no complete checkpoint under {args.resume}/checkpoints.")
    path, iteration = found
    if accelerator.is_main_process:  # drop newer, incomplete folders so automatic naming can reuse their numbers
        for folder in (Path(args.resume) / "checkpoints").glob("checkpoint_*"):
            if folder.name != path.name and int(folder.name.split("_")[1]) > iteration:
                shutil.rmtree(folder)
    accelerator.wait_for_everyone()
    accelerator.load_state(str(path))
    accelerator.project_configuration.iteration = iteration + 1  # load_state does not restore it
    accelerator.print(f"Resumed from {path} at optimizer step {state.step}")
    return path


def check_output_dir(args) -> None:
    out = Path(args.output_dir)
    if args.resume is None and (out / "checkpoints").exists() and not args.overwrite_output_dir:
        raise ValueError(f"{out} already holds checkpoints; continue with --resume {out}, choose another "
                         f"--output-dir, or pass --overwrite-output-dir.")


def setup(args):
    """Accelerator, then seed, then model/optimizer/scheduler, data, a single `prepare`, and the resume."""
    accelerator = Accelerator(
        gradient_accumulation_steps=args.gradient_accumulation_steps, mixed_precision=args.mixed_precision,
        log_with=["tensorboard", JSONLTracker("mobileclip", str(Path(args.output_dir) / "logs"))],
        project_config=ProjectConfiguration(project_dir=args.output_dir, logging_dir=str(Path(args.output_dir) / "logs"),
                                            automatic_checkpoint_naming=True, total_limit=3))
    set_seed(args.seed)  # also fixes the weight initialisation
    adapter = ADAPTERS[args.family](args.model)
    model, processor = adapter.build()
    optimizer = build_optimizer(model, args.model, lr=args.lr, weight_decay=args.weight_decay)
    # Kept out of `prepare` (which would step it num_processes times per call); checkpointed via registration.
    scheduler = warmup_cosine_schedule(optimizer, warmup_steps=args.warmup_steps, total_steps=args.max_steps)
    steps, val_loader, teachers = build_dataloaders(args, accelerator, adapter, processor, model.config)
    model, optimizer, val_loader = accelerator.prepare(model, optimizer, val_loader)
    state = TrainState()
    accelerator.register_for_checkpointing(scheduler, state)
    if args.resume is not None:
        resume(accelerator, args, state)
    config = {k: (v if isinstance(v, (int, float, str, bool)) else str(v)) for k, v in vars(args).items()}
    accelerator.init_trackers("mobileclip", config=config)
    return dict(accelerator=accelerator, adapter=adapter, model=model, processor=processor, optimizer=optimizer,
                scheduler=scheduler, steps=steps, val_loader=val_loader, teachers=teachers, state=state)


def compute_loss(run: dict, args, batch: dict) -> tuple[torch.Tensor, dict]:
    accelerator, (dims, scales) = run["accelerator"], run["teachers"]
    image, text, scale = run["adapter"].features(run["model"], batch["pixel_values"], batch["input_ids"])
    gt, syn = text.split(image.shape[0])
    parts = mobileclip_loss(image, gt, scale, loss_weights=args.loss_weights, syn_text_features=syn,
                            teacher_image_emb=batch["teacher_image_emb"], teacher_text_emb=batch["teacher_text_emb"],
                            teacher_syn_text_emb=batch["teacher_syn_text_emb"], teacher_dims=dims,
                            teacher_logit_scales=scales, rank=accelerator.process_index,
                            world_size=accelerator.num_processes)
    return total_loss(parts), parts


def train_step(run: dict, args, batch: dict) -> dict:
    """One micro-step; returns the process-averaged loss parts (for logging). Raises on a non-finite loss."""
    accelerator, model, state = run["accelerator"], run["model"], run["state"]
    with accelerator.accumulate(model):
        loss, parts = compute_loss(run, args, batch)
        if args.debug_nan_at_step is not None and state.step + 1 == args.debug_nan_at_step:
            loss = loss * float("nan")
        names = sorted(parts)
        logged = accelerator.reduce(torch.stack([loss.detach()] + [parts[k].detach() for k in names]), "mean")
        if not torch.isfinite(logged[0]):
            ids = accelerator.gather(batch["sample_ids"]).tolist()
            raise FloatingPointError(
                f"Non-finite loss {logged[0].item()} at optimizer step {state.step + 1} (micro-step "
                f"{accelerator.step}); sample ids of the global batch: {ids}. No checkpoint was written for this "
                f"step; the last good one is {latest_checkpoint(Path(args.output_dir))}. Try a lower --lr or "
                f"--mixed-precision no, then --resume {args.output_dir}.")
        accelerator.backward(loss)
        if accelerator.sync_gradients:
            accelerator.clip_grad_norm_(model.parameters(), args.max_grad_norm)
        run["optimizer"].step()
        if accelerator.sync_gradients:
            run["scheduler"].step()
        run["optimizer"].zero_grad()
    return {"train/loss": logged[0].item(), **{f"train/{k}": v.item() for k, v in zip(names, logged[1:])}}


def guarded_step(run: dict, args, batch: dict) -> dict:
    try:
        return train_step(run, args, batch)
    except (torch.OutOfMemoryError, RuntimeError) as err:
        if not isinstance(err, torch.OutOfMemoryError) and "can't allocate memory" not in str(err) \
                and "out of memory" not in str(err):
            raise
        raise RuntimeError(f"Out of memory at --batch-size {args.batch_size} per device. Use a smaller --batch-size "
                           f"with --gradient-accumulation-steps to keep the optimizer batch, or --mixed-precision "
                           f"bf16. Note: accumulation does not add contrastive negatives.") from err


def train(args) -> Path:
    """The loop: micro-steps from the resumed position to --max-steps optimizer steps, checkpoints, eval, logging."""
    check_output_dir(args)
    run = setup(args)
    accelerator, state, gas = run["accelerator"], run["state"], args.gradient_accumulation_steps
    loader = train_loader(run["steps"], state.step * gas, args.max_steps * gas, args.num_workers)
    bar = tqdm(total=args.max_steps, initial=state.step, disable=not accelerator.is_local_main_process, desc="train")
    global_batch = args.batch_size * accelerator.num_processes
    tic = time.perf_counter()
    for batch in loader:
        batch = {k: v.to(accelerator.device) for k, v in batch.items()}
        metrics = guarded_step(run, args, batch)
        if not accelerator.sync_gradients:
            continue
        state.step += 1
        samples_per_s = global_batch * gas / (time.perf_counter() - tic)
        tic = time.perf_counter()
        bar.update(1)
        bar.set_postfix(loss=f"{metrics['train/loss']:.4f}", samples_s=f"{samples_per_s:.1f}")
        if state.step % args.log_every == 0:
            accelerator.log({**metrics, "train/lr": run["scheduler"].get_last_lr()[0],
                             "train/samples_per_s": samples_per_s}, step=state.step)
        if state.step % args.eval_every == 0 or state.step == args.max_steps:
            accelerator.log(evaluate(accelerator, run["adapter"], run["model"], run["val_loader"]), step=state.step)
        if state.step % args.checkpoint_every == 0:
            save_checkpoint(accelerator, state)
    bar.close()
    return finish(run, args)


def finish(run: dict, args) -> Path:
    """`save_pretrained` (model + processor) on the main process, optional Hub push, trackers closed."""
    accelerator, out = run["accelerator"], Path(args.output_dir)
    accelerator.wait_for_everyone()
    model = accelerator.unwrap_model(run["model"])
    model.save_pretrained(out, is_main_process=accelerator.is_main_process,
                          state_dict=accelerator.get_state_dict(run["model"]))
    if accelerator.is_main_process:
        run["processor"].save_pretrained(out)
        push_to_hub(args, out, accelerator)
    accelerator.end_training()
    return out


def push_to_hub(args, out: Path, accelerator) -> None:
    if args.push_to_hub is None:
        return
    try:
        from modeling_mobileclip.hub import push_folder_to_hub
    except ImportError:
        accelerator.print(f"--push-to-hub {args.push_to_hub}: skipped, modeling_mobileclip/hub.py "
                          f"(push_folder_to_hub) is not available yet; the model is saved in {out}.")
        return
    push_folder_to_hub(out, args.push_to_hub)


def main(argv=None) -> None:
    args = parse_args(argv)
    out = train(args)
    print(f"Saved the trained model and processor to {out}")


if __name__ == "__main__":
    main()
