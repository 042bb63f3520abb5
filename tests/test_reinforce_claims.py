"""Claims on the reinforcement's output shards (dataset_scripts/reinforce/claims.py) and their exclusive publication
(shards.commit_shard): real files, real threads and a real exited process, no models. The multi-process runs (a
worker SIGKILLed mid-shard, separate launches sharing the folder) are in test_reinforce_cli.py."""

import json
import os
import threading
import time
from collections import Counter

import pytest

from dataset_scripts.reinforce import ReinforceSettings, reinforce
from dataset_scripts.reinforce.claims import Worker, claim_log
from dataset_scripts.reinforce.shards import commit_shard, partial_shard_path


def _never():
    return False


def test_a_claim_stands_while_renewed_and_is_taken_over_once_its_lease_expires(tmp_path):
    out = str(tmp_path)
    first, second, third = Worker(out, 0.4), Worker(out, 0.4), Worker(out, 0.4)
    held = first.try_claim("00000000", _never)
    assert held is not None and held.generation == 0 and held.taken_over is None
    assert second.try_claim("00000000", _never) is None  # its lease runs
    held.start_heartbeat()
    time.sleep(0.8)  # two leases: the heartbeat kept it
    assert second.try_claim("00000000", _never) is None
    held._stop.set()  # the heartbeat stops, as when the process hangs or dies
    time.sleep(0.6)
    taken = second.try_claim("00000000", _never)
    assert taken is not None and taken.generation == 1 and taken.taken_over.startswith("its lease expired")
    assert not held.still_mine() and not held.renew()  # the first worker learns it lost the shard
    assert third.try_claim("00000000", _never) is None
    taken.release("ValueError: bad input")  # a worker that fails hands its shard back at once
    again = third.try_claim("00000000", _never)
    assert again.generation == 2 and again.taken_over == "released by its worker"
    again.published()
    assert first.try_claim("00000000", lambda: True) is None  # published and its output there: final
    redo = first.try_claim("00000000", _never)  # published, but its output was removed since
    assert redo.generation == 3 and redo.taken_over.startswith("published, but")
    assert [e["state"] for e in claim_log(out, "00000000")] == ["claimed", "released", "published", "claimed"]


def test_a_claim_of_a_process_that_is_gone_is_taken_over_at_once(tmp_path):
    out = str(tmp_path)
    pid = os.fork()  # a real process claims with a 10-minute lease and exits without releasing
    if pid == 0:
        try:
            Worker(out, 600.0).try_claim("00000003", _never)
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
    (entry,) = claim_log(out, "00000003")
    assert entry["pid"] == pid and entry["state"] == "claimed"
    taken = Worker(out, 600.0).try_claim("00000003", _never)
    assert taken is not None and taken.taken_over == f"its process {pid} is gone"


def test_simultaneous_claims_have_one_winner(tmp_path):
    out = str(tmp_path)
    workers = [Worker(out, 60.0) for _ in range(8)]
    start, won = threading.Barrier(len(workers)), []

    def claim(worker):
        start.wait()
        won.append(worker.try_claim("00000001", _never))

    threads = [threading.Thread(target=claim, args=(w,)) for w in workers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(c is not None for c in won) == 1
    assert os.listdir(os.path.join(out, "_claims")) == ["00000001.0.json"]  # no temporary file left


def test_a_shard_is_published_once_whoever_finishes_it(tmp_path):
    """Two workers finished the same shard (one's lease had expired): the first link publishes, the second copy is
    dropped and the record stays the first's."""
    out = str(tmp_path)
    partials = [partial_shard_path(out, "00000002", tag) for tag in ("a-0", "b-1")]
    for path in partials:
        with open(path, "wb") as f:
            f.write(b"identical deterministic bytes")
    args = (out, "00000002", "in.tar", {"path": "in.tar"}, 1, Counter())
    record = commit_shard(*args, {"worker": "a"}, partials[0])
    assert record["written_by"] == {"worker": "a"} and record["bytes"] == 29
    assert commit_shard(*args, {"worker": "b"}, partials[1]) is None
    assert sorted(os.listdir(out)) == ["00000002.tar", "_manifest"]
    with open(os.path.join(out, "_manifest", "00000002.json"), encoding="utf-8") as f:
        assert json.load(f)["written_by"] == {"worker": "a"}


def test_object_storage_output_and_a_bad_lease_are_refused(tmp_path):
    with pytest.raises(ValueError, match=r"--output 's3://bucket/dr': object storage is not supported.*shared \(NFS\)"):
        reinforce(str(tmp_path), "s3://bucket/dr", teachers=["open_clip:ViT-B-32/openai"], progress=False)
    with pytest.raises(ValueError, match="--lease-seconds must be > 0, got 0"):
        ReinforceSettings(dataset="d", output="o", teachers=["t"], lease_seconds=0).validate()
