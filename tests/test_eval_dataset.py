"""`modeling_mobileclip.evaluation.eval_dataset`: class names from a label column. Loading and the other column roles
are exercised through the CLI in test_evaluation_cli.py."""

import datasets

from modeling_mobileclip.evaluation.eval_dataset import resolve_classnames
from modeling_mobileclip.evaluation.prompts import load_classnames


def test_classnames_from_class_label():
    def labelled(names):
        features = datasets.Features({"label": datasets.ClassLabel(names=names)})
        return datasets.Dataset.from_dict({"label": [0]}, features=features)

    assert resolve_classnames(labelled(["golden_retriever", "cat"]), "label", None, "x") == ["golden retriever", "cat"]
    # An imagefolder of ImageNet's val set is labelled by WordNet id: the shipped names replace them.
    wordnet_ids = [f"n{i:08d}" for i in range(1000)]
    assert resolve_classnames(labelled(wordnet_ids), "label", None, "x") == load_classnames("imagenet")
