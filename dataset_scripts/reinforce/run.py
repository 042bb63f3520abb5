"""One reinforcement run: load the models, write ``config.json``, deal the unfinished shards to the processes of
an ``accelerate launch`` (or this one), then the manifest, the dataset card and the optional Hub push.

``config.json`` is written first; a later run into the same folder with a different configuration (or into a folder
of shards without one) is refused. Samples with unreadable / empty images, no caption or damaged tar members are
skipped and counted (per reason, in the manifest). When every shard is done, ``manifest.jsonl`` and the dataset card
``README.md`` are written (and pushed with ``--push-to-hub``). The main process shows a progress bar (samples/s,
ETA) over its shards; shards are dealt round-robin, so its ETA is the run's.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections import Counter
from typing import Any, Optional, Sequence

import torch

from ..augment_replay import AugmentationSampler
from .config import DTYPES, ReinforceSettings, build_config, check_or_write_config, storage_message
from .inputs import discover_inputs, estimate_sizes, limit_samples
from .pipeline import Reinforcer
from .shards import (MANIFEST_DIR, PARTIAL_SUFFIX, atomic_write, remove_stale_partials, shard_done, unfinished_shards,
                     write_manifest)
from .uids import refuse_duplicate_uids

logger = logging.getLogger(__name__)


def distributed_state(device: Optional[str]):
    """accelerate's PartialState: rank, world size, device and barriers, under ``accelerate launch`` or alone."""
    from accelerate import PartialState

    kwargs = {"cpu": True} if device == "cpu" else {}
    return PartialState(**kwargs)


def _load_models(settings: ReinforceSettings, device: torch.device):
    from ..captioners import load_captioner
    from ..teachers import load_teacher

    dtype = DTYPES[settings.dtype]
    scales = settings.teacher_logit_scales or [None] * len(settings.teachers)
    teachers = [load_teacher(spec, device, scale, dtype, settings.trust_remote_code)
                for spec, scale in zip(settings.teachers, scales)]
    sampler = AugmentationSampler(size=settings.crop_size, interpolation=settings.interpolation)
    for teacher in teachers:
        teacher.check_crop_size(settings.crop_size)
    captioner = None
    if settings.captioner is not None:
        captioner = load_captioner(settings.captioner, device, settings.top_p, settings.max_caption_tokens, dtype,
                                   settings.trust_remote_code)
    return teachers, captioner, sampler


def _write_card(output: str, config: dict) -> Optional[str]:
    """The dataset card (``README.md``), or why none was written."""
    from hub_cards import generate_dataset_card

    if not config.get("license"):
        return ("no --license given: README.md (dataset card) not written; the card needs the licence of the "
                "inputs (images, captions, teachers, captioner) and has no default")
    card = generate_dataset_card(config, data_dir=output)  # columns (every image format, txt) from the shards
    card.save(os.path.join(output, "README.md"))
    return None


def reinforce(dataset: str, output: str, teachers: Sequence[Any], captioner: Any = None,
              **kwargs) -> dict:
    """Reinforce ``dataset`` into ``output`` (see ``dataset_scripts.reinforce``); returns a summary dict.

    Keywords are the fields of :class:`ReinforceSettings` (``num_augmentations``, ``num_captions``, ``seed``,
    ``teacher_logit_scales``, ``dtype``, ``embedding_format``, ``batch_size``...). Works inside an
    ``accelerate launch`` (each process takes its share of the shards) or as a plain call.
    """
    settings = ReinforceSettings(dataset=dataset, output=output, teachers=list(teachers), captioner=captioner,
                                 **kwargs)
    settings.validate()
    state = distributed_state(settings.device)
    device = torch.device(settings.device) if settings.device else state.device
    os.makedirs(output, exist_ok=True)
    with state.main_process_first():
        kind, shards = discover_inputs(settings.dataset, settings.split, settings.samples_per_shard,
                                       settings.image_column, settings.text_column, settings.uid_column,
                                       settings.url_column, settings.cache_dir)
    shards = limit_samples(shards, settings.max_samples)
    if not shards:
        raise ValueError(f"--dataset {dataset!r} holds no samples")
    refuse_duplicate_uids(dataset, shards)  # every process: all refuse alike, none is left waiting at a barrier
    teachers_, captioner_, sampler = _load_models(settings, device)
    config = build_config(settings, teachers_, captioner_, sampler, kind, len(shards))
    if state.is_main_process:
        check_or_write_config(output, config, is_main=True)
        stale = remove_stale_partials(output)
        if stale:
            logger.info("reinforce: removed %d half-written file(s) of an interrupted run", len(stale))
        sizes, exact = estimate_sizes(shards)
        print(storage_message(config, sum(n for n in sizes if n is not None), exact), flush=True)
    state.wait_for_everyone()
    check_or_write_config(output, config, is_main=False)

    # Every process sees the same finished set: it is read between two barriers, before anyone writes a shard; each
    # refuses the same changed inputs, so none waits at a barrier for a process that raised.
    pending = unfinished_shards(output, shards)
    state.wait_for_everyone()
    mine = pending[state.process_index::state.num_processes]
    if settings.max_shards is not None:
        mine = mine[:settings.max_shards]

    reinforcer = Reinforcer(settings, teachers_, captioner_, sampler)
    bar = None
    if settings.progress and state.is_main_process:
        from tqdm.auto import tqdm

        size_of = {shard.name: size for shard, size in zip(shards, sizes)}
        counts = [size_of[shard.name] for shard in mine]
        # Shards are dealt round-robin, so process 0's rate and ETA stand for the whole run.
        bar = tqdm(total=sum(counts) if None not in counts else None, unit="sample",
                   desc=f"reinforce (process 0 of {state.num_processes}: {len(mine)} of {len(pending)} shards)",
                   dynamic_ncols=True)
    written_by = {"process_index": state.process_index, "num_processes": state.num_processes}
    start = time.perf_counter()
    records = []
    for shard in mine:
        records.append(reinforcer.process_shard(shard, bar.update if bar is not None else None, written_by))
    elapsed = time.perf_counter() - start
    if bar is not None:
        bar.close()
    state.wait_for_everyone()

    summary = {"output": output, **written_by, "num_shards": len(shards), "done_before": len(shards) - len(pending),
               "processed_shards": [r["shard"] for r in records], "num_uids": sum(r["num_uids"] for r in records),
               "skipped": dict(sum((Counter(r["skipped"]) for r in records), Counter())), "seconds": elapsed,
               "timings": dict(reinforcer.timings.seconds), "config": config}
    if state.is_main_process and all(shard_done(output, s.name) for s in shards):
        all_records = write_manifest(output)
        config["num_samples"] = summary["total_uids"] = sum(r["num_uids"] for r in all_records)
        atomic_write(os.path.join(output, "config.json"), json.dumps(config, indent=2, sort_keys=True).encode())
        note = _write_card(output, config)
        if note:
            logger.warning("reinforce: %s", note)
            summary["card_note"] = note
        summary["complete"] = True
        if settings.push_to_hub:
            _push(output, settings.push_to_hub)
    return summary


def _push(output: str, repo_id: str) -> None:
    """One commit of the finished dataset (shards, config.json, manifest.jsonl, card) to a Hub dataset repo."""
    from hub_cards.push import push_folder_to_hub

    push_folder_to_hub(output, repo_id, repo_type="dataset", commit_message="Add reinforced shards",
                       ignore_patterns=[f"{MANIFEST_DIR}/*", f"*{PARTIAL_SUFFIX}"])
