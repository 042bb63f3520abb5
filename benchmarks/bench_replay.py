"""Throughput of augmentation replay vs. a plain RandomResizedCrop, on the same decoded-from-JPEG images.

    python benchmarks/bench_replay.py            # the README numbers (median of 15 interleaved rounds)
    python benchmarks/bench_replay.py --quick    # smoke run for CI: tiny, no timing claims

Per image, both candidates start from the JPEG bytes:

* ``rrc``: decode (PIL, RGB) + torchvision ``RandomResizedCrop(224, bicubic)``: the cheapest thing a plain
  CLIP loader does.
* ``rrc+tensor``: the same + ``ToTensor`` + ``Normalize`` (what a plain loader really hands the model).
* ``replay``: decode as the generator did (``augment_replay.load_image``) + ``augment_replay.apply`` of a stored
  entry (crop box, resize to 224 bicubic, 2 RandAugment ops, ``to_tensor``, normalise).

Rounds are interleaved (candidate order alternates every round) so that load from other jobs on the machine hits
all candidates alike; each candidate's figure is the median over rounds. Throughput is reported per wall second and
per CPU second of this process (images per core-second: the PIL work is single-threaded, so this is what one
DataLoader worker gets per core). ``torch.set_num_threads(2)``.
"""

import argparse
import io
import random
import statistics
import time

import numpy as np
import PIL.Image
import torch
from torchvision import transforms

from dataset_scripts import augment_replay

SIZES = [(640, 480), (800, 600), (1024, 768), (500, 375), (768, 1024), (1200, 800)]


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


def build_candidates(jpegs: list[bytes], seed: int):
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

    return {"rrc": run_rrc, "rrc+tensor": run_rrc_tensor, "replay": run_replay}


def measure(candidates: dict, rounds: int, count: int) -> dict:
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=48, help="images per round")
    parser.add_argument("--rounds", type=int, default=15, help="interleaved rounds (the median is reported)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="CI smoke run: 6 images, 3 rounds, numbers meaningless")
    args = parser.parse_args()
    if args.quick:
        args.images, args.rounds = 6, 3
    elif args.rounds < 15:
        parser.error("--rounds must be >= 15 for reported numbers (use --quick for a smoke run)")
    torch.set_num_threads(args.threads)

    jpegs = make_jpegs(args.images)
    candidates = build_candidates(jpegs, seed=0)
    for run in candidates.values():  # warm-up: imports, PIL plugin init, allocator
        run()
    results = measure(candidates, args.rounds, args.images)

    print(f"torch {torch.__version__}, PIL {PIL.__version__}, torch threads {torch.get_num_threads()}, "
          f"{args.images} JPEGs {sorted(set(SIZES[: args.images]))}, median of {args.rounds} interleaved rounds"
          + ("  [--quick: not a measurement]" if args.quick else ""))
    print(f"{'candidate':<12} {'images/s (wall)':>16} {'images/core-s (CPU)':>20}")
    for name, (wall, cpu) in results.items():
        print(f"{name:<12} {wall:>16.1f} {cpu:>20.1f}")
    for baseline in ("rrc", "rrc+tensor"):
        wall_ratio = results["replay"][0] / results[baseline][0]
        cpu_ratio = results["replay"][1] / results[baseline][1]
        print(f"replay / {baseline}: {wall_ratio:.2f}x (wall), {cpu_ratio:.2f}x (per core)")


if __name__ == "__main__":
    main()
