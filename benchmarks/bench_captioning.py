"""Captioning speed: the tool's KV-cached CoCa decoding against open_clip's own ``CoCa.generate``, same model,
same images, side by side.

    python benchmarks/bench_captioning.py            # 8 images x 5 captions, max 30 tokens, tiny CoCa at 112 px
    python benchmarks/bench_captioning.py --quick    # CI smoke run (2 images x 2 captions, 8 tokens; no claims)
    python benchmarks/bench_captioning.py --paper-flops  # FLOPs per sample at the paper's sizes -> _paper results

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

from common import (
    benchmark_parser,
    count_flops,
    format_ratio,
    header_line,
    interleaved_times,
    machine_header,
    median_ms,
    parse_benchmark_args,
    write_results,
)

from dataset_scripts.captioners import SeededNucleusSampler, row_uniforms
from dataset_scripts.coca_decoding import generate_captions, greedy
from dataset_scripts.tiny_reinforce_models import tiny_open_clip_coca


def enable_open_clip_generate() -> None:
    import transformers
    from open_clip import coca_model

    coca_model._has_transformers = True
    coca_model.GENERATION_TYPES.update(top_k=transformers.TopKLogitsWarper, top_p=transformers.TopPLogitsWarper)


def main():
    parser = benchmark_parser(__doc__, "2 images x 2 captions, 8 tokens", calls_per_round=1)
    parser.set_defaults(rounds=3, threads=1)
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--captions", type=int, default=5)
    parser.add_argument("--paper-flops", action="store_true",
                        help="count the FLOPs per sample of the paper's CoCa ViT-L/14 captioner (open_clip's generate "
                             "and ours) and ViT-L/14 teachers, random weights, instead of timing the tiny CoCa")
    args = parse_benchmark_args(parser)
    if args.paper_flops:
        return paper_flops(args)
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


def paper_flops(args) -> None:
    """FLOPs (torch's FlopCounterMode; a multiply-add counts 2) per sample at the paper's sizes: CoCa ViT-L/14
    decoding 5 captions of 30 tokens (open_clip: ``fixed_output_length=True`` as Apple's generator; ours: a choice
    that never ends a caption early, so both decode all 30), and the ViT-L/14 teachers' image and text forwards.
    Random weights (no download); the FLOPs do not depend on them. bf16 autocast only for speed."""
    import open_clip

    enable_open_clip_generate()
    captions, tokens, augmentations, teachers = 5, 30, 10, 2
    header = machine_header("bf16 autocast (FLOP counts)", args.threads)
    print(header_line(header), flush=True)
    coca = open_clip.create_model("coca_ViT-L-14").eval().requires_grad_(False)  # FlopCounterMode: no autograd
    torch.nn.init.normal_(coca.text_decoder.text_projection, std=coca.text_decoder.width ** -0.5)  # else torch.empty
    teacher = open_clip.create_model("ViT-L-14").eval().requires_grad_(False)
    image = torch.randn(1, 3, 224, 224)
    text = open_clip.get_tokenizer("ViT-L-14")(["a photo of a dog on the grass"])

    def never_ends(logits, step, rows):
        return logits.index_fill(1, torch.tensor([0, 49407]), float("-inf")).argmax(dim=-1)

    calls = {
        "CoCa ViT-L/14, open_clip generate": lambda: coca.generate(
            image.repeat(captions, 1, 1, 1), generation_type="top_k", top_k=1, seq_len=tokens,
            fixed_output_length=True),
        "CoCa ViT-L/14, ours (KV cache)": lambda: generate_captions(coca, image, captions, never_ends,
                                                                    max_tokens=tokens),
        "teacher image forward (ViT-L/14, 224 px)": lambda: teacher.encode_image(image),
        "teacher text forward (ViT-L/14, 77 tokens)": lambda: teacher.encode_text(text),
    }
    flops = {}
    torch.backends.mha.set_fastpath_enabled(False)  # the fused MHA kernel hides its matmuls from the counter
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        for name, call in calls.items():
            flops[name] = count_flops(call)
            print(f"{name}: {flops[name] / 1e9:.1f} GFLOP", flush=True)
    teacher_flops = teachers * (augmentations * flops["teacher image forward (ViT-L/14, 224 px)"]
                                + (1 + captions) * flops["teacher text forward (ViT-L/14, 77 tokens)"])
    intro = (f"FLOPs per sample (torch FlopCounterMode, a multiply-add = 2 FLOPs; random weights): {captions} captions "
             f"of {tokens} tokens, {augmentations} augmentations, {teachers} teachers (each: {augmentations} image "
             f"forwards + {1 + captions} text forwards)")
    table = ["| part | GFLOP per sample | share of the sample, open_clip decoding | share, ours |",
             "|---|---:|---:|---:|"]
    before = teacher_flops + flops["CoCa ViT-L/14, open_clip generate"]
    after = teacher_flops + flops["CoCa ViT-L/14, ours (KV cache)"]
    rows = [(f"{teachers} ViT-L/14 teachers", teacher_flops, teacher_flops / before, teacher_flops / after),
            ("CoCa ViT-L/14, open_clip generate", flops["CoCa ViT-L/14, open_clip generate"],
             flops["CoCa ViT-L/14, open_clip generate"] / before, None),
            ("CoCa ViT-L/14, ours (KV cache)", flops["CoCa ViT-L/14, ours (KV cache)"], None,
             flops["CoCa ViT-L/14, ours (KV cache)"] / after),
            ("total (open_clip decoding -> ours)", None, 1.0, 1.0)]
    for name, value, share_before, share_after in rows:
        cells = [f"{value / 1e9:,.0f}" if value is not None else f"{before / 1e9:,.0f} -> {after / 1e9:,.0f}"]
        cells += ["-" if x is None else f"{100 * x:.0f} %" for x in (share_before, share_after)]
        table.append(f"| {name} | " + " | ".join(cells) + " |")
    print(intro, "", *table, sep="\n")
    write_results("bench_captioning_paper", args, header, intro, ["\n".join(table)], {"flops": flops})


if __name__ == "__main__":
    main()
