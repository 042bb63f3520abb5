"""What a training step can touch (`Run`), and how the train data, its length and the held-out set are assembled."""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import torch

from .data_sources import (
    check_caption_mode,
    data_mode,
    dataset_size,
    load_train_split,
    resolve_data,
    resolve_teachers,
)
from .heldout import HeldOut, load_eval_split
from .map_batches import StepBatches, map_loader
from .stream_batches import StreamBatches, shard_stream, stream_loader
from .views import PixelNormalizer


@dataclass
class TrainData:
    """The train split and how it is batched; `loader(step, state)` starts it at an optimizer step."""

    mode: str  # "stream" | "map"
    batches: Any  # StreamBatches | StepBatches
    num_samples: int | None  # None: unknown until the stream has been read
    teachers: tuple[list[int], list[float]]
    teacher_rows: list[dict]
    sources: dict  # resolve_data's answer: shards, joins, eval spec, licence, dataset names
    skipped: dict  # samples skipped while preparing (map mode)
    num_workers: int
    gradient_accumulation_steps: int
    normalize: Any  # views.PixelNormalizer: the batches' uint8 pixels -> the student's normalised input

    def loader(self, step: int, total_steps: int, state: dict | None):
        if self.mode == "map":  # the position is a pure function of the step
            gas = self.gradient_accumulation_steps
            return map_loader(self.batches, step * gas, total_steps * gas, self.num_workers)
        return stream_loader(self.batches, self.num_workers, state)


@dataclass
class Run:
    """The state of one training run, as the loop and its helpers see it."""

    accelerator: Any
    student: Any  # a students.Student
    model: torch.nn.Module  # prepared (DDP-wrapped when distributed)
    optimizer: Any
    scheduler: Any
    data: TrainData
    total_steps: int
    eval_roles: dict
    eval_loader: Any
    hub: Any  # hub_upload.HubUploader
    step: int = 0  # optimizer steps done
    train_loader: Any = None
    last_eval: dict = field(default_factory=dict)
    trained_per_epoch: Counter = field(default_factory=Counter)  # this process's samples trained, by epoch
    skipped: Counter = field(default_factory=Counter)  # this process's samples skipped while streaming
    dropped: int = 0  # partial batches' samples at the end of --epochs

    def training_state(self) -> dict:
        """This process's resumable state, JSON-safe (checkpoints.save_checkpoint writes it)."""
        return {"step": self.step, "scheduler": _json_safe(self.scheduler.state_dict()),
                "data_mode": self.data.mode, "world_size": self.accelerator.num_processes,
                "num_workers": self.data.num_workers,
                "data": self.train_loader.state_dict() if self.data.mode == "stream" else None,
                "trained_per_epoch": dict(self.trained_per_epoch), "skipped": dict(self.skipped),
                "dropped": self.dropped}

    def restore(self, state: dict) -> None:
        if state["data_mode"] != self.data.mode:
            raise ValueError(f"--resume {state['path']}: the checkpoint was written with --data-mode "
                             f"{state['data_mode']}, this run uses {self.data.mode}; resume with the same mode.")
        if self.data.mode == "stream" and (state["world_size"], state["num_workers"]) != (
                self.accelerator.num_processes, self.data.num_workers):
            raise ValueError(
                f"--resume {state['path']}: the checkpoint's data position belongs to {state['world_size']} "
                f"process(es) x {state['num_workers']} DataLoader worker(s) (each worker's place in its own shards), "
                f"this run has {self.accelerator.num_processes} x {self.data.num_workers}. Resume with the same "
                f"numbers (--num-workers {state['num_workers']}, {state['world_size']} processes).")
        self.step = int(state["step"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.trained_per_epoch = Counter({int(k): v for k, v in state["trained_per_epoch"].items()})
        self.skipped, self.dropped = Counter(state["skipped"]), int(state["dropped"])


def _json_safe(state: dict) -> dict:
    return {k: v for k, v in state.items() if isinstance(v, (int, float, str, bool, list, type(None)))}


def build_train_data(args, accelerator, student) -> TrainData:
    sources = resolve_data(args, accelerator)
    mode = data_mode(args)
    ds, skipped = load_train_split(sources, args, accelerator, streaming=mode == "stream")
    check_caption_mode(args, ds)
    common = dict(caption_mode=args.caption_mode, mix_ratio=args.mix_ratio, seed=args.seed,
                  batch_size=args.batch_size)
    if mode == "stream":
        batches = StreamBatches(shard_stream(ds, rank=accelerator.process_index, world_size=accelerator.num_processes),
                                student.replay_transform(), student.tokenize, shuffle_buffer=args.shuffle_buffer,
                                rank=accelerator.process_index, epochs=args.epochs, **common)
    else:
        batches = StepBatches(ds, student.replay_transform(), student.tokenize, rank=accelerator.process_index,
                              world_size=accelerator.num_processes, **common)
    from dataset_scripts import get_metadata

    dims, scales = resolve_teachers(args, ds)
    names = [t.model for t in get_metadata(ds).teachers] or [f"teacher-{k}" for k in range(len(dims))]
    rows = [{"model": name, "embedding_dim": d, "logit_scale": s} for name, d, s in zip(names, dims, scales)]
    return TrainData(mode=mode, batches=batches, num_samples=dataset_size(args, ds), teachers=(dims, scales),
                     teacher_rows=rows, sources=sources, skipped=skipped, num_workers=args.num_workers,
                     gradient_accumulation_steps=args.gradient_accumulation_steps,
                     normalize=PixelNormalizer(batches.transform))


def total_steps(args, data: TrainData, num_processes: int) -> int:
    """Optimizer steps of the run: the smallest of --max-steps, --samples and --epochs (the last needs a known size)."""
    per_step = args.batch_size * num_processes * args.gradient_accumulation_steps
    limits = [args.max_steps] if args.max_steps else []
    if args.samples:
        limits.append(math.ceil(args.samples / per_step))
    if args.epochs and data.num_samples:
        limits.append(max(1, args.epochs * data.num_samples // per_step))
    if not limits:
        raise ValueError(f"--epochs {args.epochs} alone needs the training set's size for the learning-rate schedule, "
                         f"and {data.sources['train']!r} does not declare it; add --max-steps or --samples (the "
                         f"first limit reached ends training).")
    return min(limits)


def build_eval(args, data: TrainData, student):
    roles = load_eval_split(data.sources, args)
    loader = torch.utils.data.DataLoader(HeldOut(roles, student), batch_size=args.batch_size,
                                         num_workers=args.num_workers)
    return roles, loader
