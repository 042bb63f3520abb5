"""One embedding run: DataLoader workers decode and preprocess, the fused model embeds batches in inference mode, and
the embeddings go to shards (`shards.py`) as each range of the source is complete.

    from modeling_mobileclip.embedding import embed_images, embed_texts, load_embeddings
    summary = embed_images(model, processor, "photos/", "photos-emb/", batch_size=64, num_workers=2)
    ids, embeddings = load_embeddings("photos-emb/")    # L2-normalised, float32 [n, dim]
"""

import math
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .shards import INDEX, read_shard_metadata, shard_name, write_index, write_shard
from .sources import DatasetImages, FolderImages, image_source


class PixelCollator:
    """Decoded items -> `pixel_values` of the readable ones, their positions and ids, and the skips; picklable, so it
    runs in the DataLoader workers with the processor."""

    def __init__(self, image_processor):
        self.image_processor = image_processor

    def __call__(self, items: list[tuple[int, object]]) -> dict:
        good = [(position, item) for position, item in items if item.image is not None]
        pixels = (self.image_processor(images=[item.image for _, item in good], return_tensors="pt")["pixel_values"]
                  if good else None)
        return {"pixel_values": pixels, "positions": [p for p, _ in good], "ids": [item.id for _, item in good],
                "skipped": [(p, item.id, item.error) for p, item in items if item.image is None]}


class _Indexed(torch.utils.data.Dataset):
    def __init__(self, source, positions: list[int]):
        self.source, self.positions = source, positions

    def __len__(self) -> int:
        return len(self.positions)

    def __getitem__(self, index: int):
        position = self.positions[index]
        return position, self.source[position]


def _item_ids(source) -> list[str]:
    return list(source.paths) if hasattr(source, "paths") else list(source.ids)


def _prepare_folder(output: Path, shard_size: int, all_ids: list[str]) -> tuple[list[int], dict]:
    """The shards still to write, and the finished ones kept from an interrupted run (same items)."""
    output.mkdir(parents=True, exist_ok=True)
    (output / INDEX).unlink(missing_ok=True)  # the completeness mark goes first, comes back last
    todo, kept = [], {}
    for shard in range(math.ceil(len(all_ids) / shard_size)):
        items = all_ids[shard * shard_size : (shard + 1) * shard_size]
        metadata = read_shard_metadata(output / shard_name(shard))
        if metadata is not None and metadata["items"] == items:
            kept[shard] = metadata
        else:
            todo.append(shard)
    return todo, kept


def _device_of(model) -> torch.device:
    return next(model.parameters()).device


