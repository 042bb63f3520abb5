"""Captioning speed: the tool's KV-cached CoCa decoding against open_clip's own ``CoCa.generate``, same model,
same images, side by side.

    python benchmarks/bench_captioning.py            # 8 images x 5 captions, max 30 tokens, tiny CoCa at 112 px
    python benchmarks/bench_captioning.py --quick    # CI smoke run (2 images x 2 captions, 8 tokens; no claims)

Candidates, each in fp32 and under bf16 autocast: open_clip's ``generate`` on the images repeated once per caption
(greedy = ``generation_type="top_k", top_k=1``; ``top_p=0.9``), and ``dataset_scripts.coca_decoding``'s
``generate_captions`` (greedy; the seeded top-p draw of the tool). Greedy rows are compared token by token with
open_clip's (fp32 must be identical); sampled rows cannot be (open_clip draws from the global generator), their
per-step distribution is tested in tests/test_coca_decoding.py. The tiny CoCa's logits have std 6
(``tiny_open_clip_coca``), so its nucleus holds about 1-60 tokens as a trained captioner's does; its greedy
captions rarely end before the 30-token limit, which favours neither side much (open_clip's cost per caption grows
with the square of the length, ours linearly).

open_clip 3.3 disables ``generate`` under transformers >= 5 (its beam search needs the removed
``BeamSearchScorer``); the top-k / top-p branch timed here needs only the warpers, which are put back.
"""

import os
import sys
import tempfile

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from common import (benchmark_parser, format_ratio, header_line, interleaved_times, machine_header,  # noqa: E402
                    median_ms, parse_benchmark_args, write_results)

from dataset_scripts.captioners import SeededNucleusSampler, row_uniforms  # noqa: E402
from dataset_scripts.coca_decoding import generate_captions, greedy  # noqa: E402
from dataset_scripts.tiny_reinforce_models import tiny_open_clip_coca  # noqa: E402


def enable_open_clip_generate() -> None:
    import open_clip.coca_model as coca_model
    import transformers

    coca_model._has_transformers = True
    coca_model.GENERATION_TYPES.update(top_k=transformers.TopKLogitsWarper, top_p=transformers.TopPLogitsWarper)


def main():
    parser = benchmark_parser(__doc__, "2 images x 2 captions, 8 tokens", calls_per_round=1)
    parser.set_defaults(rounds=3, threads=1)
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--captions", type=int, default=5)
    args = parse_benchmark_args(parser)
    import open_clip

    enable_open_clip_generate()
    images, per_image, max_tokens, size = (2, 2, 8, 32) if args.quick else (args.images, args.captions, 30, 112)
    header = machine_header("fp32 / bf16 autocast (per row)", args.threads)
    print(header_line(header), flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        spec = tiny_open_clip_coca(os.path.join(tmp, "coca"), image_size=size)
        model = open_clip.create_model(spec[len("open_clip:"):]).eval()
    pixels = torch.randn(images, 3, size, size)
    repeated = pixels.repeat_interleave(per_image, 0)
    sampler = SeededNucleusSampler(row_uniforms(range(images * per_image), max_tokens + 1), top_p=0.9)
    outputs = {}

    def run(name, dtype, fn):
        def call():
            with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == "bf16"):
                outputs[name, dtype] = fn()
        return call

    methods = {
        "open_clip generate, greedy": lambda: model.generate(repeated, generation_type="top_k", top_k=1,
                                                             seq_len=max_tokens, min_seq_len=5),
        "ours (KV cache), greedy": lambda: generate_captions(model, pixels, per_image, greedy, max_tokens=max_tokens),
        "open_clip generate, top-p 0.9": lambda: model.generate(repeated, generation_type="top_p", top_p=0.9,
                                                                seq_len=max_tokens, min_seq_len=5),
        "ours (KV cache), top-p 0.9": lambda: generate_captions(model, pixels, per_image, sampler.draw,
                                                                max_tokens=max_tokens),
    }
    candidates = {(name, dtype): run(name, dtype, fn) for dtype in ("fp32", "bf16") for name, fn in methods.items()}
    times = {}
    for dtype in ("fp32", "bf16"):  # one interleaved schedule per dtype: ratios pair calls seconds apart
        times.update(interleaved_times({key: fn for key, fn in candidates.items() if key[1] == dtype}, args.schedule,
                                       warmup=0))
    intro = (f"CPU, {args.threads} torch thread(s); tiny CoCa (1+1 text / decoder layers, width 32, 49,408 tokens) at "
             f"{size} px; {images} images x {per_image} captions, at most {max_tokens} tokens; "
             f"{args.schedule.describe()}")
    table = ["| dtype | decoding | open_clip images/s | ours images/s | speed-up | same tokens as open_clip |",
             "|---|---|---:|---:|---:|---|"]
    raw = {"times_s": {f"{name} / {dtype}": t for (name, dtype), t in times.items()}}
    for dtype in ("fp32", "bf16"):
        for kind in ("greedy", "top-p 0.9"):
            theirs, ours = times[f"open_clip generate, {kind}", dtype], times[f"ours (KV cache), {kind}", dtype]
            if kind == "greedy":
                a, b = outputs[f"open_clip generate, {kind}", dtype], outputs[f"ours (KV cache), {kind}", dtype]
                same_rows = sum(torch.equal(x[x != 0], y[y != 0]) for x, y in zip(a, b))
                same = f"{same_rows} of {a.shape[0]} captions"
                if dtype == "fp32" and same_rows != a.shape[0]:
                    raise SystemExit(f"error: fp32 greedy tokens differ from open_clip's in {a.shape[0] - same_rows} "
                                     f"captions")
            else:
                same = "distribution (tests/test_coca_decoding.py)"
            table.append(f"| {dtype} | {kind} | {images / (median_ms(theirs) / 1e3):.2f} | "
                         f"{images / (median_ms(ours) / 1e3):.2f} | {format_ratio(theirs, ours)} | {same} |")
    print(intro, "", *table, sep="\n")
    write_results("bench_captioning", args, header, intro, ["\n".join(table)], raw)


if __name__ == "__main__":
    main()
