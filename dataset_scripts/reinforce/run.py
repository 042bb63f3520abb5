"""One reinforcement run: load the models, write ``config.json``, claim and write unfinished shards until all are
done (with the other processes of an ``accelerate launch``, or any other runs into the same folder: ``schedule.py``),
then the manifest, the dataset card and the optional Hub push.

``config.json`` is written first; a later run into the same folder with a different configuration (or into a folder
of shards without one) is refused. Samples with unreadable / empty images, no caption or damaged tar members are
skipped and counted (per reason, in the manifest). When every shard is done, ``manifest.jsonl`` and the dataset card
``README.md`` are written by one process (and pushed with ``--push-to-hub``). The main process shows a progress bar
(samples/s, ETA) over the whole run: its own samples, and the shards other workers finish as it finds them.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from collections import Counter
from typing import Any, Optional, Sequence

import torch

from ..augment_replay import AugmentationSampler
from .config import DTYPES, ReinforceSettings, build_config, check_or_write_config, storage_message
from .inputs import discover_inputs, estimate_sizes, limit_samples
from .pipeline import Reinforcer
from .claims import CLAIMS_DIR, FINAL_TASK, Worker, current_claim, refuse_object_storage
from .schedule import ClaimLost, work_through
from .shards import (MANIFEST_DIR, PARTIAL_SUFFIX, atomic_write, commit_shard, manifest_lines, partial_shard_path,
                     remove_stale_partials, shard_done, unfinished_shards)
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
    refuse_object_storage(output)
    with state.main_process_first():
        kind, shards = discover_inputs(settings.dataset, settings.split, settings.samples_per_shard,
                                       settings.image_column, settings.text_column, settings.uid_column,
                                       settings.url_column, settings.cache_dir)
    shards = limit_samples(shards, settings.max_samples)
    if not shards:
        raise ValueError(f"--dataset {dataset!r} holds no samples")
    refuse_duplicate_uids(dataset, shards)  # every process: all refuse alike, none is left waiting at a barrier
    os.makedirs(output, exist_ok=True)  # only once the inputs are known good: bad input leaves nothing behind
    teachers_, captioner_, sampler = _load_models(settings, device)
    config = build_config(settings, teachers_, captioner_, sampler, kind, len(shards))
    if state.is_main_process:
        check_or_write_config(output, config, is_main=True)
        sizes, exact = estimate_sizes(shards)
        print(storage_message(config, sum(n for n in sizes if n is not None), exact), flush=True)
    state.wait_for_everyone()
    check_or_write_config(output, config, is_main=False)

    # Every process sees the same finished set: it is read between two barriers, before anyone writes a shard; each
    # refuses the same changed inputs, so none waits at a barrier for a process that raised.
    pending = unfinished_shards(output, shards)
    state.wait_for_everyone()

    reinforcer = Reinforcer(settings, teachers_, captioner_, sampler)
    worker = Worker(output, settings.lease_seconds)
    bar, done_elsewhere = None, None
    if settings.progress and state.is_main_process:
        from tqdm.auto import tqdm

        size_of = {shard.name: size for shard, size in zip(shards, sizes)}
        counts = [size_of[shard.name] for shard in pending]
        # Over the whole run: this process's samples as it writes them, other workers' shards as it finds them done.
        bar = tqdm(total=sum(counts) if None not in counts else None, unit="sample",
                   desc=f"reinforce (process 0 of {state.num_processes}: {len(pending)} shards to do)",
                   dynamic_ncols=True)

        def done_elsewhere(shard):
            bar.update(size_of[shard.name] or 0)

    written_by = {"process_index": state.process_index, "num_processes": state.num_processes,
                  "worker": worker.token, "host": socket.gethostname()}

    def write(shard, claim):
        def progress(n: int) -> None:
            if bar is not None:
                bar.update(n)
            if claim.lost:
                raise ClaimLost(f"shard {shard.name}: another worker took the claim over")

        def publish(*args):
            return commit_shard(*args) if claim.still_mine() else None  # link(2) in commit_shard: one publisher

        return reinforcer.process_shard(shard, progress, dict(written_by, claim=claim.generation),
                                        partial_shard_path(output, shard.name, claim.tag), publish)

    start = time.perf_counter()
    done = work_through(output, pending, worker, write, settings.max_shards, done_elsewhere)
    elapsed = time.perf_counter() - start
    if bar is not None:
        bar.close()
    state.wait_for_everyone()

    records = done.records
    summary = {"output": output, **written_by, "num_shards": len(shards), "done_before": len(shards) - len(pending),
               "processed_shards": [r["shard"] for r in records], "num_uids": sum(r["num_uids"] for r in records),
               "skipped": dict(sum((Counter(r["skipped"]) for r in records), Counter())), "seconds": elapsed,
               "taken_over": done.taken_over, "lost_shards": done.lost,
               "timings": dict(reinforcer.timings.seconds), "config": config}
    if state.is_main_process and all(shard_done(output, s.name) for s in shards):
        summary.update(_finalize(output, worker, config, settings.push_to_hub))
    return summary


def _finalize(output: str, worker: Worker, config: dict, push_to_hub: str | None) -> dict:
    """Once every shard is done: ``manifest.jsonl``, ``config.json`` with the sample count, the card, the push.

    Done by one process (the claim ``_final``), and again only when the records changed since (a shard redone).
    """
    lines, records = manifest_lines(output)
    manifest = os.path.join(output, "manifest.jsonl")

    def finalized() -> bool:
        return os.path.exists(manifest) and open(manifest, encoding="utf-8").read() == lines

    total = {"total_uids": sum(r["num_uids"] for r in records)}
    claim = worker.try_claim(FINAL_TASK, finalized)
    if claim is None:
        _, content = current_claim(output, FINAL_TASK)
        if content is not None and content.get("state") == "published" and finalized():
            return dict(total, complete=True)
        return {"finalizing": f"by worker {content and content.get('worker')} (another process)"}
    claim.start_heartbeat()
    try:
        atomic_write(manifest, lines.encode("utf-8"))
        config["num_samples"] = total["total_uids"]
        atomic_write(os.path.join(output, "config.json"), json.dumps(config, indent=2, sort_keys=True).encode())
        summary = dict(total, complete=True)
        note = _write_card(output, config)
        if note:
            logger.warning("reinforce: %s", note)
            summary["card_note"] = note
        remove_stale_partials(output)  # of killed workers; no shard is being written any more
        if push_to_hub:
            _push(output, push_to_hub)
    except BaseException as err:
        claim.release(f"{type(err).__name__}: {err}")
        raise
    claim.published()
    return summary


def _push(output: str, repo_id: str) -> None:
    """One commit of the finished dataset (shards, config.json, manifest.jsonl, card) to a Hub dataset repo."""
    from hub_cards.push import push_folder_to_hub

    push_folder_to_hub(output, repo_id, repo_type="dataset", commit_message="Add reinforced shards",
                       ignore_patterns=[f"{MANIFEST_DIR}/*", f"{CLAIMS_DIR}/*", f"*{PARTIAL_SUFFIX}"])