@torch.inference_mode()
def embed_images(model, processor, images, output, *, batch_size: int = 64, num_workers: int = 2,
                 shard_size: int = 10_000, image_column: str | None = None, id_column: str | None = None,
                 progress: bool = True, model_name: str | None = None, source_name: str | None = None) -> dict:
    """Embed every image of `images` (folder, dataset spec, `datasets.Dataset` or an `image_source(...)`, see
    `sources.py`) into `output`.

    `model` should be fused (`model.reparameterize()`) and in eval mode; unreadable images are skipped, counted and
    named in `index.json`. Returns the index record (count, dim, skipped, images_per_second, ...)."""
    if batch_size < 1 or shard_size < 1 or num_workers < 0:
        raise ValueError(f"batch_size {batch_size}, shard_size {shard_size} must be positive and num_workers "
                         f"{num_workers} non-negative.")
    built = isinstance(images, (FolderImages, DatasetImages))  # the command builds it before loading the model
    source = images if built else image_source(images, image_column, id_column)
    output = Path(output)
    all_ids = _item_ids(source)
    todo, kept = _prepare_folder(output, shard_size, all_ids)
    positions = [p for shard in todo for p in range(shard * shard_size, min((shard + 1) * shard_size, len(all_ids)))]
    loader = torch.utils.data.DataLoader(_Indexed(source, positions), batch_size=batch_size, num_workers=num_workers,
                                         collate_fn=PixelCollator(processor.image_processor),
                                         persistent_workers=False, prefetch_factor=4 if num_workers else None)
    model.eval()
    device, dtype = _device_of(model), next(model.parameters()).dtype
    pending = {shard: {"rows": {}, "skipped": {}} for shard in todo}
    start, done = time.perf_counter(), 0
    bar = tqdm(total=len(positions), unit="img", desc="embedding", disable=not progress, file=sys.stderr)
    for batch in loader:
        if batch["pixel_values"] is not None:
            features = model.get_image_features(pixel_values=batch["pixel_values"].to(device=device, dtype=dtype))
            embeds = F.normalize(features.pooler_output.float(), dim=-1).cpu()
            for row, (position, item_id) in enumerate(zip(batch["positions"], batch["ids"], strict=True)):
                pending[position // shard_size]["rows"][position] = (item_id, embeds[row])
        for position, item_id, error in batch["skipped"]:
            pending[position // shard_size]["skipped"][position] = [item_id, error]
        done += len(batch["positions"]) + len(batch["skipped"])
        bar.update(len(batch["positions"]) + len(batch["skipped"]))
        bar.set_postfix_str(f"{done / (time.perf_counter() - start):.1f} images/s", refresh=False)
        _flush(output, pending, shard_size, kept, all_ids, int(model.config.projection_dim))
    bar.close()
    seconds = time.perf_counter() - start
    where = source_name or (str(images) if isinstance(images, (str, Path)) else type(images).__name__)
    record = _index_record(kept, len(all_ids), shard_size, model, "image", where, model_name)
    record.update(embedded_now=done, seconds=round(seconds, 3),
                  images_per_second=round(done / seconds, 2) if done else None)
    write_index(output, record)
    return record


def _flush(output: Path, pending: dict, shard_size: int, kept: dict, all_ids: list[str], dim: int) -> None:
    """Write every shard whose range is complete."""
    total = len(all_ids)
    for shard in [s for s, p in pending.items()
                  if len(p["rows"]) + len(p["skipped"]) == min(shard_size, total - s * shard_size)]:
        part = pending.pop(shard)
        rows = [part["rows"][p] for p in sorted(part["rows"])]
        skipped = [part["skipped"][p] for p in sorted(part["skipped"])]
        embeds = torch.stack([e for _, e in rows]) if rows else torch.zeros(0, dim)
        items = all_ids[shard * shard_size : (shard + 1) * shard_size]
        write_shard(output, shard, embeds, [i for i, _ in rows], items, skipped)
        kept[shard] = {"ids": [i for i, _ in rows], "items": items, "skipped": skipped}


def _index_record(kept: dict, total: int, shard_size: int, model, kind: str, source: str,
                  model_name: str | None) -> dict:
    shards = sorted(kept)
    skipped = [s for shard in shards for s in kept[shard]["skipped"]]
    return {"kind": kind, "source": source, "model": model_name or getattr(model.config, "_name_or_path", None),
            "dim": int(model.config.projection_dim), "count": sum(len(kept[s]["ids"]) for s in shards),
            "items": total, "skipped_count": len(skipped), "skipped": skipped, "shard_size": shard_size,
            "shards": [shard_name(s) for s in shards],
            "normalised": True, "dtype": "float32"}


@torch.inference_mode()
def embed_texts(model, processor, texts: list[str], output, *, batch_size: int = 256, shard_size: int = 10_000,
                progress: bool = True, model_name: str | None = None, source: str = "texts") -> dict:
    """Embed a list of strings into `output` as `embed_images` does; ids are the line numbers ("0", "1", ...)."""
    if not texts:
        raise ValueError(f"{source} holds no text; pass a file with one text per line.")
    output, ids = Path(output), [str(i) for i in range(len(texts))]
    todo, kept = _prepare_folder(output, shard_size, ids)
    context = model.config.text_config.max_position_embeddings
    device, start, done = _device_of(model), time.perf_counter(), 0
    model.eval()
    for shard in tqdm(todo, desc="text shards", disable=not progress, file=sys.stderr):
        rows = range(shard * shard_size, min((shard + 1) * shard_size, len(texts)))
        chunks = []
        for first in range(rows.start, rows.stop, batch_size):
            batch = texts[first : min(first + batch_size, rows.stop)]
            input_ids = processor(text=batch, padding="max_length", truncation=True, max_length=context,
                                  return_tensors="pt")["input_ids"].to(device)
            chunks.append(F.normalize(model.get_text_features(input_ids=input_ids).pooler_output.float(), dim=-1))
        items = ids[rows.start : rows.stop]
        write_shard(output, shard, torch.cat(chunks).cpu(), items, items, [])
        kept[shard] = {"ids": items, "items": items, "skipped": []}
        done += len(rows)
    seconds = time.perf_counter() - start
    record = _index_record(kept, len(texts), shard_size, model, "text", source, model_name)
    record.update(embedded_now=done, seconds=round(seconds, 3))
    write_index(output, record)
    return record
