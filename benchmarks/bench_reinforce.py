"""Throughput of the reinforcement tool on CPU with tiny random models, and where the time goes.

    python benchmarks/bench_reinforce.py            # 64 samples, 224-px crops, 10 augmentations, 5 captions
    python benchmarks/bench_reinforce.py --quick    # CI smoke run (no timing assertions)

The tiny models make the model share small; the numbers show the fixed per-sample cost of the pipeline (decode,
RandAugment replay, resizing/normalising per teacher, writing) that real teachers add their forwards to.
"""

import argparse
import io
import json
import os
import platform
import sys
import tarfile
import tempfile
import time

import numpy as np
import PIL.Image
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

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


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--samples", type=int)
    parser.add_argument("--captioner", choices=("ved", "coca"), default="coca")
    args = parser.parse_args()
    crop = 64 if args.quick else 224
    samples = args.samples or (8 if args.quick else 64)
    num_aug, num_captions = (2, 2) if args.quick else (10, 5)
    with tempfile.TemporaryDirectory() as tmp:
        teachers = [tiny_open_clip_clip(os.path.join(tmp, "t1"), image_size=crop, seed=1),
                    tiny_open_clip_clip(os.path.join(tmp, "t2"), image_size=crop // 2, seed=2)]
        if args.captioner == "coca":
            captioner = tiny_open_clip_coca(os.path.join(tmp, "cap"), image_size=crop // 2)
        else:
            captioner = tiny_vision_encoder_decoder(os.path.join(tmp, "cap"), image_size=crop // 2)
        data = write_dataset(os.path.join(tmp, "data"), samples, per_shard=max(samples // 2, 1))
        start = time.perf_counter()
        summary = reinforce(data, os.path.join(tmp, "out"), teachers, captioner, num_augmentations=num_aug,
                            num_captions=num_captions, crop_size=crop, batch_size=16, teacher_batch_size=128,
                            progress=False, device="cpu")
        wall = time.perf_counter() - start
    timings = summary["timings"]
    work = summary["seconds"]
    shares = {k: round(100 * v / work, 1) for k, v in sorted(timings.items(), key=lambda kv: -kv[1])}
    result = {
        "device": "cpu", "torch_threads": torch.get_num_threads(), "cpu": platform.processor() or platform.machine(),
        "dtype": "fp32", "samples": summary["num_uids"], "crop_size": crop, "num_augmentations": num_aug,
        "num_captions": num_captions, "captioner": f"tiny {args.captioner}", "teachers": "2 tiny open_clip ViTs",
        "batch_size": 16, "samples_per_s": round(summary["num_uids"] / work, 2),
        "processing_seconds": round(work, 2), "wall_seconds_incl_model_loading": round(wall, 2),
        "time_share_percent": shares,
    }
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
