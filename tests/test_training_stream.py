"""Streaming training data (modeling_mobileclip/training/stream_batches.py) and the streaming path of
train_accelerate.py: exactly-once epochs over ranks and workers, equality with map-style, exact resume (in process and
after SIGKILL), and a two-"machine" run on localhost, on a toy DataCompDR of 40 real tar shards."""

import collections
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest
import torch
from conftest import train_in_process
from safetensors.torch import load_file

import dataset_scripts  # noqa: F401  (registers load_dataset("datacompdr"))
from dataset_scripts.toy_data import ToySpec, build_toy_datacompdr
from modeling_mobileclip.training.checkpoints import latest_checkpoint
from modeling_mobileclip.training.map_batches import StepBatches
from modeling_mobileclip.training.stream_batches import StreamBatches, shard_stream, stream_loader
from modeling_mobileclip.training.students import MobileCLIPStudent
from modeling_mobileclip.training.views import PixelNormalizer, training_view

ROOT = Path(__file__).resolve().parents[1]
SPEC = dict(num_train=200, samples_per_shard=5, num_augmentations=2, teacher_images=64, teacher_steps=5,
            teacher_batch_size=16)  # 40 shards
TOY = ["--toy-spec", ",".join(f"{k}={v}" for k, v in SPEC.items())]
ENV = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TOKENIZERS_PARALLELISM="false",
           OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("toy40")
    build_toy_datacompdr(ToySpec(**SPEC), path, log=lambda *a: None)
    return path


@pytest.fixture(scope="module")
def shards(cache_dir):
    return sorted(str(p) for p in (build_toy_datacompdr(ToySpec(**SPEC), cache_dir) / "train").glob("*.tar"))


@pytest.fixture(scope="module")
def student():
    return MobileCLIPStudent("tiny")


def load(shards, tmp_path, streaming):
    import datasets

    return datasets.load_dataset("datacompdr", data_files={"train": shards}, split="train", image_dir=shards,
                                 captions=shards, cache_dir=str(tmp_path / "hf"), streaming=streaming,
                                 verify_images=not streaming)


def stream(shards, tmp_path, student, *, rank=0, world_size=1, batch_size=4, epochs=None, shuffle_buffer=7):
    ds = shard_stream(load(shards, tmp_path, streaming=True), rank=rank, world_size=world_size)
    return StreamBatches(ds, student.replay_transform(), student.tokenize, caption_mode="gt+syn", mix_ratio=0.5,
                         seed=3, batch_size=batch_size, shuffle_buffer=shuffle_buffer, rank=rank, epochs=epochs)


def test_one_epoch_over_two_ranks_and_two_workers_sees_every_sample_once(shards, tmp_path, student):
    every = [ex["uid"] for ex in load(shards, tmp_path, streaming=False)]
    assert len(every) == SPEC["num_train"] and len(shards) == 40
    for batch_size in (1, 3):
        seen, dropped = collections.Counter(), 0
        for rank in range(2):
            for batch in stream_loader(stream(shards, tmp_path, student, rank=rank, world_size=2,
                                              batch_size=batch_size, epochs=1), num_workers=2):
                seen.update(batch["uids"])
                dropped += batch["dropped"]
                assert len(batch["uids"]) in (0, batch_size)
        assert max(seen.values()) == 1, [u for u, n in seen.items() if n > 1]
        assert set(seen) <= set(every) and len(seen) + dropped == len(every)
        # 4 workers of 10 shards x 5 samples each: a partial last batch (50 % 3 = 2 samples) per worker
        assert dropped == (0 if batch_size == 1 else 4 * (50 % batch_size))


def test_each_epoch_draws_a_new_shard_order_and_block_order(shards, tmp_path, student):
    batches = iter(stream_loader(stream(shards, tmp_path, student, batch_size=5, shuffle_buffer=5), num_workers=0))
    epoch0 = [next(batches) for _ in range(40)]
    epoch1 = [next(batches) for _ in range(40)]
    assert {int(e) for b in epoch0 for e in b["epochs"]} == {0} and {int(e) for b in epoch1 for e in b["epochs"]} == {1}
    order0, order1 = [b["uids"] for b in epoch0], [b["uids"] for b in epoch1]
    assert sorted(sum(order0, [])) == sorted(sum(order1, [])) and order0 != order1
    shard_of = {name.split(".")[0]: k for k, path in enumerate(shards) for name in tarfile.open(path).getnames()}
    shard_orders = [list(dict.fromkeys(shard_of[u] for b in order for u in b)) for order in (order0, order1)]
    assert sorted(shard_orders[0]) == sorted(shard_orders[1]) == list(range(40))
    assert shard_orders[0] != shard_orders[1]  # another shard order, not only another order inside the shards


