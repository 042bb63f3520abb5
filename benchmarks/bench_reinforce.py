"""Throughput of the reinforcement tool on CPU with tiny random models, and where the time goes.

    python benchmarks/bench_reinforce.py            # 64 samples of 320x256 JPEG, 224-px crops, 10 augs, 5 captions
    python benchmarks/bench_reinforce.py --quick    # CI smoke run (4 samples, 64-px crops, 8 tokens; no timing claims)

Prints a markdown table (the docs rows) and writes it to benchmarks/results/bench_reinforce.md and .json (--results-dir
to change; --quick writes to a temp dir): one row per configuration (captioner, compute dtype), all run in this
process on the same data and interleaved over ``--repeats`` rounds (the best round of each is kept, which tolerates a
machine shared with other jobs). The shares are of the processing time (model loading excluded): captioning,
augmentation (sampling + RandAugment replay + per-teacher resize/normalise), teacher forwards (image and text), and
the rest (reading the input, image decode, shard writing). Teachers: two tiny open_clip ViTs, at the crop size and
at half of it.

The tiny models make the model shares small; the numbers show the fixed per-sample cost of the pipeline that real
teachers and captioners add their forwards to.
"""

import argparse
import io
import os
import sys
import tarfile
import tempfile

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
        configs = [(name, spec, "fp32") for name, spec in captioners.items()]
        configs.append(("tiny CoCa (open_clip)", captioners["tiny CoCa (open_clip)"], "bf16"))
        data = write_dataset(os.path.join(tmp, "data"), samples, per_shard=max(samples // 2, 1))
        best: dict = {}
        for round_ in range(repeats):
            for index, (name, captioner, dtype) in enumerate(configs):
                summary = reinforce(data, os.path.join(tmp, f"out{round_}_{index}"), teachers, captioner,
                                    num_augmentations=num_aug, num_captions=num_captions,
                                    max_caption_tokens=max_tokens, crop_size=crop,
                                    dtype=dtype, batch_size=16, teacher_batch_size=128, progress=False, device="cpu")
                rate = summary["num_uids"] / summary["seconds"]
                if index not in best or rate > best[index][0]:
                    best[index] = (rate, summary)
    intro = (f"CPU, {torch.get_num_threads()} torch threads; {samples} samples of 320x256 JPEG; crop {crop}; "
             f"{num_aug} augmentations; {num_captions} captions (max {max_tokens} tokens); teachers: 2 tiny open_clip "
             f"ViTs ({crop} px, {crop // 2} px); batch 16; best of {repeats} interleaved rounds")
    table = ["| captioner | dtype | samples/s | captioning | augmentation | teacher forwards | other |",
             "|---|---|---:|---:|---:|---:|---:|"]
    raw = []
    for index, (name, _, dtype) in enumerate(configs):
        rate, summary = best[index]
        share = shares(summary["timings"], summary["seconds"])
        table.append(f"| {name} | {dtype} | {rate:.1f} | {share['caption']:.0f} % | {share['augment']:.0f} % | "
                     f"{share['teachers']:.0f} % | {share['other']:.0f} % |")
        raw.append({"captioner": name, "dtype": dtype, "samples_per_s": rate, "seconds": summary["seconds"],
                    "timings_s": summary["timings"]})
    print(intro, "", *table, sep="\n")
    write_results("bench_reinforce", args, header, intro, ["\n".join(table)], raw)


if __name__ == "__main__":
    main()
