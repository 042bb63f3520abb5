"""Which shards this process writes: it claims the next unfinished shard (``claims.py``), writes and publishes it,
and goes on until every shard is done, so processes started at different times, on different machines, with any
process count, share the work. When every unfinished shard is held by another live worker it waits, polling, and
takes over any whose lease expires: the last process standing finishes the set."""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from .claims import Claim, Worker
from .inputs import InputShard
from .shards import clear_shard, partial_shard_path, shard_done

logger = logging.getLogger(__name__)


class ClaimLost(RuntimeError):
    """Raised inside a shard's work when another worker took its claim over (this one's lease had expired)."""


@dataclass
class Schedule:
    """What this process did: the records it published, the claims it took over and the claims it lost."""

    records: list = field(default_factory=list)
    taken_over: list = field(default_factory=list)  # {"shard", "why"}: re-claimed from a dead or expired worker
    lost: list = field(default_factory=list)  # shards whose claim this process lost, or that another published first


def work_through(output: str, shards: list[InputShard], worker: Worker,
                 write: Callable[[InputShard, Claim], dict | None], max_shards: int | None = None,
                 done_elsewhere: Callable[[InputShard], None] | None = None) -> Schedule:
    """Claim, write (``write(shard, claim)``: the record, or None if it was not published) and publish shards until
    all of ``shards`` are done, or ``max_shards`` were published by this process."""
    schedule = Schedule()
    poll = min(max(worker.lease_seconds / 10, 0.05), 10.0)
    remaining = list(shards)
    while remaining:
        waiting, claimed_any = [], False
        for shard in remaining:
            if max_shards is not None and len(schedule.records) >= max_shards:
                return schedule
            if shard_done(output, shard.name):
                if done_elsewhere is not None:
                    done_elsewhere(shard)
                continue
            claim = worker.try_claim(shard.name, lambda name=shard.name: shard_done(output, name))
            if claim is None:
                waiting.append(shard)  # another live worker holds it: look again next round
                continue
            claimed_any = True
            if shard_done(output, shard.name):  # published by its previous claimant after all
                claim.release("already done")
                if done_elsewhere is not None:
                    done_elsewhere(shard)
                continue
            _write_claimed(output, shard, claim, write, schedule)
        remaining = waiting
        if remaining and not claimed_any:
            time.sleep(poll)
    return schedule


def _write_claimed(output: str, shard: InputShard, claim: Claim, write, schedule: Schedule) -> None:
    if claim.taken_over:
        logger.info("reinforce: shard %s: taking it over (%s)", shard.name, claim.taken_over)
        schedule.taken_over.append({"shard": f"{shard.name}.tar", "why": claim.taken_over})
    claim.start_heartbeat()
    clear_shard(output, shard.name)
    try:
        record = write(shard, claim)
    except ClaimLost:
        record = None
    except BaseException as err:
        claim.release(f"{type(err).__name__}: {err}")
        raise
    finally:
        with contextlib.suppress(FileNotFoundError):  # published: already gone
            os.remove(partial_shard_path(output, shard.name, claim.tag))
    if record is None:
        logger.warning("reinforce: shard %s: another worker took it over or published it first; dropped this copy",
                       shard.name)
        schedule.lost.append(f"{shard.name}.tar")
        claim.release("lost")
        return
    claim.published(sha256=record["sha256"])
    schedule.records.append(record)
