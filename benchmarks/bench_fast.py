"""The fast path (`optimize_for_inference`) against eager float32, and MobileCLIP-S0 against CLIP ViT-B/16 with both
on their best path from the same tooling (bf16 + inductor with frozen weights), in one process.

Rows (batch 1: one 256 / 224 px image + one 77-token caption per call): S0 eager fp32 un-fused (the baseline of goal
1), fused, and `optimize_for_inference` (the plan printed below the table); transformers' CLIP ViT-B/16 with random
weights in eager fp32, eager bf16, and bf16 compiled by `compile_for_inference`; 2048^2 matmuls in fp32 and bf16 run
in the same rounds, so each row's fraction of the GEMM rate in its precision is a per-round ratio. FLOPs are
FlopCounterMode's count (convolutions, matmuls, attention; a multiply-add is 2; element-wise ops are not counted) on
the eager float32 model, which does the same arithmetic as the compiled one. A per-op profile (torch.profiler) of the
S0 image tower in the plan's precision and layout says where the time goes and how fast each kind of op runs.

    python benchmarks/bench_fast.py                 # goals 1-3, the docs tables (~4 min: compiling is most of it)
    python benchmarks/bench_fast.py --throughput    # goal 4: batch 64 S0 / S2 image towers vs timm and open_clip
    python benchmarks/bench_fast.py --plans         # each S0 tower alone under each precision / compile choice
    python benchmarks/bench_fast.py --quick         # CI smoke run: tiny model, 1-layer CLIP, nothing compiled

Writes benchmarks/results/bench_fast.md and .json (--throughput: bench_fast_throughput, --plans: bench_fast_plans;
--results-dir / --results-tag to change).
"""

import copy

import torch
from bench_vs_clip import clip_vit_b16
from common import (Schedule, benchmark_parser, caption_ids, count_flops, format_ratio, header_line,
                    interleaved_times, machine_header, median_ms, paired_ratio, parse_benchmark_args, tiny_config,
                    trained_magnitudes, write_results)
from torch.profiler import ProfilerActivity, profile

from modeling_mobileclip import MobileCLIPConfig, MobileCLIPModel
from modeling_mobileclip.inference import choose_plan, compile_for_inference, describe_machine, optimize_for_inference

BASELINE = "S0 eager fp32 un-fused"
CLIP_BEST = "CLIP ViT-B/16 bf16 compiled"
UNCOMPILED = "S0 image tower, optimize_for_inference(compile=False)"
GEMM = {"fp32": "matmul 2048^2 fp32", "bf16": "matmul 2048^2 bf16"}


def both(model, pixel_values: torch.Tensor, input_ids: torch.Tensor):
    return lambda: (model.get_image_features(pixel_values=pixel_values).pooler_output,
                    model.get_text_features(input_ids=input_ids).pooler_output)


def image_only(model, pixel_values: torch.Tensor):
    return lambda: model.get_image_features(pixel_values=pixel_values).pooler_output


def clip_candidates(quick: bool, compile: bool) -> tuple[dict, dict]:
    """CLIP ViT-B/16's rows: eager fp32, eager bf16, bf16 + compile_for_inference (each tower)."""
    clip = clip_vit_b16(num_layers=1 if quick else 12)
    pixels, ids = torch.rand(1, 3, 224, 224), caption_ids(1)
    bf16 = copy.deepcopy(clip).to(torch.bfloat16)
    fast = copy.deepcopy(bf16)
    if compile:
        compile_for_inference(fast.vision_model)
        compile_for_inference(fast.text_model)
    rows = {"CLIP ViT-B/16 eager fp32": both(clip, pixels, ids),
            "CLIP ViT-B/16 eager bf16": both(bf16, pixels.bfloat16(), ids),
            CLIP_BEST: both(fast, pixels.bfloat16(), ids),
            "CLIP ViT-B/16 image tower, bf16 compiled": image_only(fast, pixels.bfloat16())}
    flops = {name: count_flops(both(clip, pixels, ids)) for name in rows}
    flops["CLIP ViT-B/16 image tower, bf16 compiled"] = count_flops(image_only(clip, pixels))
    return rows, flops


