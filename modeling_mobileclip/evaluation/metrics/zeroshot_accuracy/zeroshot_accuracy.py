"""Zero-shot classification metrics: top-k accuracy and mean per-class recall.

The keys match the datacomp / clip_benchmark rows in Apple's `results/*.jsonl` (`acc1`, `acc5`,
`mean_per_class_recall`), so a row computed here compares directly with the published numbers.
Load it offline by directory: `evaluate.load("modeling_mobileclip/evaluation/metrics/zeroshot_accuracy")`.
"""

# evaluate scans this file for imports to check its dependencies: keep one import per line.
import datasets
import evaluate
import numpy as np


_DESCRIPTION = """
Top-k accuracy and mean per-class recall of a zero-shot (or any) classifier, computed from its logits.

A sample counts as correct at k when fewer than k *other* classes score at least as high as the true
class. Ties therefore count against the sample: a model whose logits are all equal scores chance or less,
never 100%. Without ties this is exactly "the true class is among the k highest logits".

`acc{k}` is `None` when the classifier has fewer than k classes (datacomp writes `"acc5": null` for
2-class datasets). `mean_per_class_recall` is the top-1 recall of each class present in `references`,
averaged over those classes (sklearn's `balanced_accuracy_score` on the argmax predictions).
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list[list[float]]` or array of shape `(n_samples, n_classes)`): logits or cosine
        similarities of every sample to every class. Any monotonic scaling (e.g. `logit_scale`) gives the
        same result.
    references (`list[int]` of length `n_samples`): true class index of each sample, in `[0, n_classes)`.
    top_k (`tuple[int]`, *optional*, defaults to `(1, 5)`): the k values of the `acc{k}` keys.

Returns:
    `dict`: `acc{k}` for each k (float, or `None` when `k > n_classes`) and `mean_per_class_recall`.

Examples:
    >>> metric = evaluate.load("modeling_mobileclip/evaluation/metrics/zeroshot_accuracy")
    >>> metric.compute(predictions=[[0.9, 0.1], [0.2, 0.8], [0.7, 0.3]], references=[0, 0, 0], top_k=(1,))
    {'acc1': 0.6666666666666666, 'mean_per_class_recall': 0.6666666666666666}
"""

_CITATION = """
@inproceedings{radford2021clip,
  title={Learning Transferable Visual Models From Natural Language Supervision},
  author={Radford, Alec and Kim, Jong Wook and others},
  booktitle={ICML},
  year={2021}
}
"""


def _as_logits(predictions, references):
    logits = np.asarray(predictions)
    if logits.dtype == object:
        # The numpy formatter returns an object array when rows have different lengths.
        lengths = sorted({len(row) for row in predictions})
        raise ValueError(
            f"predictions rows have different lengths {lengths[:5]}; every row must hold one score per class "
            f"(shape (n_samples, n_classes))."
        )
    logits = logits.astype(np.float64, copy=False)
    labels = np.asarray(references)
    if logits.ndim != 2 or logits.shape[1] == 0:
        raise ValueError(
            f"predictions has shape {logits.shape}; expected (n_samples, n_classes) with n_classes >= 1."
        )
    if labels.shape != (logits.shape[0],):
        raise ValueError(
            f"references has shape {labels.shape} but predictions has {logits.shape[0]} rows; "
            f"pass one class index per sample."
        )
    if logits.shape[0] == 0:
        raise ValueError("predictions and references are empty; evaluate at least one sample.")
    if not np.isfinite(logits).all():
        bad = int((~np.isfinite(logits)).sum())
        raise ValueError(
            f"predictions contain {bad} NaN/inf values; the model output is broken (with fp16 this is "
            f"usually an overflow: evaluate in bf16 or fp32)."
        )
    n_classes = logits.shape[1]
    out_of_range = (labels < 0) | (labels >= n_classes)
    if out_of_range.any():
        raise ValueError(
            f"references contain {int(out_of_range.sum())} labels outside [0, {n_classes}), e.g. "
            f"{labels[out_of_range][:5].tolist()}; predictions has {n_classes} classes. A label of -1 means the "
            f"split is unlabelled (ImageNet's test split): evaluate the validation split instead."
        )
    return logits, labels.astype(np.int64)


def zeroshot_accuracy(predictions, references, top_k=(1, 5)):
    """The metric as a plain function (see the module docstring)."""
    logits, labels = _as_logits(predictions, references)
    if isinstance(top_k, int) or not all(isinstance(k, (int, np.integer)) and k >= 1 for k in top_k):
        raise ValueError(f"top_k={top_k!r}; expected a tuple of positive integers such as (1, 5).")
    n_samples, n_classes = logits.shape
    true_score = logits[np.arange(n_samples), labels]
    # Rank of the true class = number of other classes scoring >= it (ties counted against the sample).
    rank = (logits >= true_score[:, None]).sum(axis=1) - 1
    results = {}
    for k in top_k:
        results[f"acc{k}"] = float((rank < k).mean()) if k <= n_classes else None
    top1 = rank == 0
    present = np.unique(labels)
    per_class = [top1[labels == c].mean() for c in present]
    results["mean_per_class_recall"] = float(np.mean(per_class))
    return results


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class ZeroshotAccuracy(evaluate.Metric):
    def _info(self):
        info = evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {
                    "predictions": datasets.Sequence(datasets.Value("float32")),
                    "references": datasets.Value("int64"),
                }
            ),
            reference_urls=["https://github.com/mlfoundations/datacomp"],
        )
        # MetricInfo only accepts "numpy" for flat features, but the rows here all have n_classes scores, so the
        # numpy formatter stacks them into one (n_samples, n_classes) array. Without this the rows come back as
        # Python lists: ImageNet's 50k x 1000 logits would become 50M Python floats.
        info.format = "numpy"
        return info

    def _compute(self, predictions, references, top_k=(1, 5)):
        return zeroshot_accuracy(predictions, references, top_k=top_k)
