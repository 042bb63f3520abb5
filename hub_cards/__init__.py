"""Hub model and dataset cards for mobileclip-hf (templates `*.md.j2` rendered with `ModelCard.from_template`), and
pushing folders to the Hub (`hub_cards.push`).

    common.py        what both cards share: citations, licences, attribution, validation against the Hub
    model_card.py    `generate_model_card`: metadata, usage snippets, widget examples computed by the model
    dataset_card.py  `generate_dataset_card`: the card that makes `load_dataset(<repo>)` work on reinforced shards
    push.py          `push_folder_to_hub` / `push_model_to_hub`: checks, retries, background pushes
    remote_code.py   the tools' `--trust-remote-code` flag: its help and the refusal message without it

Imports only the remote-code core of `modeling_mobileclip`; the tools, dataset_scripts and train_accelerate.py import
this package, never the other way round (tests/test_layout.py).
"""

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
