"""Hub model and dataset cards for mobileclip-hf (templates `*.md.j2` rendered with `ModelCard.from_template`)."""

from .generate import (
    MobileCLIPModelCard,
    WidgetExample,
    default_widget_examples,
    generate_dataset_card,
    generate_model_card,
    validate_card,
    zero_shot_scores,
)

__all__ = [
    "MobileCLIPModelCard",
    "WidgetExample",
    "default_widget_examples",
    "generate_dataset_card",
    "generate_model_card",
    "validate_card",
    "zero_shot_scores",
]
