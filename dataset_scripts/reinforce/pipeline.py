"""The per-shard work of the reinforcement: captions, stored augmentations, teacher embeddings, one sample's members.

How a row is made (Apple's generator, ``docs/datacompdr.md`` section 3):

* augmentation a of a sample: ``AugmentationSampler.sample`` (RandomResizedCrop + RandAugment, the reference config)
  with a ``random.Random`` seeded from (seed, uid); the entry is stored in ``paug.json`` and rendered with
  ``augment_replay.replay_pil`` at the crop size (224, bicubic);
* teacher k: the rendered view, resized bicubic to the teacher's resolution if smaller (a larger teacher is refused),
  normalised with the teacher's mean/std, embedded, L2-normalised;
* captions: the un-augmented image through the captioner's own preprocessing, nucleus sampling (top-p 0.9) seeded
  per (seed, uid, caption index), first sentence, stripped.

Per sample (webdataset members ``{uid}.*``): the image (original bytes as ``.jpg``/``.png``/...; a lossless ``.png``
when the original cannot be decoded faithfully by PIL's RGBA->RGB path, e.g. 16-bit), ``txt`` (GT caption),
``url.txt`` (if known), ``json`` ``{uid, sha256 of the stored image bytes}``, ``syn.json`` ``{"syn_text": [...]}``,
``paug.json`` ``{"param_aug": [[[i, j, h, w], [[op, mag], [op, mag]]], ...]}`` and ``npz`` (float32) or ``pth.gz``
(bfloat16) with ``image_emb`` [N_aug, D_total] and ``text_emb`` [1 + n_syn, D_total] (v1 layout: row 0 GT caption).
Each teacher's block of columns is L2-normalised; blocks are concatenated in the order of ``config.json``.

Every random draw is seeded per sample (:func:`derive_seed`) and batches never cross shards, so a resumed run and a
run with N processes write byte-identical shards.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np
import torch

from ..augment_replay import AugmentationSampler, replay_pil
from .config import ReinforceSettings
from .images import PreparedImage, prepare_image
from .inputs import BadSample, InputRecord, InputShard
from .shards import ShardWriter, commit_shard, encode_npz, encode_pth_gz, partial_shard_path
from .uids import output_uid

logger = logging.getLogger(__name__)

def derive_seed(seed: int, uid: str, purpose: str) -> int:
    """A 63-bit seed for one (run seed, sample uid, purpose): independent of batching, processes and resumes."""
    digest = hashlib.sha256(f"{seed}\x1f{uid}\x1f{purpose}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


@dataclass
class Timings:
    seconds: Counter = field(default_factory=Counter)

    @contextlib.contextmanager
    def __call__(self, name: str):
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] += time.perf_counter() - start


@dataclass
class _Sample:
    uid: str
    text: str
    url: Optional[str]
    image: PreparedImage
    entries: list = field(default_factory=list)
    views: list = field(default_factory=list)
    captions: list = field(default_factory=list)


class Reinforcer:
    """Loaded models + settings; :meth:`process_shard` turns one input shard into one output shard."""

    def __init__(self, settings: ReinforceSettings, teachers, captioner, sampler: AugmentationSampler):
        self.settings, self.teachers, self.captioner, self.sampler = settings, teachers, captioner, sampler
        self.timings = Timings()

    def _prepare(self, record: InputRecord) -> _Sample:
        if record.problem is not None:
            raise BadSample(*record.problem)
        uid = output_uid(record)  # unique: refuse_duplicate_uids checked the inputs before the run
        text = record.text.strip() if isinstance(record.text, str) else None
        if not text:
            raise BadSample("missing_caption", "no ground-truth caption")
        with self.timings("decode"):
            image = prepare_image(record.image, record.image_ext)
        return _Sample(uid=uid, text=text, url=record.url, image=image)

    def _augment(self, sample: _Sample) -> None:
        rng = random.Random(derive_seed(self.settings.seed, sample.uid, "augment"))
        size = sample.image.rgb.size
        sample.entries = [self.sampler.sample(rng, size) for _ in range(self.settings.num_augmentations)]
        sample.views = [replay_pil(sample.image.rgb, e, self.sampler.size, self.sampler.interpolation)
                        for e in sample.entries]

    def _embed_images(self, batch: list[_Sample]) -> list[np.ndarray]:
        blocks = []
        views = [v for s in batch for v in s.views]
        step = self.settings.teacher_batch_size
        for teacher in self.teachers:
            with self.timings("augment"):
                pixels = [teacher.pixel_values(v) for v in views]
            out = []
            with self.timings("teacher_image"):
                for start in range(0, len(pixels), step):
                    out.append(teacher.encode_image(torch.stack(pixels[start:start + step])))
            blocks.append(torch.cat(out).numpy())
        return np.split(np.concatenate(blocks, axis=1), len(batch))

    def _embed_texts(self, batch: list[_Sample]) -> list[np.ndarray]:
        texts = [t for s in batch for t in [s.text] + s.captions]
        step = self.settings.teacher_batch_size
        blocks = []
        with self.timings("teacher_text"):
            for teacher in self.teachers:
                blocks.append(torch.cat([teacher.encode_text(texts[a:a + step])
                                         for a in range(0, len(texts), step)]).numpy())
        return np.split(np.concatenate(blocks, axis=1), len(batch))

    def _caption(self, batch: list[_Sample]) -> None:
        if self.captioner is None:
            return
        seeds = [[derive_seed(self.settings.seed, s.uid, f"caption/{c}") for c in range(self.settings.num_captions)]
                 for s in batch]
        with self.timings("caption"):
            captions = self.captioner.caption([s.image.rgb for s in batch], seeds)
        for sample, caps in zip(batch, captions):
            sample.captions = caps

    def _write(self, writer: ShardWriter, sample: _Sample, image_emb: np.ndarray, text_emb: np.ndarray) -> None:
        uid = sample.uid
        writer.add(f"{uid}.{sample.image.ext}", sample.image.stored)
        writer.add(f"{uid}.txt", sample.text.encode("utf-8"))
        if sample.url:
            writer.add(f"{uid}.url.txt", str(sample.url).encode("utf-8"))
        meta = {"uid": uid, "sha256": hashlib.sha256(sample.image.stored).hexdigest()}
        writer.add(f"{uid}.json", json.dumps(meta).encode("utf-8"))
        writer.add(f"{uid}.syn.json", json.dumps({"syn_text": sample.captions}).encode("utf-8"))
        writer.add(f"{uid}.paug.json", json.dumps({"param_aug": sample.entries}).encode("utf-8"))
        arrays = {"image_emb": image_emb.astype(np.float32), "text_emb": text_emb.astype(np.float32)}
        if self.settings.embedding_format == "npz":
            writer.add(f"{uid}.npz", encode_npz(arrays))
        else:
            writer.add(f"{uid}.pth.gz", encode_pth_gz(arrays))

    def _flush(self, writer: ShardWriter, batch: list[_Sample]) -> None:
        self._caption(batch)
        with self.timings("augment"):
            for sample in batch:
                self._augment(sample)
        image_embs = self._embed_images(batch)
        text_embs = self._embed_texts(batch)
        with self.timings("write"):
            for sample, image_emb, text_emb in zip(batch, image_embs, text_embs):
                self._write(writer, sample, image_emb, text_emb)
                sample.views = []

    def process_shard(self, shard: InputShard, progress: Optional[Callable[[int], None]] = None,
                      written_by: Optional[dict] = None, partial: str | None = None,
                      publish: Callable[..., dict | None] = commit_shard) -> dict | None:
        """Write ``<output>/<name>.tar`` (via ``partial``, default ``<name>.tar.partial``) and its manifest record
        with ``publish`` (run.py passes its claim's); return the record, None if another worker published it."""
        output = self.settings.output
        input_identity = shard.input_identity()  # before reading: the record names what was read
        skipped: Counter = Counter()
        num_uids, batch = 0, []
        partial = partial or partial_shard_path(output, shard.name)
        writer = ShardWriter(partial)
        try:
            for record in shard.read():
                try:
                    batch.append(self._prepare(record))
                except BadSample as err:
                    skipped[err.reason] += 1
                    level = logging.WARNING if sum(skipped.values()) <= 20 else logging.DEBUG
                    logger.log(level, "reinforce: shard %s: skipped %s (%s): %s", shard.name, record.key,
                               err.reason, err)
                    if progress:
                        progress(1)
                    continue
                if len(batch) == self.settings.batch_size:
                    self._flush(writer, batch)
                    num_uids += len(batch)
                    if progress:
                        progress(len(batch))
                    batch = []
            if batch:
                self._flush(writer, batch)
                num_uids += len(batch)
                if progress:
                    progress(len(batch))
        finally:
            writer.close()
        return publish(output, shard.name, shard.source, input_identity, num_uids, skipped, written_by, partial)
