"""The `evaluate` metric modules in modeling_mobileclip/evaluation/metrics, loaded offline by path, vs hand-computed
values."""

from pathlib import Path

import evaluate
import numpy as np
import pytest
import torch

from modeling_mobileclip.evaluation.zeroshot import METRICS_DIR, load_metric


ZEROSHOT = str(Path(METRICS_DIR) / "zeroshot_accuracy")
RETRIEVAL = str(Path(METRICS_DIR) / "retrieval_recall")

# 5 samples x 6 classes. Rank of the true class (number of other classes scoring higher), worked out by hand:
LOGITS = [
    [0.9, 0.1, 0.0, 0.2, 0.3, 0.4],  # label 0: highest                      -> rank 0
    [0.1, 0.2, 0.3, 0.4, 0.5, 0.6],  # label 0: lowest                       -> rank 5
    [0.5, 0.6, 0.1, 0.2, 0.3, 0.4],  # label 0: only 0.6 above               -> rank 1
    [0.1, 0.2, 0.8, 0.3, 0.4, 0.5],  # label 2: highest                      -> rank 0
    [0.6, 0.5, 0.7, 0.1, 0.2, 0.3],  # label 3: 0.6, 0.5, 0.7, 0.2, 0.3 above -> rank 5
]
LABELS = [0, 0, 0, 2, 3]

# 5 captions x 3 images; caption -> image mapping with two captions for images 0 and 2.
SIMS = [
    [0.9, 0.1, 0.2],  # image 0: highest                        -> rank 0
    [0.3, 0.65, 0.82],  # image 0: 0.65 and 0.82 above          -> rank 2
    [0.2, 0.6, 0.85],  # image 1: 0.85 above                    -> rank 1
    [0.1, 0.2, 0.8],  # image 2: highest                        -> rank 0
    [0.7, 0.3, 0.2],  # image 2: 0.7 and 0.3 above              -> rank 2
]
TEXT_TO_IMAGE = [0, 0, 1, 2, 2]
# Image -> text, by columns: image 0's best caption (0.9) beats all others: rank 0. Image 1's only caption (0.6)
# is beaten by caption 1 (0.65): rank 1. Image 2's best caption (0.8) is beaten by captions 1 (0.82), 2 (0.85): rank 2.


