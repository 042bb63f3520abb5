"""ONNX precisions (fp32, fp16, int8-dynamic, int8-static) of the fused image encoder against PyTorch eager fp32, side
by side in one process, with each precision's parity on a trained model; and `mobileclip-embed` against a naive loop.

1. Speed: MobileCLIP-S0's image encoder at full size (random weights of trained magnitudes, fused), exported and
   converted exactly as `python -m modeling_mobileclip.export --precision ...` does (int8-static calibrated on
   processed toy pictures); latency at batch 1 and images/s at batch 32, interleaved with PyTorch eager fp32.
2. Parity: the same conversions of a *trained* tiny model, the toy teacher `mci-32d` that
   `python -m dataset_scripts.toy_data` trains (ToySpec defaults), on the toy held-out set (144 images, 24 classes,
   the toy prompt ensemble): zero-shot top-1 agreement with PyTorch fp32 and top-1 accuracy (the parity report).
3. Embedding a folder of generated JPEGs: `embed_images` (DataLoader workers, batches, fused, inference mode), with
   the fused fp32 model and on the machine's fast path (`optimize_for_inference`, not compiled: what `mobileclip-embed`
   runs by default), against a loop that opens, preprocesses and embeds one image at a time with the fused model.

    python benchmarks/bench_onnx_quant.py                       # the docs table (builds the toy teacher once)
    python benchmarks/bench_onnx_quant.py --trained-model DIR --eval-data DIR
    python benchmarks/bench_onnx_quant.py --quick               # CI smoke run: tiny random model, no claims

Writes benchmarks/results/bench_onnx_quant.md and .json (--results-dir to change; --quick writes to a temp dir).
"""

import copy
import json
import random
import statistics
import tempfile
import time
from pathlib import Path

import onnxruntime
import torch
from common import (Schedule, benchmark_parser, format_ratio, header_line, interleaved_times, machine_header,
                    median_ms, parse_benchmark_args, trained_magnitudes, write_results)

from dataset_scripts import toy_data
from modeling_mobileclip import MobileCLIPConfig, MobileCLIPModel, MobileCLIPProcessor
from modeling_mobileclip.embedding import embed_images
from modeling_mobileclip.export.encoders import ImageEncoder
from modeling_mobileclip.export.onnx_export import export_onnx
from modeling_mobileclip.export.parity import labelled_set, parity_report
from modeling_mobileclip.export.precision import PRECISIONS, convert_precision
from modeling_mobileclip.inference import optimize_for_inference

QUICK_PRECISIONS = ("fp32", "int8-static")


def toy_pictures(count: int, seed: int = 1) -> list:
    rng = random.Random(seed)
    return [toy_data.render(toy_data.random_scene(rng)) for _ in range(count)]


def convert_all(model, processor, folder: Path, precisions, calibration_images: int) -> dict:
    export_onnx(model, folder, opset=17)
    pictures = toy_pictures(calibration_images)
    calibration = [processor.image_processor(images=pictures[i : i + 16], return_tensors="np")["pixel_values"]
                   for i in range(0, len(pictures), 16)]
    return {name: convert_precision(folder, name, calibration) for name in precisions}


def speed_rows(model, folder: Path, files: dict, schedule: Schedule, threads: int, batches: tuple[int, int]):
    """Seconds per call of PyTorch eager fp32 and of each precision's image encoder, interleaved, per batch size."""
    module, size = ImageEncoder(model), model.config.vision_config.image_size
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    sessions = {name: onnxruntime.InferenceSession(str(folder / f["image"]), options,
                                                   providers=["CPUExecutionProvider"])
                for name, f in files.items()}
    timings = {}
    for batch in batches:
        x = torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(batch))
        feed = {"pixel_values": x.numpy()}
        candidates = {"pytorch": lambda x=x: module(x)}
        for name, session in sessions.items():
            candidates[name] = lambda session=session, feed=feed: session.run(None, feed)
        with torch.inference_mode():
            timings[batch] = interleaved_times(candidates, schedule)
    return timings