def s0_candidates(quick: bool, compile: bool) -> tuple[dict, dict, MobileCLIPModel]:
    config = tiny_config() if quick else MobileCLIPConfig.from_variant("mobileclip-s0")
    eager = trained_magnitudes(MobileCLIPModel(config).eval())
    size = config.vision_config.image_size
    pixels, ids = torch.rand(1, 3, size, size), caption_ids(1)
    fused = copy.deepcopy(eager).reparameterize()
    fast = optimize_for_inference(copy.deepcopy(eager), compile="auto" if compile else False)
    uncompiled = optimize_for_inference(copy.deepcopy(eager), compile=False)
    rows = {BASELINE: both(eager, pixels, ids), "S0 eager fp32 fused": both(fused, pixels, ids),
            "S0 optimize_for_inference": both(fast, pixels, ids),
            "S0 image tower, eager fp32 fused": image_only(fused, pixels),
            "S0 image tower, optimize_for_inference": image_only(fast, pixels),
            UNCOMPILED: image_only(uncompiled, pixels)}
    flops = {name: count_flops(both(fused, pixels, ids)) for name in rows}
    flops[BASELINE] = count_flops(both(eager, pixels, ids))
    for name in ("S0 image tower, eager fp32 fused", "S0 image tower, optimize_for_inference", UNCOMPILED):
        flops[name] = count_flops(image_only(fused, pixels))
    return rows, flops, fast


def _op_kind(event) -> str:
    """An aten op's name; convolutions split by kind (depthwise / 1x1 / dense k x k), read off the weight's shape."""
    if event.name == "aten::conv2d" and len(event.input_shapes) > 1 and len(event.input_shapes[1]) == 4:
        _, in_per_group, kh, kw = event.input_shapes[1]
        kind = "depthwise" if in_per_group == 1 else ("1x1" if kh == kw == 1 else "dense")
        return f"conv2d {kind}" + ("" if kind == "1x1" else f" {kh}x{kw}")
    return event.name


def op_profile(fn, calls: int, gemm: float) -> str:
    """Where `fn`'s time goes by op (torch.profiler): share of the time, ms per call and, for the ops the profiler
    counts FLOPs of (convolutions, matmuls), GFLOP/s and the fraction of the GEMM rate (time including the op's
    children, e.g. aten::conv2d's oneDNN call)."""
    with profile(activities=[ProfilerActivity.CPU], with_flops=True, record_shapes=True) as prof:
        for _ in range(calls):
            fn()
    totals: dict[str, list[float]] = {}
    for event in prof.events():
        if event.flops:  # a counted op: its whole time, children included
            entry = totals.setdefault(_op_kind(event), [0.0, 0.0, 0])
            entry[0] += event.cpu_time_total
            entry[1] += event.flops
            entry[2] += 1
    wall = sum(e.cpu_time_total for e in prof.events() if e.cpu_parent is None)
    table = [("| op (eager bf16 channels-last, fused) | share of time | calls per call | ms per call | GFLOP/s | "
              "of GEMM rate |"), "|---|---|---|---|---|---|"]
    counted = 0.0
    for name, (us, flop, count) in sorted(totals.items(), key=lambda item: -item[1][0]):
        counted += us
        rate = flop / 1e9 / (us / 1e6)
        table.append(f"| `{name}` | {us / wall:.0%} | {count / calls:.0f} | {us / 1e3 / calls:.2f} | {rate:.0f} | "
                     f"{rate / gemm:.0%} |")
    table.append(f"| everything else (norms, activations, copies, dispatch) | {max(wall - counted, 0) / wall:.0%} | "
                 f"— | {max(wall - counted, 0) / 1e3 / calls:.2f} | — | — |")
    return "\n".join(table)


def gemm_candidates(size: int = 2048) -> tuple[dict, dict]:
    """2048^2 matmuls in fp32 and bf16, timed in the same rounds as the models, so a model's fraction of the GEMM
    rate is a per-round ratio that the machine's load cancels out of."""
    rows, flops = {}, {}
    for precision, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
        rows[GEMM[precision]] = lambda a=a, b=b: a @ b
        flops[GEMM[precision]] = 2 * size**3
    return rows, flops


def _precision(name: str, plan_dtype: str) -> str:
    if "optimize_for_inference" in name:
        return "bf16" if plan_dtype == "bfloat16" else "fp32"
    return "fp32" if "fp32" in name else "bf16"


def _goal(goal: str, target: float, ratio: tuple[float, float, float], unit: str, percent: bool = False) -> str:
    """A goal's row; met only when the whole interquartile range clears the target, not met when none of it does."""
    median, q1, q3 = ratio
    shown = (lambda v: f"{v:.0%}") if percent else (lambda v: f"{v:.2f}")
    met = "yes" if q1 >= target else ("no" if q3 < target else "within the noise")
    suffix = "" if percent else "x"
    return (f"| {goal} | >= {shown(target)}{suffix} | {shown(median)}{unit} [{shown(q1)}-{shown(q3)}] | {met} |")


