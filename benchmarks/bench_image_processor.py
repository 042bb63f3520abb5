"""Speed of the torchvision image processor (AutoImageProcessor's default) against the exact PIL path.

    python benchmarks/bench_image_processor.py           # writes benchmarks/results/bench_image_processor.md
    python benchmarks/bench_image_processor.py --quick   # smoke run for CI: prints, no timing claims, writes nothing

Both processors get the same decoded PIL photos (photo-sized, mixed resolutions, as a dataset hands them over) and
return the model's `pixel_values` for a preset: MobileCLIP-S0 (256 px, bilinear, no normalisation) and MobileCLIP2-L-14
(224 px, bicubic, OpenAI statistics). Batches of 1 and 32; the ratio is PIL time / torchvision time per round (above 1:
torchvision is faster). The outputs agree within 1/255 (tests/test_image_processing_fast.py). torch runs with 1
intra-op thread by default, as in a DataLoader worker (where preprocessing runs); on a machine shared with other jobs,
more threads make torch's many small ops wait on each other (README: "Speed").
"""

import os
import platform
import sys
from pathlib import Path

import numpy as np
import PIL.Image
import torch
import torchvision
import transformers
from common import benchmark_parser, format_ratio, interleaved_times, median_ms, parse_benchmark_args

from modeling_mobileclip import MobileCLIPProcessor

SIZES = [(640, 480), (800, 600), (1024, 768), (500, 375), (768, 1024), (1200, 800)]
VARIANTS = ["mobileclip-s0", "mobileclip2-l-14"]
RESULTS = Path(__file__).resolve().parent / "results" / "bench_image_processor.md"


def photos(count: int, seed: int = 0) -> list[PIL.Image.Image]:
    """Photo-like RGB images (smooth colour fields, texture, noise) at typical web-photo resolutions."""
    rng = np.random.default_rng(seed)
    images = []
    for index in range(count):
        width, height = SIZES[index % len(SIZES)]
        coarse = PIL.Image.fromarray(rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)).resize((width, height),
                                                                                              PIL.Image.BICUBIC)
        pixels = np.asarray(coarse, dtype=np.float32) + rng.normal(0, 12, (height, width, 3))
        images.append(PIL.Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)))
    return images


def measure(args) -> list[tuple]:
    rows = []
    for variant in VARIANTS:
        processors = {backend: MobileCLIPProcessor.from_variant(variant, backend=backend).image_processor
                      for backend in ("pil", "torchvision")}
        for batch in args.batches:
            images = photos(batch)
            times = interleaved_times({backend: (lambda p=p, images=images: p(images, return_tensors="pt"))
                                       for backend, p in processors.items()}, args.schedule)
            rows.append((variant, batch, *(median_ms(times[b]) for b in ("pil", "torchvision")),
                         format_ratio(times["pil"], times["torchvision"])))
    return rows


def markdown(rows: list[tuple], args) -> str:
    lines = ["| preset | batch | PIL ms / batch | torchvision ms / batch | PIL img/s | torchvision img/s | "
             "speed-up (PIL / torchvision) |", "|---|---:|---:|---:|---:|---:|---:|"]
    for variant, batch, pil_ms, tv_ms, ratio in rows:
        lines.append(f"| {variant} | {batch} | {pil_ms:.1f} | {tv_ms:.1f} | {batch / pil_ms * 1e3:.0f} | "
                     f"{batch / tv_ms * 1e3:.0f} | {ratio} |")
    machine = (f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__} "
               f"({torch.get_num_threads()} intra-op threads), torchvision {torchvision.__version__}, "
               f"transformers {transformers.__version__}, Pillow {PIL.__version__}, Python {sys.version.split()[0]}")
    return "\n".join([
        "# Image processor speed: torchvision backend vs PIL path", "",
        "`python benchmarks/bench_image_processor.py` (tests/test_image_processing_fast.py checks the two agree "
        "within 1/255). Inputs: decoded PIL photos, mixed resolutions from 500x375 to 1200x800; output: "
        "`pixel_values` (float32, CPU).", "",
        f"Machine: {machine}. Timing: {args.schedule.describe()}.", "", *lines, ""])


def main(argv=None) -> None:
    parser = benchmark_parser(__doc__, quick="batches of 1 and 2")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 32], help="batch sizes")
    parser.set_defaults(threads=1)
    args = parse_benchmark_args(parser, argv)
    if args.quick:
        args.batches = [1, 2]
    table = markdown(measure(args), args)
    print(table)
    if not args.quick:
        RESULTS.parent.mkdir(exist_ok=True)
        RESULTS.write_text(table)


if __name__ == "__main__":
    main()