def test_metrics_load_offline_by_path(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for path in (ZEROSHOT, RETRIEVAL):
        module = evaluate.load(path, keep_in_memory=True)
        assert isinstance(module, evaluate.Metric)
        assert list(module.info.features) == ["predictions", "references"]


def test_zeroshot_accuracy_hand_computed():
    result = evaluate.load(ZEROSHOT, keep_in_memory=True).compute(predictions=LOGITS, references=LABELS)
    # Keys in the order of Apple's results rows.
    assert list(result) == ["acc1", "acc5", "mean_per_class_recall"]
    assert result["acc1"] == pytest.approx(2 / 5)  # samples 0 and 3
    assert result["acc5"] == pytest.approx(3 / 5)  # plus sample 2
    # Per-class top-1 recall: class 0 -> 1/3, class 2 -> 1, class 3 -> 0; classes 1, 4, 5 have no samples.
    assert result["mean_per_class_recall"] == pytest.approx((1 / 3 + 1 + 0) / 3)


def test_zeroshot_accuracy_other_k_and_too_few_classes():
    metric = load_metric("zeroshot_accuracy")
    result = metric.compute(predictions=LOGITS, references=LABELS, top_k=(1, 2, 6, 7))
    assert result["acc2"] == pytest.approx(3 / 5)
    assert result["acc6"] == 1.0  # k == n_classes: always inside
    assert result["acc7"] is None  # datacomp writes null for acc5 on datasets with fewer than 5 classes


def test_zeroshot_accuracy_batches_and_tensors_match_one_call():
    metric = load_metric("zeroshot_accuracy")
    metric.add_batch(predictions=torch.tensor(LOGITS[:2]), references=torch.tensor(LABELS[:2]))
    metric.add_batch(predictions=np.array(LOGITS[2:]), references=np.array(LABELS[2:]))
    batched = metric.compute()
    assert batched == load_metric("zeroshot_accuracy").compute(predictions=LOGITS, references=LABELS)


def test_zeroshot_accuracy_ties_count_against_the_sample():
    # A collapsed model (all logits equal) must not look perfect.
    result = load_metric("zeroshot_accuracy").compute(
        predictions=[[1.0, 1.0, 1.0]] * 2, references=[0, 2], top_k=(1, 2, 3)
    )
    assert result == {"acc1": 0.0, "acc2": 0.0, "acc3": 1.0, "mean_per_class_recall": 0.0}


@pytest.mark.parametrize(
    ("predictions", "references", "kwargs", "message"),
    [
        ([[0.1, float("nan")], [0.3, 0.4]], [0, 1], {}, r"1 NaN/inf values.*bf16 or fp32"),
        ([[0.1, 0.2], [0.3, 0.4]], [0, -1], {}, r"outside \[0, 2\), e.g. \[-1\].*validation split"),
        ([[0.1, 0.2], [0.3, 0.4]], [0, 2], {}, r"outside \[0, 2\), e.g. \[2\]"),
        ([[0.1, 0.2], [0.3, 0.4, 0.5]], [0, 1], {}, r"different lengths \[2, 3\]"),
        ([[0.1, 0.2]], [0], {"top_k": 5}, r"top_k=5; expected a tuple of positive integers"),
        ([[0.1, 0.2]], [0], {"top_k": (0,)}, r"top_k=\(0,\)"),
    ],
)
def test_zeroshot_accuracy_bad_input(predictions, references, kwargs, message):
    with pytest.raises(ValueError, match=message):
        load_metric("zeroshot_accuracy").compute(predictions=predictions, references=references, **kwargs)


def test_retrieval_recall_hand_computed():
    result = evaluate.load(RETRIEVAL, keep_in_memory=True).compute(
        predictions=SIMS, references=TEXT_TO_IMAGE, k_values=(1, 2, 3)
    )
    # Keys in the order of Apple's results rows: both directions per k, then the means.
    assert list(result) == [
        "image_retrieval_recall@1", "text_retrieval_recall@1",
        "image_retrieval_recall@2", "text_retrieval_recall@2",
        "image_retrieval_recall@3", "text_retrieval_recall@3",
        "mean_recall@1", "mean_recall@2", "mean_recall@3",
    ]  # fmt: skip
    expected = {
        "image_retrieval_recall@1": 2 / 5,  # captions 0 and 3
        "image_retrieval_recall@2": 3 / 5,  # plus caption 2
        "image_retrieval_recall@3": 1.0,
        "text_retrieval_recall@1": 1 / 3,  # image 0
        "text_retrieval_recall@2": 2 / 3,  # plus image 1
        "text_retrieval_recall@3": 1.0,
        "mean_recall@1": (2 / 5 + 1 / 3) / 2,
        "mean_recall@2": (3 / 5 + 2 / 3) / 2,
        "mean_recall@3": 1.0,
    }
    assert result == pytest.approx(expected)


def test_retrieval_recall_default_k_and_uncaptioned_distractor():
    # A 4th image with no caption: it competes in text -> image (and beats caption 0's image) but is no query.
    sims = [row + [0.95 if i == 0 else 0.0] for i, row in enumerate(SIMS)]
    result = load_metric("retrieval_recall").compute(predictions=sims, references=TEXT_TO_IMAGE)
    assert result["image_retrieval_recall@1"] == pytest.approx(1 / 5)  # only caption 3 left
    assert result["text_retrieval_recall@1"] == pytest.approx(1 / 3)  # still over images 0, 1, 2
    assert result["image_retrieval_recall@10"] == 1.0 and result["text_retrieval_recall@10"] == 1.0
    assert set(result) >= {"image_retrieval_recall@5", "text_retrieval_recall@5", "mean_recall@1"}


def test_retrieval_recall_ties_count_against_the_query():
    result = load_metric("retrieval_recall").compute(
        predictions=[[0.5, 0.5]] * 3, references=[0, 1, 1], k_values=(1, 2)
    )
    assert result["image_retrieval_recall@1"] == 0.0 and result["text_retrieval_recall@1"] == 0.0
    # At k=2 each caption has one tied negative image (hit). Image 0 has two tied negative captions (miss),
    # image 1 only one (hit).
    assert result["image_retrieval_recall@2"] == 1.0
    assert result["text_retrieval_recall@2"] == 0.5


@pytest.mark.parametrize(
    ("predictions", "references", "kwargs", "message"),
    [
        ([[0.1, 0.2], [0.3, float("inf")]], [0, 1], {}, r"1 NaN/inf similarities"),
        ([[0.1, 0.2], [0.3, 0.4]], [0, 3], {}, r"outside \[0, 2\), e.g. \[3\]; predictions has 2 columns"),
        ([[0.1, 0.2], [0.3]], [0, 1], {}, r"different lengths \[1, 2\]"),
        ([[0.1, 0.2]], [0], {"k_values": [1, -5]}, r"k_values=\[1, -5\]"),
    ],
)
def test_retrieval_recall_bad_input(predictions, references, kwargs, message):
    with pytest.raises(ValueError, match=message):
        load_metric("retrieval_recall").compute(predictions=predictions, references=references, **kwargs)


def test_load_metric_unknown_name_lists_the_available_ones():
    with pytest.raises(ValueError, match=r"No metric 'accuracy'.*\['retrieval_recall', 'zeroshot_accuracy'\]"):
        load_metric("accuracy")
