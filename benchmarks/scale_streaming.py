"""`bench_streaming.py --scale`: one epoch of 100k samples in 400 shards on 2 ranks x 2 DataLoader workers through
train_accelerate.py (every uid exactly once), then the same run SIGKILLed mid-epoch and resumed (uid sequence per
step compared with the uninterrupted run)."""

from __future__ import annotations

import collections
import contextlib
import json
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
from bench_streaming import ENV, train_command, write_shards

from modeling_mobileclip.training.checkpoints import latest_checkpoint


def _launch(port: int) -> list[str]:
    return [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
            "--num_machines", "1", "--main_process_port", str(port), "--mixed_precision", "no", "--dynamo_backend",
            "no"]


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(command: list[str], cwd: Path) -> None:
    done = subprocess.run(command, cwd=cwd, env=ENV, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{done.stderr[-4000:]}")


def _uids(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "sample_uids.jsonl").read_text().splitlines()]


def scale_test(work: Path, quick: bool) -> tuple[str, list[str], dict]:
    num_shards, per_shard, batch = (8, 10, 5) if quick else (400, 250, 25)
    total = num_shards * per_shard
    steps = total // (2 * batch)  # each worker's samples divide by the batch: the epoch ends on a full step
    start, data = time.perf_counter(), work / f"scale-{num_shards}x{per_shard}"
    if (data / "complete").is_file():  # --work-dir kept from an earlier run
        dr, images = json.loads((data / "complete").read_text())
    else:
        dr, images = write_shards(data, num_shards, per_shard, sizes=[(32, 32)], num_aug=2, dim=16, num_syn=2)
        (data / "complete").write_text(json.dumps([dr, images]))
    written = time.perf_counter() - start
    shutil.rmtree(work / "killed", ignore_errors=True)
    extra = ("--batch-size", str(batch), "--num-workers", "2", "--epochs", "1", "--max-steps", str(steps),
             "--log-sample-uids", "--shuffle-buffer", "100", "--checkpoint-every", str(max(1, steps // 8)),
             "--checkpoints-total-limit", "2")
    timing = work / "full" / "epoch_seconds.txt"
    if not (work / "full" / "model.safetensors").is_file():  # a --work-dir rerun keeps the finished reference run
        shutil.rmtree(work / "full", ignore_errors=True)
        start = time.perf_counter()
        _run([*_launch(_port()), *train_command(dr, images, 16, work, work / "full", *extra)], work)
        timing.write_text(f"{time.perf_counter() - start:.0f}")
    epoch_time = timing.read_text() if timing.is_file() else "(not recorded)"
    full = _uids(work / "full")
    seen = collections.Counter(u for row in full for u in row["uids"])
    expected = {f"{s:08x}{k:024x}" for s in range(num_shards) for k in range(per_shard)}

    killed = work / "killed"
    proc = subprocess.Popen([*_launch(_port()), *train_command(dr, images, 16, work, killed, *extra)], cwd=work,
                            env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    while proc.poll() is None:
        found = latest_checkpoint(killed)
        if found is not None and json.loads((found[0] / "checkpoint_complete.json").read_text())["step"] >= steps / 2:
            break
        time.sleep(0.05)
    time.sleep(0.5)
    # torchrun starts each rank in a session of its own: kill the launcher's whole process tree, not its group
    for victim in [*psutil.Process(proc.pid).children(recursive=True), psutil.Process(proc.pid)]:
        with contextlib.suppress(psutil.NoSuchProcess):
            victim.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = len(_uids(killed))
    _run([*_launch(_port()), *train_command(dr, images, 16, work, killed, *extra, "--resume", str(killed))], work)
    resumed = _uids(killed)
    intro = (f"{total} samples in {num_shards} shards ({per_shard} each; written in {written:.0f} s), 2 ranks x 2 "
             f"DataLoader workers, batch {batch} per rank, {steps} steps = 1 epoch in {epoch_time} s (tiny student, "
             f"2 CPU cores shared with other work).")
    table = ["| check | result |", "|---|---|",
             f"| uids trained in the epoch | {sum(seen.values())} of {total} |",
             f"| distinct / seen more than once / never seen | {len(seen)} / "
             f"{sum(1 for n in seen.values() if n > 1)} / {len(expected - set(seen))} |",
             f"| killed (SIGKILL) after step | {killed_at} of {steps} |",
             f"| resumed run's uid sequence == uninterrupted run's, step by step | {resumed == full} |"]
    raw = {"total": total, "seen": sum(seen.values()), "distinct": len(seen), "killed_at": killed_at,
           "resumed_equal": resumed == full, "epoch_seconds": epoch_time}
    return intro, ["\n".join(table)], raw
