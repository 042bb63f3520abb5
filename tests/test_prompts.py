"""The shipped prompt templates and class names of `modeling_mobileclip.evaluation.prompts` (package data)."""

from modeling_mobileclip.evaluation.prompts import load_classnames, load_templates


def test_shipped_templates_and_classnames():
    templates = load_templates("openai-imagenet")
    assert len(templates) == 80 and all("{}" in t for t in templates)
    assert templates[0] == "a bad photo of a {}."
    classnames = load_classnames("imagenet")
    assert len(classnames) == 1000
    assert (classnames[0], classnames[1], classnames[-1]) == ("tench", "goldfish", "toilet paper")