def latency(args) -> None:
    compile = not args.quick
    s0_rows, s0_flops, fast = s0_candidates(args.quick, compile)
    clip_rows, clip_flops = clip_candidates(args.quick, compile)
    gemm_rows, gemm_flops = gemm_candidates()
    candidates, flops = {**s0_rows, **clip_rows, **gemm_rows}, {**s0_flops, **clip_flops, **gemm_flops}
    plan_dtype = fast.inference_plan.dtype
    header = machine_header(f"fp32 and {plan_dtype}", args.threads)
    print(header_line(header), flush=True)
    with torch.inference_mode():
        for fn in candidates.values():  # compiles (first call per shape), untimed
            fn()
        times = interleaved_times(candidates, args.schedule)
        gemm = {p: gemm_flops[GEMM[p]] / 1e9 / (median_ms(times[GEMM[p]]) / 1e3) for p in GEMM}
        profile_table = op_profile(s0_rows[UNCOMPILED], 3 if args.quick else 20,
                                   gemm[_precision(UNCOMPILED, plan_dtype)])

    def of_gemm(name: str) -> tuple[float, float, float]:  # per-round (model GFLOP/s) / (GEMM GFLOP/s): median, IQR
        reference = GEMM[_precision(name, plan_dtype)]
        return tuple(r * flops[name] / flops[reference] for r in paired_ratio(times[reference], times[name]))

    table = [("| model, path | GFLOP | ms | GFLOP/s | of GEMM rate (same precision, same rounds) | speed-up vs S0 "
              "eager fp32 un-fused | vs CLIP ViT-B/16 bf16 compiled |"), "|---|---|---|---|---|---|---|"]
    for name, t in times.items():
        rate = flops[name] / 1e9 / (median_ms(t) / 1e3)
        table.append(f"| {name} | {flops[name] / 1e9:.2f} | {median_ms(t):.1f} | {rate:.0f} | {of_gemm(name)[0]:.0%} | "
                     f"{format_ratio(times[BASELINE], t)}x | {format_ratio(times[CLIP_BEST], t)}x |")
    fast_ms, tower = median_ms(times["S0 optimize_for_inference"]), "S0 image tower, optimize_for_inference"
    image_rate = flops[tower] / 1e9 / (median_ms(times[tower]) / 1e3)
    goals = ["| goal | target | measured [interquartile range] | met |", "|---|---|---|---|",
             _goal("1. S0 image + text, fast path vs eager fp32 un-fused", 3.0,
                   paired_ratio(times[BASELINE], times["S0 optimize_for_inference"]), f"x ({fast_ms:.1f} ms)"),
             _goal("2. S0 vs CLIP ViT-B/16, both bf16 compiled", 3.0,
                   paired_ratio(times[CLIP_BEST], times["S0 optimize_for_inference"]), "x"),
             _goal(f"3. S0 image tower GFLOP/s vs the {plan_dtype} GEMM 2048^2", 0.5, of_gemm(tower),
                   f" ({image_rate:.0f} GFLOP/s)", percent=True)]
    intro = (f"cpu, {args.threads} threads, batch 1, {args.schedule.describe()}; GEMM 2048^2 in the same rounds: "
             f"fp32 {gemm['fp32']:.0f}, bf16 {gemm['bf16']:.0f} GFLOP/s; fast-path plan: "
             + str(fast.inference_plan).splitlines()[0])
    print(intro, *table, "", *goals, "", profile_table, sep="\n", flush=True)
    write_results("bench_fast", args, header, intro, ["\n".join(table), "\n".join(goals), profile_table],
                  {"seconds_per_call": times, "flops": flops, "gemm_gflops": gemm, "plan": str(fast.inference_plan)})


def throughput_candidates(variant: str, quick: bool) -> dict:
    """Batch-64 image towers: ours fast vs timm's (as created, and fused) and open_clip's eager models."""
    import open_clip
    import timm
    from timm.utils.model import reparameterize_model

    config = tiny_config() if quick else MobileCLIPConfig.from_variant(variant)
    batch = 4 if quick else 64
    pixels = torch.rand(batch, 3, config.vision_config.image_size, config.vision_config.image_size)
    ours = optimize_for_inference(trained_magnitudes(MobileCLIPModel(config).eval()), compile=not quick)
    timm_name = {"mobileclip-s0": "fastvit_mci0", "mobileclip-s2": "fastvit_mci2"}[variant]
    timm_model = trained_magnitudes(timm.create_model(timm_name, num_classes=512).eval())
    rows = {f"{variant} optimize_for_inference": image_only(ours, pixels),
            f"timm {timm_name} eager": lambda: timm_model(pixels)}
    if not quick:
        fused = reparameterize_model(copy.deepcopy(timm_model))
        peer = {"mobileclip-s0": "MobileCLIP2-S0", "mobileclip-s2": "MobileCLIP-S2"}[variant]
        clip = trained_magnitudes(open_clip.create_model(peer, pretrained=None).eval())
        rows[f"timm {timm_name} eager fused"] = lambda: fused(pixels)
        rows[f"open_clip {peer} eager"] = lambda: clip.encode_image(pixels)
    return rows, batch


