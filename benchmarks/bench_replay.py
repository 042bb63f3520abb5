"""Throughput of augmentation replay vs. a plain RandomResizedCrop, on the same JPEG bytes, in one process.

    python benchmarks/bench_replay.py            # the docs table (median of 15 interleaved rounds)
    python benchmarks/bench_replay.py --quick    # smoke run for CI: tiny, no timing claims

Writes benchmarks/results/bench_replay.md and .json (--results-dir to change; --quick writes to a temp dir).

Per image, every candidate starts from the JPEG bytes of a photo-sized image:

* ``decode + RRC``: PIL decode (RGB) + torchvision ``RandomResizedCrop(224, bicubic)``, the bare baseline.
* ``decode + RRC + ToTensor + Normalize``: what a plain CLIP loader really hands the model.
* ``decode + replay``: ``augment_replay.load_image`` + ``ReplayTransform(224, "bicubic")`` of a stored entry
  (crop box, resize, 2 RandAugment ops, to_tensor, normalise): the student's transform on DataCompDR.
* ``image check + decode + replay``: the same, plus the builder's per-sample image check
  (``datacompdr.read_image_size(verify=True)``, run when ``image_dir=`` is joined): the whole per-image CPU cost of
  training on DataCompDR with joined images.

Rounds are interleaved (the candidate order alternates every round), so load from other jobs on the machine hits all
candidates alike; each figure is the median over rounds. Throughput is given per wall second and per CPU second of
this process (images per core-second). torch runs with 1 intra-op thread by default, as in a DataLoader worker.
"""

import argparse
import io
import random
import statistics
import time

import numpy as np
import PIL.Image
import torch
from common import add_results_option, header_line, machine_header, write_results
from torchvision import transforms

from dataset_scripts import augment_replay
from dataset_scripts.datacompdr import read_image_size

SIZES = [(640, 480), (800, 600), (1024, 768), (500, 375), (768, 1024), (1200, 800)]
BASELINE = "decode + RRC"


def make_jpegs(count: int, seed: int = 0) -> list[bytes]:
    """Photo-like JPEGs (smooth gradients + texture + noise) at typical DataComp original resolutions."""
    rng = np.random.default_rng(seed)
    images = []
    for index in range(count):
        width, height = SIZES[index % len(SIZES)]
        y, x = np.mgrid[0:height, 0:width].astype(np.float32)
        base = np.stack([x / width, y / height, np.sin(x / 37.0 + y / 53.0) * 0.5 + 0.5], axis=-1) * 200
        arr = np.clip(base + rng.normal(0, 20, base.shape), 0, 255).astype(np.uint8)
        buffer = io.BytesIO()
        PIL.Image.fromarray(arr).save(buffer, format="JPEG", quality=90)
        images.append(buffer.getvalue())
    return images


def decode_rgb(data: bytes) -> PIL.Image.Image:
    return PIL.Image.open(io.BytesIO(data)).convert("RGB")


def build_candidates(jpegs: list[bytes], seed: int) -> dict:
    rng = random.Random(seed)
    entries = [augment_replay.sample_params(rng, decode_rgb(data).size) for data in jpegs]
    rrc = transforms.RandomResizedCrop(224, interpolation=transforms.InterpolationMode.BICUBIC)
    rrc_tensor = transforms.Compose([rrc, transforms.ToTensor(),
                                     transforms.Normalize(augment_replay.OPENAI_CLIP_MEAN,
                                                          augment_replay.OPENAI_CLIP_STD)])
    replay = augment_replay.ReplayTransform(224, "bicubic")

    def run_rrc():
        for data in jpegs:
            rrc(decode_rgb(data))

    def run_rrc_tensor():
        for data in jpegs:
            rrc_tensor(decode_rgb(data))

    def run_replay():
        for data, entry in zip(jpegs, entries):
            replay(augment_replay.load_image(data), entry)

    def run_checked_replay():
        for data, entry in zip(jpegs, entries):
            read_image_size(data, verify=True)
            replay(augment_replay.load_image(data), entry)

    return {BASELINE: run_rrc, "decode + RRC + ToTensor + Normalize": run_rrc_tensor,
            "decode + replay": run_replay, "image check + decode + replay": run_checked_replay}


def measure(candidates: dict, rounds: int, count: int) -> dict:
    """name -> (median images/s of wall time, median images/s of this process' CPU time)."""
    wall = {name: [] for name in candidates}
    cpu = {name: [] for name in candidates}
    names = list(candidates)
    for round_index in range(rounds):
        order = names if round_index % 2 == 0 else names[::-1]
        for name in order:
            start_wall, start_cpu = time.perf_counter(), time.process_time()
            candidates[name]()
            wall[name].append(count / (time.perf_counter() - start_wall))
            cpu[name].append(count / max(time.process_time() - start_cpu, 1e-9))
    return {name: (statistics.median(wall[name]), statistics.median(cpu[name])) for name in names}


def markdown_table(results: dict) -> str:
    base_cpu = results[BASELINE][1]
    rows = ["| pipeline (per image, from JPEG bytes, 224 px out) | images/s (wall) | images/s per core (CPU) "
            "| vs decode + RRC (per core) |", "|---|---:|---:|---:|"]
    for name, (wall, cpu) in results.items():
        rows.append(f"| {name} | {wall:.0f} | {cpu:.0f} | {cpu / base_cpu:.2f}x |")
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=48, help="images per round")
    parser.add_argument("--rounds", type=int, default=15, help="interleaved rounds (the median is reported)")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (DataLoader workers use 1)")
    parser.add_argument("--quick", action="store_true", help="CI smoke run: 6 images, 3 rounds, numbers meaningless")
    add_results_option(parser)
    args = parser.parse_args()
    if args.quick:
        args.images, args.rounds = 6, 3
    elif args.rounds < 15:
        parser.error("--rounds must be >= 15 for reported numbers (use --quick for a smoke run)")
    torch.set_num_threads(args.threads)
    header = machine_header("fp32 (tensors; PIL uint8 ops)", args.threads)
    print(header_line(header), flush=True)

    jpegs = make_jpegs(args.images)
    candidates = build_candidates(jpegs, seed=0)
    for run in candidates.values():  # warm-up: imports, PIL plugin init, allocator
        run()
    results = measure(candidates, args.rounds, args.images)

    intro = (f"torch {torch.__version__}, PIL {PIL.__version__}, torch threads {torch.get_num_threads()}, "
             f"{args.images} JPEGs {sorted(set(SIZES[: args.images]))}, median of {args.rounds} interleaved rounds"
             + ("  [--quick: not a measurement]" if args.quick else ""))
    table = markdown_table(results)
    print(intro, "", table, sep="\n")
    write_results("bench_replay", args, header, intro, [table],
                  {name: {"images_per_s_wall": wall, "images_per_s_cpu": cpu} for name, (wall, cpu) in results.items()})


if __name__ == "__main__":
    main()
