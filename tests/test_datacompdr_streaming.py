"""Streaming order and distribution of `datacompdr`: deterministic shuffles, whole shards per rank, and two real
`accelerate launch` ranks with DataLoader workers."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from datasets import load_dataset
from datasets.distributed import split_dataset_by_node

import dataset_scripts  # noqa: F401  (registers load_dataset("datacompdr"))
from datacompdr_shards import (
    TEACHERS,
    fresh_datacompdr_stats,  # noqa: F401  (autouse fixture: each test starts at zero counts)
    jpeg_bytes,
    keys_of,
    write_shards,
)
from dataset_scripts.datacompdr import get_metadata

REPO_ROOT = Path(__file__).resolve().parents[1]


def test_shuffle_is_deterministic_per_seed_and_epoch(tmp_path):
    expected = write_shards(tmp_path / "shards", n_shards=4, per_shard=3)
    ds = load_dataset("datacompdr", data_files=str(tmp_path / "shards" / "*.tar"), split="train", streaming=True,
                      teachers=TEACHERS)
    shuffled = ds.shuffle(seed=7, buffer_size=4)
    orders = {}
    for epoch in (0, 1):
        shuffled.set_epoch(epoch)
        orders[epoch] = keys_of(shuffled)
        assert keys_of(shuffled) == orders[epoch]  # same seed and epoch -> same order
        assert sorted(orders[epoch]) == sorted(expected)
    assert orders[0] != orders[1]
    again = ds.shuffle(seed=7, buffer_size=4)
    again.set_epoch(1)
    assert keys_of(again) == orders[1]


def test_split_dataset_by_node_splits_by_shard(tmp_path):
    expected = write_shards(tmp_path / "shards", n_shards=4, per_shard=2)
    ds = load_dataset("datacompdr", data_files=str(tmp_path / "shards" / "*.tar"), split="train", streaming=True,
                      teachers=TEACHERS)
    parts = [split_dataset_by_node(ds, rank=rank, world_size=2) for rank in range(2)]
    assert [p.num_shards for p in parts] == [2, 2]
    seen = [[(Path(e["__url__"]).name, e["__key__"]) for e in p] for p in parts]
    assert {name for name, _ in seen[0]}.isdisjoint({name for name, _ in seen[1]})  # whole shards per rank
    assert sorted(k for part in seen for _, k in part) == sorted(expected)
    assert get_metadata(parts[1]).embedding_dims == [6, 10]  # the metadata travels with the split


_TWO_PROCESS_SCRIPT = '''
import json, os, sys
import dataset_scripts
import torch
from accelerate import PartialState
from accelerate.utils import DistributedType
from datasets import load_dataset
from datasets.distributed import split_dataset_by_node

shards, images, out, teachers = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
state = PartialState(cpu=True)
if state.distributed_type != DistributedType.MULTI_CPU or state.num_processes != 2:
    raise SystemExit(f"expected 2 CPU ranks, got {state.distributed_type} x {state.num_processes}")
# both ranks build / open the image index at once (file lock), then stream their shards through 2 DataLoader workers
ds = load_dataset("datacompdr", data_files=shards, split="train", streaming=True, teachers=teachers,
                  image_dir=images, cache_dir=os.environ["HF_DATASETS_CACHE"])
ds = split_dataset_by_node(ds.shuffle(seed=0, buffer_size=2), rank=state.process_index,
                           world_size=state.num_processes)
ds.set_epoch(1)
loader = torch.utils.data.DataLoader(ds, batch_size=None, num_workers=2)
keys = [example["__key__"] for example in loader if example["image"]["bytes"]]
with open(f"{out}/rank{state.process_index}.json", "w") as f:
    json.dump({"keys": keys, "num_shards": ds.num_shards, "pid": os.getpid(), "world": state.num_processes}, f)
state.wait_for_everyone()
state.destroy_process_group()
'''


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_accelerate_two_processes_cover_every_sample_once(tmp_path):
    """Two real ranks (`accelerate launch`, torchrun launcher + gloo), each with 2 DataLoader workers and the image
    join: every sample is seen exactly once, and the ranks share one image index.

    `accelerate launch --cpu --num_processes 2` starts a single process in accelerate 1.15 (multi-CPU there means
    mpirun), so the ranks are launched with `--multi_gpu` (torchrun) and the script asks for `PartialState(cpu=True)`
    and exits non-zero unless it sees 2 ranks; the test also checks that 2 distinct processes reported back.
    """
    expected = write_shards(tmp_path / "shards", n_shards=4, per_shard=3)
    (tmp_path / "images").mkdir()
    for k, uid in enumerate(expected):
        (tmp_path / "images" / f"{uid}.jpg").write_bytes(jpeg_bytes((320, 240), k))
    script = tmp_path / "two_ranks.py"
    script.write_text(_TWO_PROCESS_SCRIPT)
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", PYTHONPATH=str(REPO_ROOT),
               HF_DATASETS_CACHE=str(tmp_path / "cache"))
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
               "--main_process_port", str(_free_port()), str(script), str(tmp_path / "shards" / "*.tar"),
               str(tmp_path / "images"), str(tmp_path), json.dumps(TEACHERS)]
    proc = subprocess.run(command, env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert [r["world"] for r in ranks] == [2, 2] and ranks[0]["pid"] != ranks[1]["pid"]
    assert [r["num_shards"] for r in ranks] == [2, 2]
    keys = ranks[0]["keys"] + ranks[1]["keys"]
    assert len(keys) == len(set(keys)) == len(expected) and set(keys) == set(expected)
    assert len(ranks[0]["keys"]) == len(ranks[1]["keys"]) == 6  # whole shards: 2 x 3 samples per rank
    index_files = [p.name for p in (tmp_path / "cache" / "datacompdr-join-index").iterdir()]
    assert sorted(n.split("-")[0] for n in index_files if n.endswith(".arrow")) == ["data_files", "image_dir"]  # one
    # index of each kind for both ranks
    assert not [n for n in index_files if n.endswith(".incomplete")]  # nothing half-written left behind
