"""train_accelerate.py end to end on a tiny toy DataCompDR (real `accelerate launch` subprocesses, CPU, offline)."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import train_accelerate  # noqa: E402
from dataset_scripts.toy_data import ToySpec, build_toy_datacompdr  # noqa: E402

TOY = ["--toy-size", "64", "32", "20"]
ENV = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("toy_cache")
    build_toy_datacompdr(ToySpec(num_train=64, num_validation=32, teacher_steps=20), path, log=lambda *a: None)
    return path


def command(cache_dir, out, *extra, processes=1):
    # accelerate 1.15's `launch --cpu --num_processes 2` silently runs ONE process (simple_launcher: no multi-CPU
    # launcher), so several CPU processes are started with torchrun; Accelerator() then picks up the gloo group.
    launcher = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "1", "--cpu", "--num_machines",
                "1", "--mixed_precision", "no", "--dynamo_backend", "no"] if processes == 1 else [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(processes), "--master_port", "0"]
    return [*launcher, str(ROOT / "train_accelerate.py"), *TOY, "--cache-dir", str(cache_dir), "--output-dir", str(out),
            "--batch-size", "8", *extra]


def launch(cache_dir, out, *extra, processes=1, check=True):
    result = subprocess.run(command(cache_dir, out, *extra, processes=processes), cwd=ROOT, env=ENV,
                            capture_output=True, text=True, timeout=300)
    if check and result.returncode != 0:
        raise AssertionError(f"training failed ({result.returncode}):\n{result.stderr[-4000:]}")
    return result


def metrics(out):
    rows = [json.loads(line) for line in (Path(out) / "logs" / "mobileclip" / "metrics.jsonl").read_text().splitlines()]
    return [r for r in rows if "train/loss" in r], [r for r in rows if "eval/image_to_text_r1" in r]


def test_main_job_end_to_end(cache_dir, tmp_path):
    from modeling_mobileclip import MobileCLIPModel, MobileCLIPProcessor

    out = tmp_path / "run"
    launch(cache_dir, out, "--max-steps", "4", "--checkpoint-every", "2", "--eval-every", "2")
    train, evals = metrics(out)
    assert [r["step"] for r in train] == [1, 2, 3, 4] and [r["step"] for r in evals] == [2, 4]
    assert {"train/distill_loss_gt", "train/distill_loss_syn"} <= set(train[0])
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["checkpoint_0", "checkpoint_1"]
    assert list((out / "logs").rglob("events.out.tfevents*")), "tensorboard logs missing"
    model = MobileCLIPModel.from_pretrained(out)
    processor = MobileCLIPProcessor.from_pretrained(out)
    with torch.no_grad():
        embeds = model(**processor(text=["a red circle"], return_tensors="pt", max_length=32),
                       pixel_values=torch.zeros(1, 3, 64, 64)).image_embeds
    assert torch.isfinite(embeds).all()


def test_loss_decreases(cache_dir, tmp_path):
    out = tmp_path / "run"
    launch(cache_dir, out, "--model", "tiny-vit", "--max-steps", "40", "--checkpoint-every", "100",
           "--eval-every", "100", "--lr", "3e-3", "--loss-weights", "1,1")
    losses = [r["train/loss"] for r in metrics(out)[0]]
    # With the 20-step toy teachers the distillation term alone sits near its floor (the teachers' entropy), so the
    # contrastive term is switched on: the summed loss must fall clearly.
    assert sum(losses[-8:]) / 8 < 0.95 * sum(losses[:8]) / 8, losses


@pytest.mark.slow
def test_exact_resume_after_sigkill(cache_dir, tmp_path):
    args = ("--max-steps", "12", "--checkpoint-every", "3", "--eval-every", "100")
    launch(cache_dir, tmp_path / "full", *args)

    killed = tmp_path / "killed"
    proc = subprocess.Popen(command(cache_dir, killed, *args), cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        while train_accelerate.latest_checkpoint(killed) is None and proc.poll() is None:
            time.sleep(0.01)
        assert proc.poll() is None, "the run finished before it could be killed; make it longer"
        os.killpg(proc.pid, signal.SIGKILL)  # the launcher and its training process, no clean-up
    finally:
        proc.wait()
    path, _ = train_accelerate.latest_checkpoint(killed)
    assert json.loads((path / train_accelerate.COMPLETE_MARKER).read_text())["step"] < 12
    assert not (killed / "model.safetensors").exists()

    launch(cache_dir, killed, *args, "--resume", str(killed))
    full, resumed = load_file(tmp_path / "full" / "model.safetensors"), load_file(killed / "model.safetensors")
    assert full.keys() == resumed.keys()
    for name in full:
        torch.testing.assert_close(resumed[name], full[name], atol=1e-6, rtol=0, msg=name)


@pytest.mark.slow
def test_two_processes_match_one_on_the_same_global_batch(cache_dir, tmp_path):
    # tiny-vit has no BatchNorm, whose per-device statistics would legitimately differ between 1 and 2 processes.
    args = ("--model", "tiny-vit", "--max-steps", "3", "--checkpoint-every", "100", "--eval-every", "3")
    one = launch(cache_dir, tmp_path / "one", *args, "--batch-size", "8") and metrics(tmp_path / "one")
    two = launch(cache_dir, tmp_path / "two", *args, "--batch-size", "4", processes=2) and metrics(tmp_path / "two")
    for a, b in zip(one[0], two[0], strict=True):
        assert a["train/loss"] == pytest.approx(b["train/loss"], rel=1e-5, abs=1e-6), (a, b)
    assert one[1] == two[1]  # held-out recall over the gathered (de-duplicated) validation set


def test_nan_loss_stops_and_keeps_last_good_checkpoint(cache_dir, tmp_path):
    out = tmp_path / "run"
    result = launch(cache_dir, out, "--model", "tiny-vit", "--max-steps", "6", "--checkpoint-every", "2",
                    "--debug-nan-at-step", "5", check=False)
    assert result.returncode != 0
    assert "Non-finite loss nan at optimizer step 5" in result.stderr and "sample ids" in result.stderr
    path, _ = train_accelerate.latest_checkpoint(out)
    assert json.loads((path / train_accelerate.COMPLETE_MARKER).read_text())["step"] == 4
    assert not (out / "model.safetensors").exists()


def _toy_split(cache_dir, tmp_path, **kwargs):
    import datasets

    import dataset_scripts  # noqa: F401

    root = build_toy_datacompdr(ToySpec(num_train=64, num_validation=32, teacher_steps=20), cache_dir)
    shards = [str(p) for p in sorted((root / "train").glob("*.tar"))]
    return datasets.load_dataset("datacompdr", data_files={"train": shards}, split="train",
                                 cache_dir=str(tmp_path / "hf"), **kwargs), shards


def test_missing_columns_are_named(cache_dir, tmp_path):
    ds, _ = _toy_split(cache_dir, tmp_path)  # no image_dir= / captions= joins: no image, no GT text
    with pytest.raises(ValueError, match=r"no column\(s\) \['image', 'image_width', 'image_height', 'text'\]"):
        train_accelerate.check_columns(ds, "train")


def test_teacher_width_mismatch_is_a_clear_error(cache_dir, tmp_path):
    ds, shards = _toy_split(cache_dir, tmp_path, image_dir=None)
    args = train_accelerate.parse_args(["--teacher-dims", "32,16"])
    with pytest.raises(ValueError, match=r"--teacher-dims \[32, 16\] sum to 48, but the stored teacher embeddings "
                                         r"are 56 wide.*e.g. 32,24"):
        train_accelerate.resolve_teachers(args, ds)
    args = train_accelerate.parse_args(["--teacher-logit-scales", "100,100,100"])
    with pytest.raises(ValueError, match="one value per teacher"):
        train_accelerate.resolve_teachers(args, ds)
    assert train_accelerate.resolve_teachers(train_accelerate.parse_args([]), ds)[0] == [32, 24]


def test_existing_output_dir_needs_resume_or_overwrite(tmp_path):
    (tmp_path / "checkpoints").mkdir()
    with pytest.raises(ValueError, match="--resume"):
        train_accelerate.check_output_dir(train_accelerate.parse_args(["--output-dir", str(tmp_path)]))
