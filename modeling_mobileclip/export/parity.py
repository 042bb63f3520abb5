"""The parity report of each exported precision against the PyTorch fp32 model: largest embedding difference, and on
a labelled set the zero-shot top-1 agreement with PyTorch fp32 and the top-1 accuracy of each.

    report = parity_report(model, folder, {"fp32": files, "int8-static": files}, labelled=labelled_set(...))
    # {"pytorch_fp32": {"top1_accuracy"}, "precisions": {"int8-static": {"max_abs_diff", "top1_agreement", ...}}}

Zero-shot as in `evaluation.zeroshot`: per class, the renormalised mean of the normalised template embeddings (each
precision's own text encoder builds its classifier), prediction = argmax of image_embeds @ classifier. Embedding
differences are over the labelled images and class prompts when a labelled set is given, else over random inputs.
"""

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .encoders import encoders, example_inputs


@dataclass
class LabelledSet:
    """Processed images and labels of a labelled set, and the tokenised prompts (classes x templates)."""

    pixel_values: np.ndarray  # float32 [n, 3, H, W]
    labels: np.ndarray  # int64 [n]
    input_ids: np.ndarray  # int64 [classes * templates, context]
    num_classes: int
    name: str


def labelled_set(processor, dataset, classnames: list[str], templates: list[str], name: str, context_length: int,
                 image_column: str = "image", label_column: str = "label", limit: int | None = None) -> LabelledSet:
    """Preprocess a labelled `datasets.Dataset` once (the same arrays feed PyTorch and every ONNX precision)."""
    from ..evaluation.prompts import PLACEHOLDER, check_classnames, check_templates

    classnames, templates = check_classnames(classnames), check_templates(templates)
    if limit is not None:
        dataset = dataset.select(range(min(limit, len(dataset))))
    images = [image.convert("RGB") for image in dataset[image_column]]
    pixels = np.concatenate([processor.image_processor(images=images[i : i + 64], return_tensors="np")["pixel_values"]
                             for i in range(0, len(images), 64)]).astype(np.float32)
    prompts = [template.replace(PLACEHOLDER, c) for c in classnames for template in templates]
    ids = processor(text=prompts, padding="max_length", truncation=True, max_length=context_length,
                    return_tensors="np")["input_ids"].astype(np.int64)
    return LabelledSet(pixels, np.asarray(dataset[label_column], dtype=np.int64), ids, len(classnames), name)


def _run_batched(fn, array: np.ndarray, batch: int = 32) -> np.ndarray:
    return np.concatenate([fn(array[i : i + batch]) for i in range(0, len(array), batch)])


def _predictions(image_embeds: np.ndarray, text_embeds: np.ndarray, num_classes: int) -> np.ndarray:
    per_class = text_embeds.reshape(num_classes, -1, text_embeds.shape[-1]).mean(axis=1)
    per_class /= np.linalg.norm(per_class, axis=-1, keepdims=True)
    return (image_embeds @ per_class.T).argmax(axis=-1)


def _torch_embeds(model, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    out = {}
    with torch.inference_mode():
        for kind, (module, _, _) in encoders(model).items():
            out[kind] = _run_batched(lambda x, module=module: module(torch.from_numpy(x)).numpy(), inputs[kind])
    return out


def _onnx_embeds(folder: Path, files: dict[str, str], inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    import onnxruntime

    out = {}
    for kind, input_name in (("image", "pixel_values"), ("text", "input_ids")):
        session = onnxruntime.InferenceSession(str(folder / files[kind]), providers=["CPUExecutionProvider"])
        out[kind] = _run_batched(lambda x, s=session, n=input_name: s.run(None, {n: x})[0], inputs[kind])
    return out


def parity_report(model, folder: Path, precisions: dict[str, dict], labelled: LabelledSet | None = None) -> dict:
    """Each precision's encoders (`precisions[name]` = {"image": file, "text": file, ...}) in onnxruntime against the
    PyTorch fp32 `model`."""
    if labelled is not None:
        inputs = {"image": labelled.pixel_values, "text": labelled.input_ids}
        inputs_note = f"the {len(labelled.labels)} images and {len(labelled.input_ids)} prompts of {labelled.name}"
    else:
        random_inputs = example_inputs(model, batch=4, seed=4)
        inputs = {kind: tensor.numpy() for kind, tensor in random_inputs.items()}
        inputs_note = "4 random images and captions (no labelled set: pass --eval-data for agreement and accuracy)"
    reference = _torch_embeds(model, inputs)
    report = {"reference": "PyTorch fp32 (fused, eval)", "max_abs_diff_over": inputs_note, "precisions": {}}
    if labelled is not None:
        ref_pred = _predictions(reference["image"], reference["text"], labelled.num_classes)
        report["labelled_set"] = {"name": labelled.name, "images": len(labelled.labels),
                                  "classes": labelled.num_classes,
                                  "templates": len(labelled.input_ids) // labelled.num_classes}
        # How many classes fp32 predicts: an agreement is only telling when the reference does not predict one class.
        report["pytorch_fp32"] = {"top1_accuracy": float((ref_pred == labelled.labels).mean()),
                                  "distinct_predictions": len(np.unique(ref_pred))}
    for name, files in precisions.items():
        got = _onnx_embeds(folder, files, inputs)
        entry = {"image_encoder": files["image"], "text_encoder": files["text"],
                 "max_abs_diff": {kind: float(np.abs(got[kind] - reference[kind]).max()) for kind in got}}
        if labelled is not None:
            pred = _predictions(got["image"], got["text"], labelled.num_classes)
            entry["top1_agreement_with_pytorch_fp32"] = float((pred == ref_pred).mean())
            entry["top1_accuracy"] = float((pred == labelled.labels).mean())
        report["precisions"][name] = entry
    return report


def format_report(report: dict) -> str:
    """The report as a small text table (printed by the command)."""
    lines = [f"parity vs {report['reference']}, max abs diff over {report['max_abs_diff_over']}"]
    if "pytorch_fp32" in report:
        lines.append(f"PyTorch fp32 top-1 accuracy: {report['pytorch_fp32']['top1_accuracy']:.3f}")
    lines.append("precision     | max abs diff image / text | top-1 agreement | top-1 accuracy")
    for name, entry in report["precisions"].items():
        diff = entry["max_abs_diff"]
        agreement = entry.get("top1_agreement_with_pytorch_fp32")
        accuracy = entry.get("top1_accuracy")
        lines.append(f"{name:<13} | {diff['image']:.1e} / {diff['text']:.1e}"
                     f"{'':<9} | {'-' if agreement is None else f'{agreement:.3f}':<15} | "
                     f"{'-' if accuracy is None else f'{accuracy:.3f}'}")
    return "\n".join(lines)
