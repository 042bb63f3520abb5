"""Streaming batches: DataCompDR tar shards read as training goes, exactly resumable, any dataset size.

The order, as a function of (seed, epoch, number of processes, DataLoader workers):

1. epoch e permutes the shard list: datasets permutes a streaming split's shards by `np.random.default_rng(epoch)`
   of `set_epoch`, and we hand it `datasets_epoch(seed, e)`, so every rank draws the same permutation and every
   (seed, epoch) its own; `split_dataset_by_node(strategy="shards")` gives each rank its shards (one more for some
   ranks when the count does not divide), and datasets deals a rank's shards to its DataLoader workers;
2. each worker reads its shards in order and emits every block of `shuffle_buffer` consecutive samples in a random
   order drawn from (seed, epoch, rank, worker, block);
3. a worker's batches run on across epoch boundaries (its last samples of epoch e and its first of e + 1 share a
   batch), so no rank ever runs short or drops a partial batch while training continues; only `epochs=N` ends the
   stream, and then a worker's last partial batch is dropped (counted in `dropped`).

Every valid sample is emitted exactly once per epoch across ranks and workers; invalid ones are skipped and counted.

Why a block shuffle and not datasets' own `shuffle(buffer_size=...)`: datasets does not save its shuffle buffer in
`state_dict()` ("examples from shuffle buffers are lost when resuming"), so a resumed run would see other samples.
A block is reproducible: the state after each batch is (epoch, datasets' `state_dict()` at the start of the current
block, block number, samples of the block already emitted), and a resume re-reads that one block and skips what was
emitted. With torchdata's `StatefulDataLoader(snapshot_every_n_steps=1)`, which keeps each worker's state as of the
last batch the training loop consumed, a resume continues with exactly the batches an uninterrupted run would see
(same number of processes and workers).
"""

from __future__ import annotations

import copy
import gc
import itertools
import logging
import random
from collections import Counter

import numpy as np
import torch

from .views import collate_views, training_view

START = {"epoch": 0, "block": 0, "block_start": None, "emitted": 0}


def datasets_epoch(seed: int, epoch: int) -> int:
    """The epoch number datasets seeds its shard permutation with: one per (seed, epoch), never 0 (no permutation)."""
    return seed * 2**32 + epoch + 1


def shard_stream(ds, *, rank: int, world_size: int):
    """This rank's share of a streaming split, whole shards each (datasets' `split_dataset_by_node`)."""
    from datasets.distributed import split_dataset_by_node

    if ds.num_shards < world_size:
        raise ValueError(f"The training data has {ds.num_shards} shard(s) for {world_size} processes: every process "
                         f"needs at least one. Split the data into more tar files, use fewer processes, or "
                         f"--data-mode map for a small set.")
    return split_dataset_by_node(ds, rank=rank, world_size=world_size, strategy="shards")


class StreamBatches(torch.utils.data.IterableDataset):
    """Per-device batches of training views from a rank's `shard_stream`; `state_dict()` is the position after the
    last batch this worker produced (JSON-safe: ints, strings, lists, dicts)."""

    def __init__(self, ds, transform, tokenize, *, caption_mode: str, mix_ratio: float, seed: int, batch_size: int,
                 shuffle_buffer: int, rank: int, epochs: int | None = None):
        self.ds, self.transform, self.tokenize = ds, transform, tokenize
        self.caption_mode, self.mix_ratio = caption_mode, mix_ratio
        self.seed, self.batch_size, self.shuffle_buffer, self.rank, self.epochs = (seed, batch_size, shuffle_buffer,
                                                                                  rank, epochs)
        self.position, self._resume_from = dict(START), None

    def state_dict(self) -> dict:
        return copy.deepcopy(self.position)

    def load_state_dict(self, state: dict) -> None:
        self._resume_from = copy.deepcopy(state)

    def __iter__(self):
        from dataset_scripts import datacompdr_stats

        worker = torch.utils.data.get_worker_info()
        worker_id = worker.id if worker is not None else 0
        if worker is not None:
            # The stream allocates many small containers (30 parsed augmentations a sample), and each full collection
            # rescans every object the worker inherited (tokenizer vocabularies, the libraries' modules): a quarter of
            # the data path's CPU time under cProfile. Frozen objects are only exempt from scanning.
            gc.freeze()
        views, uids, epochs, skipped = [], [], [], Counter()
        before = Counter(datacompdr_stats()["skipped"])
        for position, example in self._examples(worker_id):
            rng = random.Random(f"{self.seed}:{position['epoch']}:{example['uid']}")
            try:
                views.append(training_view(example, self.transform, rng))
            except (OSError, ValueError) as err:  # a joined image that does not decode (verify_images is off)
                skipped["unreadable_image"] += 1
                logging.getLogger(__name__).debug("skipped %s: %s", example["uid"], err)
                continue
            uids.append(example["uid"])
            epochs.append(position["epoch"])
            if len(views) < self.batch_size:
                continue
            now = Counter(datacompdr_stats()["skipped"])
            skipped.update(now - before)
            before = now
            self.position = position
            yield {**collate_views(views, self.tokenize, self.caption_mode, self.mix_ratio), "uids": uids,
                   "epochs": torch.tensor(epochs), "skipped": dict(skipped), "dropped": 0}
            views, uids, epochs, skipped = [], [], [], Counter()
        if views:  # only when `epochs` ends the stream: a partial batch would break the all-gather of the loss
            yield {"uids": [], "epochs": torch.tensor([], dtype=torch.long), "skipped": dict(skipped),
                   "dropped": len(views)}

    def _examples(self, worker_id: int):
        """(position after the example, example) for this worker, epoch after epoch."""
        # Each worker moves to its next epoch on its own, but datasets keeps the epoch in one shared-memory tensor for
        # all workers (made for persistent workers that the main process steps): concurrent `set_epoch` calls race
        # (seen: two workers adding 1 each -> epoch 2, another shard order, duplicated shards). A private copy each.
        ds = copy.deepcopy(self.ds)
        position = self._resume_from or dict(START)
        self._resume_from = None
        epoch = position["epoch"]
        while self.epochs is None or epoch < self.epochs:
            ds.set_epoch(datasets_epoch(self.seed, epoch))
            if position["block_start"] is not None:
                ds.load_state_dict(position["block_start"])
            stream, block, skip, emitted_any = iter(ds), position["block"], position["emitted"], False
            block_start = position["block_start"]
            while True:
                samples = list(itertools.islice(stream, self.shuffle_buffer))
                if not samples:
                    break
                emitted_any = True
                order = np.random.default_rng([self.seed, epoch, self.rank, worker_id, block]).permutation(len(samples))
                for k in range(skip, len(samples)):
                    yield {"epoch": epoch, "block": block, "block_start": block_start, "emitted": k + 1}, \
                        samples[order[k]]
                block, skip, block_start = block + 1, 0, ds.state_dict()
            if not emitted_any and position["block_start"] is None:
                return  # this worker was dealt no shard (more workers than the rank's shards)
            epoch += 1
            position = {**START, "epoch": epoch}


def stream_loader(steps: StreamBatches, num_workers: int, state: dict | None = None):
    """A torchdata StatefulDataLoader that snapshots every batch, so its `state_dict()` is exact at any step."""
    from torchdata.stateful_dataloader import StatefulDataLoader

    loader = StatefulDataLoader(steps, batch_size=None, num_workers=num_workers, snapshot_every_n_steps=1,
                                persistent_workers=False, prefetch_factor=2 if num_workers else None)
    if state is not None:
        loader.load_state_dict(state)
    return loader