def test_streaming_and_map_style_give_the_same_samples(shards, tmp_path, student):
    mapped = load(shards, tmp_path, streaming=False)
    streamed = {ex["uid"]: ex for ex in load(shards, tmp_path, streaming=True)}
    assert sorted(streamed) == sorted(mapped["uid"])
    transform = student.replay_transform()
    for ex in mapped:
        a = training_view(ex, transform, random.Random(ex["uid"]))
        b = training_view(streamed[ex["uid"]], transform, random.Random(ex["uid"]))
        assert (a["gt"], a["syn"]) == (b["gt"], b["syn"])
        for key in ("pixel_values", "t_img", "t_gt", "t_syn"):
            assert torch.equal(a[key], b[key]), (ex["uid"], key)
        # uint8 views normalised on the device are bit-identical to the replay transform's float output
        aug = random.Random(ex["uid"]).randrange(len(ex["param_aug"]))
        assert torch.equal(PixelNormalizer(transform)(a["pixel_values"][None])[0],
                           transform(ex["image"], ex["param_aug"][aug]))
    # and the map-style batches of the loop are views of the same samples
    steps = StepBatches(mapped, transform, student.tokenize, caption_mode="gt+syn", mix_ratio=0.5, seed=0,
                        batch_size=8, rank=0, world_size=1)
    assert set(steps[0]["uids"]) <= set(streamed)


def test_resume_from_a_json_state_continues_with_the_same_batches(shards, tmp_path, student):
    def batches(state=None, count=56):
        loader = stream_loader(stream(shards, tmp_path, student, batch_size=4), num_workers=2, state=state)
        it = iter(loader)
        return [next(it) for _ in range(count)], loader

    reference, _ = batches()  # 56 batches x 4 samples: each worker (100 samples an epoch) crosses into epoch 1
    head, loader = batches(count=31)
    state = json.loads(json.dumps(loader.state_dict()))  # what the checkpoint stores
    tail, _ = batches(state, count=25)
    for want, got in zip(reference, head + tail, strict=True):
        assert want["uids"] == got["uids"]
        assert torch.equal(want["pixel_values"], got["pixel_values"]) and torch.equal(want["input_ids"],
                                                                                      got["input_ids"])
    assert {int(e) for b in reference for e in b["epochs"]} == {0, 1}


def test_fewer_shards_than_processes_is_a_clear_error(shards, tmp_path):
    with pytest.raises(ValueError, match=r"has 2 shard\(s\) for 4 processes.*--data-mode map"):
        shard_stream(load(shards[:2], tmp_path, streaming=True), rank=0, world_size=4)


# ----------------------------------------------------------------------------------------- train_accelerate.py


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def train_args(cache_dir, out, *extra):
    return [str(ROOT / "train_accelerate.py"), *TOY, "--cache-dir", str(cache_dir), "--output-dir", str(out),
            "--data-mode", "stream", "--batch-size", "4", "--shuffle-buffer", "8", "--eval-every", "100",
            "--report-to", "jsonl", "--log-every", "1", "--log-sample-uids", "--no-progress", *extra]


def launcher(*flags):
    return [sys.executable, "-m", "accelerate.commands.launch", "--mixed_precision", "no", "--dynamo_backend", "no",
            *flags]


