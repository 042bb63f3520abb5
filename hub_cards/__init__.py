"""Hub model and dataset cards for mobileclip-hf (templates `*.md.j2` rendered with `ModelCard.from_template`)."""

from .common import validate_card
from .dataset_card import generate_dataset_card
from .model_card import (
    MobileCLIPModelCard,
    WidgetExample,
    default_widget_examples,
    generate_model_card,
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
