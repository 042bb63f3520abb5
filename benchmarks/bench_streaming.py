"""The streaming training data path on realistic DataCompDR shards, against bare JPEG decode + RandomResizedCrop.

    python benchmarks/bench_streaming.py              # throughput table (photo JPEGs, 30 augs x 1536-d, 5 captions)
    python benchmarks/bench_streaming.py --memory     # RSS of a training run on 20 vs 400 shards; cache disk written
    python benchmarks/bench_streaming.py --scale      # 100k samples in 400 shards, 2 ranks x 2 workers, 1 epoch,
                                                      # then a SIGKILL mid-epoch and --resume, uid sequences compared
    python benchmarks/bench_streaming.py --quick      # CI smoke run: tiny, no claims

Throughput, per CPU second of this process (1 torch thread, as in a DataLoader worker), interleaved rounds:

* ``whole path``: `StreamBatches` (training/stream_batches.py) over the shards: tar read, npz decode, uid join of
  the img2dataset image shards and the captions, JPEG decode, replay of one stored augmentation at 256 px (S0's
  resolution), tokenisation of the GT + one synthetic caption, collate into the training batch;
* ``bare decode + RRC``: PIL decode of the same JPEG bytes (already in memory) + torchvision RandomResizedCrop(256).
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import random
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np
import PIL.Image
import torch
from torchvision import transforms

from dataset_scripts import augment_replay

ROOT = Path(__file__).resolve().parents[1]
SIZES = [(640, 480), (800, 600), (1024, 768), (500, 375), (768, 1024), (1200, 800)]


def add_member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def photo_jpeg(rng: np.random.Generator, size: tuple[int, int]) -> bytes:
    width, height = size
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    base = np.stack([x / width, y / height, np.sin(x / 37.0 + y / 53.0) * 0.5 + 0.5], axis=-1) * 200
    buffer = io.BytesIO()
    PIL.Image.fromarray(np.clip(base + rng.normal(0, 20, base.shape), 0, 255).astype(np.uint8)).save(
        buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def write_shards(root: Path, num_shards: int, per_shard: int, *, sizes, num_aug: int, dim: int, num_syn: int,
                 seed: int = 0) -> tuple[list[str], list[str]]:
    """DataCompDR shards (uid-keyed npz/syn/paug/json) + img2dataset shards (jpg + json with uid, txt caption)."""
    rng, prng = np.random.default_rng(seed), random.Random(seed)
    (root / "dr").mkdir(parents=True, exist_ok=True)
    (root / "images").mkdir(parents=True, exist_ok=True)
    dr, images = [], []
    for shard in range(num_shards):
        dr.append(str(root / "dr" / f"{shard:08d}.tar"))
        images.append(str(root / "images" / f"{shard:05d}.tar"))
        with tarfile.open(dr[-1], "w") as out, tarfile.open(images[-1], "w") as img:
            for k in range(per_shard):
                uid, key, size = f"{shard:08x}{k:024x}", f"{shard:05d}{k:04d}", sizes[(shard + k) % len(sizes)]
                add_member(img, f"{key}.jpg", photo_jpeg(rng, size))
                add_member(img, f"{key}.json", json.dumps({"uid": uid, "width": size[0], "height": size[1]}).encode())
                add_member(img, f"{key}.txt", f"a photo, number {k} of shard {shard}".encode())
                arrays = {"image_emb": rng.standard_normal((num_aug, dim)).astype(np.float32),
                          "text_emb": rng.standard_normal((1 + num_syn, dim)).astype(np.float32)}
                npz = io.BytesIO()
                np.savez(npz, **arrays)
                add_member(out, f"{uid}.url.txt", f"https://example.com/{uid}.jpg".encode())
                add_member(out, f"{uid}.json", json.dumps({"uid": uid, "sha256": "0" * 64}).encode())
                add_member(out, f"{uid}.syn.json", json.dumps(
                    {"syn_text": [f"a synthetic caption {j} of image {k}" for j in range(num_syn)]}).encode())
                add_member(out, f"{uid}.paug.json", json.dumps(
                    {"param_aug": [augment_replay.sample_params(prng, size) for _ in range(num_aug)]}).encode())
                add_member(out, f"{uid}.npz", npz.getvalue())
    return dr, images


def teachers(dim: int) -> list[dict]:
    return [{"model": f"teacher-{k}", "embedding_dim": dim // 2, "logit_scale": 100.0} for k in range(2)]


def stream_batches(dr, images, dim, cache, batch_size=32, shuffle_buffer=256):
    import datasets

    import dataset_scripts  # noqa: F401
    from modeling_mobileclip.training.stream_batches import StreamBatches, shard_stream
    from modeling_mobileclip.training.students import MobileCLIPStudent

    ds = datasets.load_dataset("datacompdr", data_files={"train": dr}, split="train", streaming=True,
                               image_dir=images, captions=images, teachers=teachers(dim), cache_dir=str(cache),
                               verify_images=False)
    student = MobileCLIPStudent("mobileclip-s0")
    return StreamBatches(shard_stream(ds, rank=0, world_size=1), student.replay_transform(), student.tokenize,
                         caption_mode="gt+syn", mix_ratio=0.5, seed=0, batch_size=batch_size,
                         shuffle_buffer=shuffle_buffer, rank=0)


def throughput(args, work: Path) -> dict:
    per_shard = 8 if args.quick else 64
    dr, images = write_shards(work, 2 if args.quick else 4, per_shard, sizes=SIZES, num_aug=30, dim=1536, num_syn=5)
    jpegs = [tarfile.open(p).extractfile(m).read() for p in images for m in tarfile.open(p).getmembers()
             if m.name.endswith(".jpg")]
    total = len(jpegs)
    batches = stream_batches(dr, images, 1536, work / "cache", batch_size=8 if args.quick else 32)
    rrc = transforms.RandomResizedCrop(256, interpolation=transforms.InterpolationMode.BILINEAR)

    def whole_path():
        it = iter(batches)
        return sum(len(next(it)["uids"]) for _ in range(total // batches.batch_size))

    def bare():
        for data in jpegs:
            rrc(PIL.Image.open(io.BytesIO(data)).convert("RGB"))
        return len(jpegs)

    def read_only():  # where the rest of the time goes: the builder's stream alone, no image work
        return sum(1 for _ in batches.ds)

    def replay_only():  # the replay of one stored augmentation per sample, from JPEG bytes in memory
        for data, entry in zip(jpegs, entries):
            augment_replay.replay_pil(data, entry, 256, "bilinear")
        return len(jpegs)

    entries = [ex["param_aug"][0] for ex in batches.ds]
    candidates = {"whole path": whole_path, "bare decode + RRC": bare,
                  "of which: tar read + npz + joins + typed columns (stream only)": read_only,
                  "of which: decode + replay of one stored augmentation": replay_only}
    for run in candidates.values():
        run()  # warm-up: join indexes, page cache, imports
    rates = {name: [] for name in candidates}
    for round_ in range(args.rounds):
        for name in (list(candidates) if round_ % 2 == 0 else list(candidates)[::-1]):
            start = time.process_time()
            count = candidates[name]()
            rates[name].append(count / (time.process_time() - start))
    ratios = [a / b for a, b in zip(rates["whole path"], rates["bare decode + RRC"])]
    return {"samples": total, "rounds": args.rounds,
            "per_core": {name: float(np.median(r)) for name, r in rates.items()},
            "ratio": float(np.median(ratios)), "ratio_iqr": [float(np.percentile(ratios, 25)),
                                                             float(np.percentile(ratios, 75))]}


def training_step_flops() -> dict:
    """Forward GFLOP per sample of S0 and B (image tower + the two text forwards of gt+syn), counted by torch."""
    from modeling_mobileclip import MobileCLIPConfig, MobileCLIPModel

    out = {}
    for variant in ("mobileclip-s0", "mobileclip-b"):
        config = MobileCLIPConfig.from_variant(variant)
        model = MobileCLIPModel(config).eval()
        size = config.vision_config.image_size
        pixels, ids = torch.zeros(1, 3, size, size), torch.zeros(1, 77, dtype=torch.long)
        from common import count_flops

        with torch.no_grad():
            image = count_flops(lambda: model.get_image_features(pixel_values=pixels))
            text = count_flops(lambda: model.get_text_features(input_ids=ids))
        out[variant] = (image + 2 * text) / 1e9
    return out


def train_command(dr, images, dim: int, work: Path, out: Path, *extra) -> list[str]:
    """`train_accelerate.py` streaming the shards of `dr`/`images` into `out` (tiny student, a 4-image eval set)."""
    eval_dir = work / "eval"
    for k in range(4):
        folder = eval_dir / f"class{k % 2}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{k}.jpg").write_bytes(photo_jpeg(np.random.default_rng(k), (64, 64)))
    shards, image_shards = str(Path(dr[0]).parent / "*.tar"), str(Path(images[0]).parent / "*.tar")
    return [str(ROOT / "train_accelerate.py"), "--train-data", shards, "--image-dir", image_shards,
            "--captions", image_shards, "--eval-data", str(eval_dir), "--model", "tiny", "--teacher-dims",
            f"{dim // 2},{dim // 2}", "--teacher-logit-scales", "100,100", "--data-mode", "stream",
            "--eval-every", "1000000", "--report-to", "none", "--no-progress", "--cache-dir", str(work / "cache"),
            "--output-dir", str(out), *extra]


ENV = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))


def rss_of_training(dr, images, dim: int, steps: int, work: Path) -> tuple[float, int]:
    """Peak RSS (MB, the training process and its DataLoader workers' largest) of a streaming run, and the bytes its
    caches (join indexes) wrote."""
    command = train_command(dr, images, dim, work, work / f"out-{len(dr)}", "--max-steps", str(steps),
                            "--batch-size", "16", "--num-workers", "2", "--checkpoint-every", "1000000")
    code = ("import resource, runpy, sys; sys.argv = " + repr(command) + "; runpy.run_path(sys.argv[0], "
            "run_name='__main__'); print('MAXRSS', max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, "
            "resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss))")
    shutil.rmtree(work / "cache", ignore_errors=True)
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=ENV, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-3000:])
    written = sum(f.stat().st_size for f in (work / "cache").rglob("*") if f.is_file())
    return int(done.stdout.split("MAXRSS")[-1].split()[0]) / 1024, written


def memory(args, work: Path) -> dict:
    rows = {}
    for count in ((2, 8) if args.quick else (20, 400)):
        root = work / f"shards-{count}"
        dr, images = write_shards(root, count, 20, sizes=[(128, 96)], num_aug=4, dim=32, num_syn=2, seed=count)
        data_bytes = sum(os.path.getsize(p) for p in dr + images)
        rss, written = rss_of_training(dr, images, 32, 4 if args.quick else 60, work)
        rows[count] = {"peak_rss_mb": rss, "cache_bytes": written, "data_bytes": data_bytes, "samples": 20 * count}
    return rows


def throughput_tables(args, work: Path) -> tuple[str, list[str], dict]:
    result = throughput(args, work)
    flops = training_step_flops()
    per_core = result["per_core"]["whole path"]
    intro = (f"{result['samples']} samples (photo JPEGs {sorted(set(SIZES))}; npz 30 x 1536 fp32; 5 synthetic "
             f"captions), median of {result['rounds']} interleaved rounds, samples per CPU second of the process; "
             f"whole path / bare: **{result['ratio']:.2f}x** [IQR {result['ratio_iqr'][0]:.2f}-"
             f"{result['ratio_iqr'][1]:.2f}].")
    rates = "\n".join(["| path | samples/s per core | ms per sample |", "|---|---:|---:|",
                        *[f"| {k} | {v:.1f} | {1000 / v:.2f} |" for k, v in result["per_core"].items()]])
    cores = ["| student | forward GFLOP/sample (image + GT + synthetic text) | samples/s per A100 (estimate: 35 % of "
             "312 bf16 TFLOP/s, training = 3 x forward) | cores of the whole path per A100 |", "|---|---:|---:|---:|"]
    for variant, gflop in flops.items():
        rate = 0.35 * 312e3 / (3 * gflop)
        cores.append(f"| {variant} | {gflop:.2f} | {rate:,.0f} | {math.ceil(rate / per_core)} |")
    return intro, [rates, "\n".join(cores)], {**result, "forward_gflop": flops}


def memory_tables(args, work: Path) -> tuple[str, list[str], dict]:
    rows = memory(args, work)
    small, large = rows.values()
    intro = (f"`train_accelerate.py` streaming (tiny student, batch 16, 2 DataLoader workers, "
             f"{4 if args.quick else 60} steps); peak RSS is the largest of the training process and its workers; "
             f"RSS ratio {large['peak_rss_mb'] / small['peak_rss_mb']:.3f} for "
             f"{large['samples'] / small['samples']:.0f}x the data.")
    table = ["| shards | samples | data on disk | cache written (join indexes) | peak RSS of the run |",
             "|---:|---:|---:|---:|---:|"]
    table += [f"| {n} | {r['samples']} | {r['data_bytes'] / 1e6:.1f} MB | {r['cache_bytes'] / 1e6:.2f} MB | "
              f"{r['peak_rss_mb']:.0f} MB |" for n, r in rows.items()]
    return intro, ["\n".join(table)], rows


def main() -> None:
    from common import add_results_option, header_line, machine_header, write_results

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--memory", action="store_true", help="RSS and cache disk, 20 vs 400 shards")
    parser.add_argument("--scale", action="store_true", help="100k samples / 400 shards, epoch + kill/resume")
    parser.add_argument("--rounds", type=int, default=7, help="interleaved rounds (the median is reported)")
    parser.add_argument("--quick", action="store_true", help="CI smoke run: tiny, numbers meaningless")
    parser.add_argument("--work-dir", default=None, help="keep the generated shards here (reused by a rerun)")
    add_results_option(parser)
    args = parser.parse_args()
    if args.quick:
        args.rounds = 2
    torch.set_num_threads(1)
    header = machine_header("fp32 (PIL uint8 ops)", threads=1)
    print(header_line(header))
    work = Path(args.work_dir) if args.work_dir else Path(tempfile.mkdtemp(prefix="bench-streaming-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        if args.scale:
            from scale_streaming import scale_test  # benchmarks/scale_streaming.py

            name, (intro, tables, raw) = "bench_streaming_scale", scale_test(work, quick=args.quick)
        elif args.memory:
            name, (intro, tables, raw) = "bench_streaming_memory", memory_tables(args, work)
        else:
            name, (intro, tables, raw) = "bench_streaming", throughput_tables(args, work)
        if args.quick:
            intro += " [--quick: not a measurement]"
        print(intro + "\n\n" + "\n\n".join(tables))
        write_results(name, args, header, intro, tables, raw)
    finally:
        if not args.work_dir:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