def run(command, timeout=300):
    result = subprocess.run(command, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        raise AssertionError(f"training failed ({result.returncode}):\n{result.stderr[-4000:]}")
    return result


def uid_log(out):
    return [json.loads(line) for line in (Path(out) / "sample_uids.jsonl").read_text().splitlines()]


def losses(out):
    rows = (Path(out) / "logs" / "mobileclip" / "metrics.jsonl").read_text().splitlines()
    return [json.loads(r)["train/loss"] for r in rows if "train/loss" in json.loads(r)]


@pytest.mark.slow
def test_kill_during_streaming_training_then_resume_sees_the_same_samples(cache_dir, tmp_path):
    args = ("--max-steps", "12", "--checkpoint-every", "3", "--num-workers", "2")
    single = launcher("--cpu", "--num_processes", "1", "--num_machines", "1")
    train_in_process(train_args(cache_dir, tmp_path / "full", *args)[1:])  # the reference: no launcher to start

    killed = tmp_path / "killed"
    proc = subprocess.Popen([*single, *train_args(cache_dir, killed, *args)], cwd=ROOT, env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        while latest_checkpoint(killed) is None and proc.poll() is None:
            time.sleep(0.01)
        assert proc.poll() is None, "the run finished before it could be killed; make it longer"
        time.sleep(random.uniform(0, 1))  # anywhere after the first checkpoint, mid-step or mid-save
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    assert not (killed / "model.safetensors").exists()
    train_in_process(train_args(cache_dir, killed, *args, "--resume", str(killed))[1:])  # the kill is what matters
    assert uid_log(killed) == uid_log(tmp_path / "full") and len(uid_log(killed)) == 12
    full, resumed = load_file(tmp_path / "full" / "model.safetensors"), load_file(killed / "model.safetensors")
    for name in full:
        assert torch.equal(resumed[name], full[name]), name


@pytest.mark.slow
def test_two_machines_on_localhost_train_like_one_machine_with_two_processes(cache_dir, tmp_path):
    # tiny-clip: no BatchNorm, so per-process statistics cannot differ; same world size, same data split.
    args = ("--model", "tiny-clip", "--max-steps", "4", "--checkpoint-every", "100", "--loss-weights", "0.5,0.5")
    run([*launcher("--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--main_process_port",
                   str(free_port())), *train_args(cache_dir, tmp_path / "one", *args)])
    port = free_port()
    machines = [subprocess.Popen([*launcher("--multi_gpu", "--num_processes", "2", "--num_machines", "2",
                                            "--machine_rank", str(rank), "--main_process_ip", "127.0.0.1",
                                            "--main_process_port", str(port)),
                                  *train_args(cache_dir, tmp_path / f"machine{rank}", *args)],
                                 cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                for rank in range(2)]
    for machine in machines:
        _, err = machine.communicate(timeout=300)
        assert machine.returncode == 0, err[-4000:]
    two = tmp_path / "machine0"  # the main process (machine 0, local rank 0) writes the logs and the model
    assert uid_log(two) == uid_log(tmp_path / "one")
    assert losses(two) == losses(tmp_path / "one") and len(losses(two)) == 4
    w1, w2 = load_file(tmp_path / "one" / "model.safetensors"), load_file(two / "model.safetensors")
    for name in w1:
        assert torch.equal(w1[name], w2[name]), name


@pytest.mark.slow
def test_uneven_shards_over_two_processes_end_the_epoch_together_and_count_the_rest(shards, cache_dir, tmp_path):
    """39 shards of 5 over 2 processes: rank 0 reads 20, rank 1 19 (95 samples = 23 batches of 4 + 3). Both stop at
    the first step where rank 1 has no full batch; nothing hangs, nothing is trained twice, and the end line counts
    what was not trained (rank 1's 3, rank 0's last 8) so that trained + not trained = every sample."""
    toy = Path(shards[0]).parent
    data = ["--train-data", str(toy / "{00000000..00000038}.tar"), "--image-dir", str(toy / "*.tar"),
            "--captions", str(toy / "*.tar"), "--eval-data", str(toy.parent / "eval"), "--teacher-logit-scales",
            "50,50"]
    out = tmp_path / "uneven"
    result = run([*launcher("--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--main_process_port",
                            str(free_port())),
                  *train_args(cache_dir, out, "--epochs", "1", "--max-steps", "1000", "--checkpoint-every", "1000",
                              *data)], timeout=600)
    assert "Grad strides do not match bucket view strides" not in result.stderr  # issue 18.10 (training/grad_layout.py)
    steps = uid_log(out)
    seen = collections.Counter(u for row in steps for u in row["uids"])
    assert max(seen.values()) == 1 and len(steps) == 23 and len(seen) == 23 * 8
    assert "Samples trained per epoch: {0: 184}" in result.stdout
    assert "not trained at the end of --epochs (partial batches, uneven shards): 11" in result.stdout
