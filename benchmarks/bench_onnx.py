"""onnxruntime vs PyTorch latency of the exported fused encoders, side by side in one process (interleaved, median).

The model is exported exactly as `python -m modeling_mobileclip.export` does it (and checked against PyTorch: the
largest difference is printed), then both runtimes encode the same inputs with the same thread count.

    python benchmarks/bench_onnx.py                                   # the docs table (MobileCLIP-S0)
    python benchmarks/bench_onnx.py --variants mobileclip-s0 mobileclip-s2 mobileclip-b
    python benchmarks/bench_onnx.py --quick                           # CI smoke run: tiny config, no claims

Writes benchmarks/results/bench_onnx.md and .json (--results-dir to change; --quick writes to a temp dir).
"""

import tempfile
from pathlib import Path

import onnxruntime
import torch
from common import (Schedule, benchmark_parser, format_ratio, header_line, interleaved_times, machine_header,
                    median_ms, parse_benchmark_args, tiny_config, trained_magnitudes, write_results)

from modeling_mobileclip import MobileCLIPConfig, MobileCLIPModel
from modeling_mobileclip.export.encoders import encoders, example_inputs
from modeling_mobileclip.export.onnx_export import export_onnx, verify_onnx


def variant_rows(config: MobileCLIPConfig, name: str, batches: list[int], schedule: Schedule,
                 threads: int) -> tuple[list[str], list[dict]]:
    """The table rows of one variant and their raw numbers (seconds per call in each round)."""
    model = trained_magnitudes(MobileCLIPModel(config).eval()).reparameterize().requires_grad_(False)
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    rows, raw = [], []
    with tempfile.TemporaryDirectory() as tmp:
        export_onnx(model, Path(tmp), opset=17)
        diffs = verify_onnx(model, Path(tmp))
        sessions = {kind: onnxruntime.InferenceSession(str(Path(tmp) / f"{kind}_encoder.onnx"), options,
                                                       providers=["CPUExecutionProvider"])
                    for kind in ("image", "text")}
        for batch in batches:
            inputs = example_inputs(model, batch)
            candidates = {}
            for kind, (module, input_name, _) in encoders(model).items():
                feed = {input_name: inputs[kind].numpy()}
                candidates[f"{kind}_pt"] = lambda module=module, x=inputs[kind]: module(x)
                candidates[f"{kind}_ort"] = lambda session=sessions[kind], feed=feed: session.run(None, feed)
            with torch.inference_mode():
                times = interleaved_times(candidates, schedule)
            for kind in ("image", "text"):
                pt, ort = times[f"{kind}_pt"], times[f"{kind}_ort"]
                rows.append(f"| {name} {kind} | {batch} | {median_ms(pt):.1f} | {median_ms(ort):.1f} | "
                            f"{format_ratio(ort, pt)} | {diffs[kind]:.0e} |")
                raw.append({"encoder": f"{name} {kind}", "batch": batch, "pytorch_s": pt, "onnxruntime_s": ort,
                            "max_abs_diff": diffs[kind]})
    return rows, raw


def main(argv=None) -> None:
    parser = benchmark_parser(__doc__, quick="tiny config, batch 1")
    parser.add_argument("--variants", nargs="+", default=["mobileclip-s0"])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 16])
    args = parse_benchmark_args(parser, argv)
    batches = [1] if args.quick else args.batches
    configs = {"tiny": tiny_config()} if args.quick else {
        variant: MobileCLIPConfig.from_variant(variant) for variant in args.variants}
    header = machine_header("fp32", args.threads)
    intro = (f"fused encoders, fp32, cpu, {args.threads} threads (PyTorch and onnxruntime intra-op), "
             f"{args.schedule.describe()}; onnxruntime {onnxruntime.__version__}, torch {torch.__version__}, opset 17")
    table = ["| encoder | batch | PyTorch ms | onnxruntime ms | onnxruntime / PyTorch | max abs diff |",
             "|---|---|---|---|---|---|"]
    print(header_line(header), intro, *table, sep="\n", flush=True)
    raw = []
    for name, config in configs.items():
        rows, variant_raw = variant_rows(config, name, batches, args.schedule, args.threads)
        print("\n".join(rows), flush=True)
        table += rows
        raw += variant_raw
    write_results("bench_onnx", args, header, intro, ["\n".join(table)], raw)


if __name__ == "__main__":
    main()
