"""Map-style batches: micro-step m's global batch is a pure function of (seed, m), over a prepared (Arrow) split.

Micro-step m takes global positions [m * G, (m + 1) * G) of a per-epoch permutation (G = per-device batch x
processes) and rank r keeps its slice, so a resumed run, and a run on another number of processes with the same
global batch, sees exactly the same samples and augmentations. For small local sets (`--data-mode map`).
"""

from __future__ import annotations

import random
from functools import lru_cache

import numpy as np
import torch

from .views import collate_views, training_view


class StepBatches(torch.utils.data.Dataset):
    """Item m = this rank's slice of the global batch of micro-step m (a pure function of seed and m)."""

    def __init__(self, ds, transform, tokenize, *, caption_mode: str, mix_ratio: float, seed: int, batch_size: int,
                 rank: int, world_size: int):
        self.ds, self.transform, self.tokenize = ds, transform, tokenize
        self.caption_mode, self.mix_ratio = caption_mode, mix_ratio
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
        examples = [self.ds[i] for i in ids]
        views = [training_view(ex, self.transform, random.Random(f"{self.seed}:{micro_step}:{i}"))
                 for i, ex in zip(ids, examples)]
        return {**collate_views(views, self.tokenize, self.caption_mode, self.mix_ratio),
                "uids": [ex["uid"] for ex in examples]}


def map_loader(steps: StepBatches, start: int, stop: int, num_workers: int):
    """Micro-steps [start, stop); not passed to `prepare`: StepBatches already splits each global batch by rank."""
    return torch.utils.data.DataLoader(steps, batch_size=None, sampler=range(start, stop), num_workers=num_workers)