def throughput(args) -> None:
    header = machine_header("fp32 (peers) and the plan's (ours)", args.threads)
    print(header_line(header), flush=True)
    schedule = args.schedule if args.quick else Schedule(min(args.rounds, 5), 1)
    table = ["| tower, batch | images/s per core | speed-up of ours over this row |", "|---|---|---|"]
    raw = {}
    for variant in ("mobileclip-s0",) if args.quick else ("mobileclip-s0", "mobileclip-s2"):
        rows, batch = throughput_candidates(variant, args.quick)
        with torch.inference_mode():
            times = interleaved_times(rows, schedule, warmup=1)
        ours = times[f"{variant} optimize_for_inference"]
        for name, t in times.items():
            table.append(f"| {name}, {batch} | {batch / (median_ms(t) / 1e3) / args.threads:.1f} | "
                         f"{format_ratio(t, ours)}x |")
        raw[variant] = times
    intro = f"cpu, {args.threads} threads, {schedule.describe()}; goal 4: ours >= 2x timm's / open_clip's eager"
    print(intro, *table, sep="\n", flush=True)
    write_results("bench_fast_throughput", args, header, intro, ["\n".join(table)], {"seconds_per_call": raw})


PLANS = {"eager fp32 fused": None, "fp32 compiled": dict(dtype="float32"),
         "fp32 compiled, contiguous": dict(dtype="float32", memory_format="contiguous"),
         "bf16 not compiled": dict(dtype="bfloat16", compile=False), "bf16 compiled": dict(dtype="bfloat16")}


def plans(args) -> None:
    """Each S0 tower alone (no other model in the rounds), batch 1, under each choice the plan makes: what "auto"
    should pick on this machine."""
    config = tiny_config() if args.quick else MobileCLIPConfig.from_variant("mobileclip-s0")
    eager = trained_magnitudes(MobileCLIPModel(config).eval())
    size = config.vision_config.image_size
    pixels, ids = torch.rand(1, 3, size, size), caption_ids(1)
    auto = choose_plan(config, describe_machine("cpu"), compile=False if args.quick else "auto")
    candidates = {}
    for name, choice in PLANS.items():
        if args.quick and choice is not None and choice.get("compile", True):
            choice, name = dict(choice, compile=False), name.replace("compiled", "compiled (not: --quick)")
        model = copy.deepcopy(eager).reparameterize() if choice is None else \
            optimize_for_inference(copy.deepcopy(eager), **choice)
        candidates[f"image tower, {name}"] = image_only(model, pixels)
        candidates[f"text tower, {name}"] = lambda model=model: model.get_text_features(input_ids=ids).pooler_output
    header = machine_header("fp32 and bfloat16", args.threads)
    print(header_line(header), flush=True)
    with torch.inference_mode():
        for fn in candidates.values():  # compiles, untimed
            fn()
        times = interleaved_times(candidates, args.schedule)
    table = ["| S0 tower, choice | ms | speed-up vs eager fp32 fused |", "|---|---|---|"]
    for name, t in times.items():
        baseline = times[name.split(",")[0] + ", eager fp32 fused"]
        table.append(f"| {name} | {median_ms(t):.1f} | {format_ratio(baseline, t)}x |")
    intro = (f"cpu, {args.threads} threads, batch 1, each tower alone, {args.schedule.describe()}; "
             f"the plan auto picks here: " + str(auto).splitlines()[0])
    print(intro, *table, sep="\n", flush=True)
    write_results("bench_fast_plans", args, header, intro, ["\n".join(table)], {"seconds_per_call": times})


def main(argv=None) -> None:
    parser = benchmark_parser(__doc__, quick="tiny S0-like model, 1-layer CLIP, no compilation")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--throughput", action="store_true", help="goal 4: batch 64 image towers (5 rounds)")
    mode.add_argument("--plans", action="store_true", help="each S0 tower alone under each precision / compile "
                      "choice")
    args = parse_benchmark_args(parser, argv)
    (throughput if args.throughput else plans if args.plans else latency)(args)


if __name__ == "__main__":
    main()
