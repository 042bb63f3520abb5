"""Throughput of the reinforcement tool on CPU with tiny random models, and where the time goes.

    python benchmarks/bench_reinforce.py            # 64 samples of 320x256 JPEG, 224-px crops, 10 augs, 5 captions
    python benchmarks/bench_reinforce.py --quick    # CI smoke run (4 samples, 64-px crops, 8 tokens; no timing claims)

Prints a markdown table (the docs rows) and writes it to benchmarks/results/bench_reinforce.md and .json (--results-dir
to change; --quick writes to a temp dir): one row per configuration (captioner, compute dtype, processes), all on the
same data and interleaved over ``--repeats`` rounds (the best round of each is kept, which tolerates a machine
shared with other jobs). One process runs ``reinforce`` in this process; two processes are a real ``accelerate
launch --multi_gpu --num_processes 2`` of the command line (gloo on the CPU, one torch thread each), whose samples/s
is all samples over the slower process's processing time (start-up and model loading excluded, as for one process).
The shares are of the processing time (model loading excluded): captioning, augmentation (sampling + RandAugment
replay + per-teacher resize/normalise), teacher forwards (image and text), and the rest (reading the input, image
decode, shard writing). Teachers: two tiny open_clip ViTs, at the crop size and at half of it.

The tiny models make the model shares small; the numbers show the fixed per-sample cost of the pipeline that real
teachers and captioners add their forwards to.
"""

import argparse
import io
import json
import os
import socket
import subprocess
import sys
import tarfile
import tempfile
from collections import Counter

import numpy as np
import PIL.Image
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from common import add_results_option, header_line, machine_header, write_results  # noqa: E402

from dataset_scripts.reinforce import reinforce  # noqa: E402
from dataset_scripts.tiny_reinforce_models import (tiny_open_clip_clip, tiny_open_clip_coca,  # noqa: E402
                                                   tiny_vision_encoder_decoder)


