"""Speed of the torchvision image processor (AutoImageProcessor's default) against the PIL path.

    python benchmarks/bench_image_processor.py           # writes benchmarks/results/bench_image_processor.md/.json
    python benchmarks/bench_image_processor.py --quick   # smoke run for CI: no timing claims, a temporary results dir

Inputs are photo-sized images of mixed resolutions, as a dataset hands them over, either decoded PIL images or uint8
CHW tensors (e.g. `torchvision.io.decode_image`); output is the model's `pixel_values` for a preset: MobileCLIP-S0
(256 px, bilinear, no normalisation) and MobileCLIP2-L-14 (224 px, bicubic, OpenAI statistics). Candidates:

* ``PIL path``: `MobileCLIPImageProcessorPil` on PIL images (the baseline).
* ``torchvision, PIL images``: `MobileCLIPImageProcessor` on the same PIL images: PIL's resize (so the pixels equal the
  baseline's), then crop, rescale and normalise as batched torch ops.
* ``torchvision, tensors``: `MobileCLIPImageProcessor` on uint8 tensors of the same images: torchvision's resize too
  (within 1/255 of PIL's; tests/test_image_processing_fast.py).

Batches of 1 and 32; a speed-up is baseline time / candidate time per round (above 1: faster). torch runs with 1
intra-op thread by default, as in a DataLoader worker (where preprocessing runs); on a machine shared with other jobs,
more threads make torch's many small ops wait on each other (README: "Speed").
"""


import numpy as np
import PIL.Image
import torch
import torchvision
import transformers
from common import (
    benchmark_parser,
    format_ratio,
    header_line,
    interleaved_times,
    machine_header,
    median_ms,
    parse_benchmark_args,
    write_results,
)

from modeling_mobileclip import MobileCLIPProcessor

SIZES = [(640, 480), (800, 600), (1024, 768), (500, 375), (768, 1024), (1200, 800)]
VARIANTS = ["mobileclip-s0", "mobileclip2-l-14"]


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


CANDIDATES = {"PIL path": ("pil", "pil images"), "torchvision, PIL images": ("torchvision", "pil images"),
              "torchvision, tensors": ("torchvision", "tensors")}
BASELINE = "PIL path"


def measure(args) -> list[tuple]:
    rows = []
    for variant in VARIANTS:
        processors = {backend: MobileCLIPProcessor.from_variant(variant, backend=backend).image_processor
                      for backend in ("pil", "torchvision")}
        for batch in args.batches:
            inputs = {"pil images": photos(batch)}
            inputs["tensors"] = [torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1)
                                 for image in inputs["pil images"]]
            calls = {name: (lambda p=processors[backend], x=inputs[kind]: p(x, return_tensors="pt"))
                     for name, (backend, kind) in CANDIDATES.items()}
            times = interleaved_times(calls, args.schedule)
            rows.append((variant, batch, {name: (median_ms(t), format_ratio(times[BASELINE], t))
                                          for name, t in times.items()}))
    return rows


def markdown(rows: list[tuple]) -> str:
    header = " | ".join(f"{name}: ms / batch (img/s), speed-up" for name in CANDIDATES)
    lines = [f"| preset | batch | {header} |", "|---|---:|" + "---:|" * len(CANDIDATES)]
    for variant, batch, results in rows:
        cells = " | ".join(f"{ms:.1f} ({batch / ms * 1e3:.0f}), {ratio}" for ms, ratio in results.values())
        lines.append(f"| {variant} | {batch} | {cells} |")
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = benchmark_parser(__doc__, quick="batches of 1 and 2")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 32], help="batch sizes")
    parser.set_defaults(threads=1)
    args = parse_benchmark_args(parser, argv)
    if args.quick:
        args.batches = [1, 2]
    header = machine_header("fp32 pixel_values (uint8 / PIL inputs)", args.threads)
    print(header_line(header))
    rows = measure(args)
    table = markdown(rows)
    intro = (f"Photo-like images (500x375 to 1200x800) as decoded PIL images or uint8 CHW tensors -> `pixel_values`; "
             f"torchvision {torchvision.__version__}, transformers {transformers.__version__}, Pillow "
             f"{PIL.__version__}. Timing: {args.schedule.describe()}; speed-up: PIL path time / candidate time. The "
             f"torchvision path gives the PIL path's pixels on PIL images and stays within 1/255 on tensors "
             f"(tests/test_image_processing_fast.py)." + ("  [--quick: not a measurement]" if args.quick else ""))
    print(intro + "\n\n" + table)
    write_results("bench_image_processor", args, header, intro, [table],
                  raw=[{"preset": v, "batch": b, "ms": {k: ms for k, (ms, _) in r.items()}} for v, b, r in rows])


if __name__ == "__main__":
    main()