def trained_parity(model_dir: Path | None, eval_dir: Path | None, precisions, folder: Path) -> dict:
    """The parity report of the trained toy teacher (built once by dataset_scripts.toy_data unless given)."""
    import datasets

    if model_dir is None:
        root = toy_data.build_toy_datacompdr()
        model_dir, eval_dir = root / "teachers" / "mci-32d", root / "eval"
    model = MobileCLIPModel.from_pretrained(model_dir).eval().reparameterize().requires_grad_(False)
    processor = MobileCLIPProcessor.from_pretrained(model_dir)
    return parity_on(model, processor, datasets.load_from_disk(str(eval_dir)), precisions, folder, 64)


def parity_on(model, processor, eval_ds, precisions, folder: Path, calibration_images: int,
              files: dict | None = None) -> dict:
    labelled = labelled_set(processor, eval_ds, eval_ds.features["label"].names, list(toy_data.EVAL_TEMPLATES),
                            "toy held-out set", model.config.text_config.max_position_embeddings)
    files = files or convert_all(model, processor, folder, precisions, calibration_images)
    return parity_report(model, folder, files, labelled)


def embed_rows(model, processor, count: int, batch_size: int, workers: int) -> tuple[list, dict]:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "jpegs"
        for i, picture in enumerate(toy_pictures(count, seed=2)):
            (folder / f"{i % 8}").mkdir(parents=True, exist_ok=True)
            picture.resize((320, 320)).save(folder / f"{i % 8}" / f"{i:05d}.jpg", quality=90)
        files = sorted(folder.rglob("*.jpg"))
        start = time.perf_counter()
        with torch.inference_mode():
            for path in files:  # the naive loop: one image at a time, in the main process
                import PIL.Image

                pixels = processor.image_processor(images=PIL.Image.open(path).convert("RGB"),
                                                   return_tensors="pt")["pixel_values"]
                model.get_image_features(pixel_values=pixels)
        naive = count / (time.perf_counter() - start)
        record = embed_images(model, processor, folder, Path(tmp) / "out", batch_size=batch_size,
                              num_workers=workers, progress=False)
        tool = record["images_per_second"]
        # What `mobileclip-embed` runs by default: the machine's fast path, not compiled.
        fast_model = optimize_for_inference(copy.deepcopy(model), compile=False)
        record = embed_images(fast_model, processor, folder, Path(tmp) / "fast", batch_size=batch_size,
                              num_workers=workers, progress=False)
        fast = record["images_per_second"]
    plan = fast_model.inference_plan
    rows = [f"| naive loop (batch 1, main process) | {naive:.1f} | 1.00x |",
            f"| embed_images (batch {batch_size}, {workers} workers), fused fp32 | {tool:.1f} | {tool / naive:.2f}x |",
            f"| embed_images (batch {batch_size}, {workers} workers), fast path ({plan.dtype}, {plan.memory_format}; "
            f"the CLI's default) | {fast:.1f} | {fast / naive:.2f}x |"]
    return rows, {"naive_images_per_second": naive, "tool_images_per_second": tool,
                  "fast_path_images_per_second": fast, "images": count}


