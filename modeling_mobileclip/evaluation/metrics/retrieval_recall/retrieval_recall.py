"""Image<->text retrieval recall@k with several captions per image (Flickr30k / COCO style).

The keys match the datacomp / clip_benchmark retrieval rows in Apple's `results/*.jsonl`
(`image_retrieval_recall@1`, `text_retrieval_recall@1`, ..., `mean_recall@1`).
Load it offline by directory: `evaluate.load("modeling_mobileclip/evaluation/metrics/retrieval_recall")`.
"""

# evaluate scans this file for imports to check its dependencies: keep one import per line.
import datasets
import evaluate
import numpy as np


_DESCRIPTION = """
Retrieval recall@k in both directions, from the text-image similarity matrix.

Each input row is one caption: its similarity to every image, and the index of the image it describes
(the text->image mapping, so an image may have any number of captions).

- `image_retrieval_recall@k` (text -> image): fraction of captions whose image is among the k most similar
  images.
- `text_retrieval_recall@k` (image -> text): fraction of images with at least one of their captions among
  the k most similar captions. Images without any caption still compete as distractors in the text -> image
  direction but are not queries here.
- `mean_recall@k`: the average of the two (datacomp's `mean_recall@1`).

A query counts as a hit at k when fewer than k negatives score at least as high as its best positive, so ties
count against the query (a model with constant embeddings does not get recall 1.0). Without ties this is the
usual top-k definition.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list[list[float]]` or array of shape `(n_texts, n_images)`): similarity of each caption to
        every image (cosine similarity or logits).
    references (`list[int]` of length `n_texts`): index of the image each caption belongs to, in
        `[0, n_images)`.
    k_values (`tuple[int]`, *optional*, defaults to `(1, 5, 10)`).

Returns:
    `dict`: for each k, `image_retrieval_recall@k` and `text_retrieval_recall@k`; then `mean_recall@k` for each k.

Examples:
    >>> metric = evaluate.load("modeling_mobileclip/evaluation/metrics/retrieval_recall")
    >>> sims = [[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]]  # 3 captions x 2 images
    >>> result = metric.compute(predictions=sims, references=[0, 1, 1], k_values=(1,))
    >>> result["image_retrieval_recall@1"], result["text_retrieval_recall@1"], result["mean_recall@1"]
    (0.6666666666666666, 1.0, 0.8333333333333333)
"""

_CITATION = """
@article{gadre2023datacomp,
  title={DataComp: In search of the next generation of multimodal datasets},
  author={Gadre, Samir Yitzhak and Ilharco, Gabriel and others},
  journal={arXiv preprint arXiv:2304.14108},
  year={2023}
}
"""


def _as_similarities(predictions, references):
    sims = np.asarray(predictions)
    if sims.dtype == object:
        # The numpy formatter returns an object array when rows have different lengths.
        lengths = sorted({len(row) for row in predictions})
        raise ValueError(
            f"predictions rows have different lengths {lengths[:5]}; every caption's row must hold its "
            f"similarity to every image (shape (n_texts, n_images))."
        )
    sims = sims.astype(np.float64, copy=False)
    text_to_image = np.asarray(references)
    if sims.ndim != 2 or sims.shape[0] == 0 or sims.shape[1] == 0:
        raise ValueError(
            f"predictions has shape {sims.shape}; expected (n_texts, n_images) with at least one text and image."
        )
    if text_to_image.shape != (sims.shape[0],):
        raise ValueError(
            f"references has shape {text_to_image.shape} but predictions has {sims.shape[0]} rows (captions); "
            f"pass the image index of every caption."
        )
    if not np.isfinite(sims).all():
        bad = int((~np.isfinite(sims)).sum())
        raise ValueError(
            f"predictions contain {bad} NaN/inf similarities; the model output is broken (with fp16 this is "
            f"usually an overflow: evaluate in bf16 or fp32)."
        )
    n_images = sims.shape[1]
    out_of_range = (text_to_image < 0) | (text_to_image >= n_images)
    if out_of_range.any():
        raise ValueError(
            f"references contain {int(out_of_range.sum())} image indices outside [0, {n_images}), e.g. "
            f"{text_to_image[out_of_range][:5].tolist()}; predictions has {n_images} columns (images)."
        )
    return sims, text_to_image.astype(np.int64)


def retrieval_recall(predictions, references, k_values=(1, 5, 10)):
    """The metric as a plain function (see the module docstring)."""
    sims, text_to_image = _as_similarities(predictions, references)
    if isinstance(k_values, int) or not all(isinstance(k, (int, np.integer)) and k >= 1 for k in k_values):
        raise ValueError(f"k_values={k_values!r}; expected a tuple of positive integers such as (1, 5, 10).")
    n_texts, n_images = sims.shape
    rows = np.arange(n_texts)
    positive = sims[rows, text_to_image]

    # text -> image: one positive per caption; its rank = images (other than its own) scoring >= it.
    image_rank = (sims >= positive[:, None]).sum(axis=1) - 1

    # image -> text: the best caption of each image decides; negatives = other images' captions scoring >= it.
    best = np.full(n_images, -np.inf)
    np.maximum.at(best, text_to_image, positive)
    has_caption = np.isfinite(best)
    at_least_best = sims >= best[None, :]
    own_at_least_best = np.bincount(text_to_image, weights=at_least_best[rows, text_to_image], minlength=n_images)
    text_rank = (at_least_best.sum(axis=0) - own_at_least_best)[has_caption]

    results = {}
    for k in k_values:
        results[f"image_retrieval_recall@{k}"] = float((image_rank < k).mean())
        results[f"text_retrieval_recall@{k}"] = float((text_rank < k).mean())
    for k in k_values:
        image_recall, text_recall = results[f"image_retrieval_recall@{k}"], results[f"text_retrieval_recall@{k}"]
        results[f"mean_recall@{k}"] = 0.5 * (image_recall + text_recall)
    return results


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class RetrievalRecall(evaluate.Metric):
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
            reference_urls=["https://github.com/LAION-AI/CLIP_benchmark"],
        )
        # MetricInfo only accepts "numpy" for flat features, but every row has n_images similarities, so the numpy
        # formatter stacks them into one (n_texts, n_images) array instead of 125M Python floats for COCO 5k.
        info.format = "numpy"
        return info

    def _compute(self, predictions, references, k_values=(1, 5, 10)):
        return retrieval_recall(predictions, references, k_values=k_values)
