"""One training view of a DataCompDR sample, and a batch of them, shared by the map-style and streaming loaders.

A view is one stored augmentation replayed at the student's resolution with that augmentation's teacher image
embedding, the ground-truth caption and one synthetic caption with their teacher text embeddings. Which
augmentation and caption is drawn from the `rng` the caller seeds (map-style: seed + micro-step + index; streaming:
seed + epoch + uid), so a view never depends on which process or worker made it.

Pixels travel as uint8 (a quarter of float32's bytes between DataLoader workers and the training process) and are
normalised on the training device by `PixelNormalizer`, with the same float32 operations in the same order as
`augment_replay.to_normalized_tensor` (/255, -mean, /std): the result is bit-identical to `ReplayTransform`'s.
"""

from __future__ import annotations

import random

import numpy as np
import torch


def training_view(example: dict, transform, rng: random.Random) -> dict:
    """`transform`: the student's `augment_replay.ReplayTransform` (its size and interpolation are replayed here)."""
    from dataset_scripts.augment_replay import replay_pil

    # No synthetic caption (shards reinforced with --captioner none): only --caption-mode gt reads none.
    num_syn = len(example["syn_text"])
    aug, syn, mix = rng.randrange(len(example["param_aug"])), rng.randrange(num_syn) if num_syn else None, rng.random()
    image_emb = example["image_emb"]
    text_emb = np.asarray(example["text_emb"], dtype=np.float32)
    view = replay_pil(example["image"], example["param_aug"][aug], transform.size, transform.interpolation)
    pixels = torch.from_numpy(np.asarray(view, dtype=np.uint8).transpose(2, 0, 1).copy())
    return {"pixel_values": pixels, "gt": example["text"],
            "syn": None if syn is None else example["syn_text"][syn], "mix": mix,
            "t_img": torch.from_numpy(np.asarray(image_emb[aug], np.float32)), "t_gt": torch.from_numpy(text_emb[0]),
            "t_syn": None if syn is None else torch.from_numpy(text_emb[example["num_gt_emb"] + syn])}


def collate_views(views: list[dict], tokenize, caption_mode: str, mix_ratio: float) -> dict:
    """The batch the loss reads. `gt+syn`: one text forward of the ground-truth captions, then the synthetic ones."""
    batch = {"pixel_values": torch.stack([v["pixel_values"] for v in views]),
             "teacher_image_emb": torch.stack([v["t_img"] for v in views])}
    if caption_mode != "gt" and any(v["syn"] is None for v in views):
        raise ValueError(f"--caption-mode {caption_mode} needs a synthetic caption per sample, but a sample has an "
                         f"empty syn_text; pass --caption-mode gt to train on the ground-truth captions only.")
    if caption_mode == "gt+syn":
        batch["input_ids"] = tokenize([v["gt"] for v in views] + [v["syn"] for v in views])
        batch["teacher_text_emb"] = torch.stack([v["t_gt"] for v in views])
        batch["teacher_syn_text_emb"] = torch.stack([v["t_syn"] for v in views])
    else:
        use_syn = [caption_mode == "mix" and v["mix"] < mix_ratio for v in views]
        batch["input_ids"] = tokenize([v["syn"] if s else v["gt"] for v, s in zip(views, use_syn)])
        batch["teacher_text_emb"] = torch.stack([v["t_syn"] if s else v["t_gt"] for v, s in zip(views, use_syn)])
    return batch


class PixelNormalizer:
    """uint8 [B, 3, H, W] -> float32 normalised, on the tensor's device (the loop applies it after `.to(device)`)."""

    def __init__(self, transform):
        self.mean = torch.tensor(transform.mean, dtype=torch.float32).view(1, 3, 1, 1)
        self.std = torch.tensor(transform.std, dtype=torch.float32).view(1, 3, 1, 1)

    def __call__(self, pixels: torch.Tensor) -> torch.Tensor:
        out = pixels.to(torch.float32) / 255
        return (out - self.mean.to(out.device)) / self.std.to(out.device)