def main(argv=None) -> None:
    parser = benchmark_parser(__doc__, quick="tiny random models, batches 1 and 4, 8 JPEGs", calls_per_round=2)
    parser.add_argument("--variant", default="mobileclip-s0")
    parser.add_argument("--trained-model", type=Path, default=None, help="default: the toy teacher mci-32d")
    parser.add_argument("--eval-data", type=Path, default=None, help="labelled save_to_disk set (with --trained-model)")
    parser.add_argument("--embed-images", type=int, default=512)
    parser.add_argument("--num-workers", type=int, default=2)
    args = parse_benchmark_args(parser, argv)
    precisions = QUICK_PRECISIONS if args.quick else PRECISIONS
    config = toy_data.tiny_model_config("tiny") if args.quick else MobileCLIPConfig.from_variant(args.variant)
    name = "tiny" if args.quick else args.variant
    processor = None if args.quick else MobileCLIPProcessor.from_variant(args.variant)
    size = config.vision_config.image_size
    batches = (1, 4) if args.quick else (1, 32)
    header = machine_header("fp32 / fp16 / int8", args.threads)

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "speed").mkdir()
        if args.quick:  # one random tiny model for both parts: the numbers mean nothing, the paths run
            model, processor = toy_data.tiny_mobileclip()
            model = trained_magnitudes(model.eval()).reparameterize().requires_grad_(False)
            files = convert_all(model, processor, tmp / "speed", precisions, 8)
            eval_ds = toy_data.build_eval_set(tmp / "eval", seed=0).select(range(24))
            report = parity_on(model, processor, eval_ds, precisions, tmp / "speed", 8, files)
        else:
            (tmp / "parity").mkdir()
            report = trained_parity(args.trained_model, args.eval_data, precisions, tmp / "parity")
            model = trained_magnitudes(MobileCLIPModel(config).eval()).reparameterize().requires_grad_(False)
            files = convert_all(model, processor, tmp / "speed", precisions, 32)
        timings = speed_rows(model, tmp / "speed", files, args.schedule, args.threads, batches)
        megabytes = {name: (tmp / "speed" / f["image"]).stat().st_size / 2**20 for name, f in files.items()}
    small, large = batches
    columns = (f"| precision | image encoder MB | batch {small} ms | speed-up vs PyTorch fp32, batch {small} | "
               f"batch {large} images/s | speed-up vs PyTorch fp32, batch {large} | top-1 agreement with fp32 | "
               f"top-1 accuracy |")
    table = [columns, "|---|---|---|---|---|---|---|---|"]
    reference_acc = report["pytorch_fp32"]["top1_accuracy"]
    table.append(f"| PyTorch eager fp32 | - | {median_ms(timings[small]['pytorch']):.1f} | 1.00 | "
                 f"{large / statistics.median(timings[large]['pytorch']):.1f} | 1.00 | 1.000 | {reference_acc:.3f} |")
    raw = {"timings_s": timings, "parity_report": report, "image_encoder_megabytes": megabytes}
    for precision in precisions:
        entry = report["precisions"][precision]
        table.append(f"| onnxruntime {precision} | {megabytes[precision]:.1f} | "
                     f"{median_ms(timings[small][precision]):.1f} | "
                     f"{format_ratio(timings[small]['pytorch'], timings[small][precision])} | "
                     f"{large / statistics.median(timings[large][precision]):.1f} | "
                     f"{format_ratio(timings[large]['pytorch'], timings[large][precision])} | "
                     f"{entry['top1_agreement_with_pytorch_fp32']:.3f} | {entry['top1_accuracy']:.3f} |")
    intro = (f"{name} image encoder (fused, random weights of trained magnitudes, {size} px), cpu, {args.threads} "
             f"threads (PyTorch and onnxruntime intra-op), {args.schedule.describe()}; onnxruntime "
             f"{onnxruntime.__version__}, opset 17; int8-static calibrated on 32 processed toy pictures. Agreement "
             f"and accuracy: the same conversions of the trained toy teacher mci-32d on the toy held-out set "
             f"({report['labelled_set']['images']} images, {report['labelled_set']['classes']} classes, "
             f"fp32 predicts {report['pytorch_fp32']['distinct_predictions']} distinct classes; int8-static "
             f"calibrated on 64 toy pictures)"
             + (" -- quick run: a random tiny model, no claims" if args.quick else ""))
    print(header_line(header), intro, *table, sep="\n", flush=True)
    count = 8 if args.quick else args.embed_images
    embed_table, embed_raw = embed_rows(model, processor, count, 4 if args.quick else 32,
                                        0 if args.quick else args.num_workers)
    embed_columns = f"| {count} JPEGs (320 px, in 8 sub-folders) -> {name} image embeddings | images/s | speed-up |"
    embed_table = [embed_columns, "|---|---|---|", *embed_table]
    print(*embed_table, sep="\n", flush=True)
    raw["embed"] = embed_raw
    write_results("bench_onnx_quant", args, header, intro, ["\n".join(table), "\n".join(embed_table)],
                  json.loads(json.dumps(raw, default=float)))


if __name__ == "__main__":
    main()