def write_dataset(root: str, num_samples: int, per_shard: int, size=(320, 256)) -> str:
    os.makedirs(root, exist_ok=True)
    rng = np.random.default_rng(0)
    for shard in range(0, num_samples, per_shard):
        with tarfile.open(os.path.join(root, f"{shard // per_shard:05d}.tar"), "w") as tar:
            for i in range(shard, min(shard + per_shard, num_samples)):
                # smooth random images compress like photos rather than like noise
                small = rng.integers(0, 256, (size[1] // 16, size[0] // 16, 3), dtype=np.uint8)
                img = PIL.Image.fromarray(small).resize(size, PIL.Image.Resampling.BICUBIC)
                buffer = io.BytesIO()
                img.save(buffer, format="JPEG", quality=90)
                for name, data in ((f"{i:06d}.jpg", buffer.getvalue()), (f"{i:06d}.txt", f"sample {i}".encode())):
                    info = tarfile.TarInfo(name)
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
    return root


def shares(timings: dict, total: float) -> dict:
    """Percent of ``total`` per phase (the Reinforcer's timing names grouped as in the README table); "other" is the
    rest: reading the input, decoding images, writing the shard."""
    groups = {"caption": ("caption",), "augment": ("augment",), "teachers": ("teacher_image", "teacher_text")}
    percent = {name: 100.0 * sum(timings.get(k, 0.0) for k in keys) / total for name, keys in groups.items()}
    percent["other"] = 100.0 - sum(percent.values())
    return percent


def launch_two_processes(data: str, out: str, teachers: list, captioner, options: dict) -> dict:
    """``accelerate launch`` of the command line on 2 processes; one summary as ``reinforce`` returns (samples, the
    slower process's seconds, the phase timings summed over both processes and scaled to that time)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port",
               str(port), "-m", "dataset_scripts.reinforce", "--dataset", data, "--output", out,
               "--teachers", ",".join(teachers), "--captioner", captioner or "none", "--no-progress", "--device", "cpu"]
    for key, value in options.items():
        command += [f"--{key.replace('_', '-')}", str(value)]
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join([root, os.environ.get("PYTHONPATH", "")]))
    done = subprocess.run(command, env=env, cwd=root, capture_output=True, text=True, timeout=1800, check=False)
    if done.returncode != 0:
        raise SystemExit(f"error: the 2-process run failed:\n{done.stderr[-3000:]}")
    summaries = [json.loads(line[len("reinforce: "):]) for line in done.stdout.splitlines()
                 if line.startswith("reinforce: {")]
    seconds = max(s["seconds"] for s in summaries)
    busy = sum(s["seconds"] for s in summaries)
    timings = sum((Counter(s["timings"]) for s in summaries), Counter())
    return {"num_uids": sum(s["num_uids"] for s in summaries), "seconds": seconds,
            "timings": {k: v * seconds / busy for k, v in timings.items()}}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--samples", type=int)
    parser.add_argument("--repeats", type=int)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch intra-op threads (1: tiny models gain nothing from more, and a shared machine "
                             "makes more threads wait on each other)")
    add_results_option(parser)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    header = machine_header("fp32 / bf16 autocast (per row)", args.threads)
    print(header_line(header), flush=True)
    crop = 64 if args.quick else 224
    samples = args.samples or (4 if args.quick else 64)
    repeats = args.repeats or (1 if args.quick else 2)
    num_aug, num_captions, max_tokens = (2, 1, 8) if args.quick else (10, 5, 30)
    with tempfile.TemporaryDirectory() as tmp:
        teachers = [tiny_open_clip_clip(os.path.join(tmp, "t1"), image_size=crop, seed=1),
                    tiny_open_clip_clip(os.path.join(tmp, "t2"), image_size=crop // 2, seed=2)]
        captioners = {"tiny CoCa (open_clip)": tiny_open_clip_coca(os.path.join(tmp, "coca"), image_size=crop // 2),
                      "tiny ViT+GPT-2 (transformers)": tiny_vision_encoder_decoder(os.path.join(tmp, "ved"),
                                                                                   image_size=crop // 2),
                      "none": None}
        coca, ved = "tiny CoCa (open_clip)", "tiny ViT+GPT-2 (transformers)"
        configs = [(coca, "fp32", 1), (ved, "fp32", 1), ("none", "fp32", 1), (coca, "bf16", 1), ("none", "bf16", 1),
                   (coca, "fp32", 2), ("none", "fp32", 2), (coca, "bf16", 2), ("none", "bf16", 2)]
        if args.quick:  # the 2-process launch is tested by tests/test_reinforce_cli.py
            configs = [c for c in configs if c[2] == 1]
        data = write_dataset(os.path.join(tmp, "data"), samples, per_shard=max(samples // 4, 1))
        options = {"num_augmentations": num_aug, "num_captions": num_captions, "max_caption_tokens": max_tokens,
                   "crop_size": crop, "batch_size": 16, "teacher_batch_size": 128}
        best: dict = {}
        for round_ in range(repeats):
            for index, (name, dtype, processes) in enumerate(configs):
                out = os.path.join(tmp, f"out{round_}_{index}")
                if processes == 1:
                    summary = reinforce(data, out, teachers, captioners[name], dtype=dtype, progress=False,
                                        device="cpu", **options)
                else:
                    summary = launch_two_processes(data, out, teachers, captioners[name], dict(options, dtype=dtype))
                rate = summary["num_uids"] / summary["seconds"]
                if index not in best or rate > best[index][0]:
                    best[index] = (rate, summary)
    intro = (f"CPU, {torch.get_num_threads()} torch threads; {samples} samples of 320x256 JPEG; crop {crop}; "
             f"{num_aug} augmentations; {num_captions} captions (max {max_tokens} tokens); teachers: 2 tiny open_clip "
             f"ViTs ({crop} px, {crop // 2} px); batch 16; {samples // max(samples // 4, 1)} input shards; "
             f"2 processes: "
             f"accelerate launch, 1 thread each; best of {repeats} interleaved rounds")
    table = ["| captioner | dtype | processes | samples/s | captioning | augmentation | teacher forwards | other |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    raw = []
    for index, (name, dtype, processes) in enumerate(configs):
        rate, summary = best[index]
        share = shares(summary["timings"], summary["seconds"])
        table.append(f"| {name} | {dtype} | {processes} | {rate:.1f} | {share['caption']:.0f} % | "
                     f"{share['augment']:.0f} % | {share['teachers']:.0f} % | {share['other']:.0f} % |")
        raw.append({"captioner": name, "dtype": dtype, "processes": processes, "samples_per_s": rate,
                    "seconds": summary["seconds"], "timings_s": summary["timings"]})
    print(intro, "", *table, sep="\n")
    write_results("bench_reinforce", args, header, intro, ["\n".join(table)], raw)


if __name__ == "__main__":
    main()
