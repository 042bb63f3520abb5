"""The Inference Endpoints files of a model repo: `handler.py` (`endpoint_handler.py`) and its `requirements.txt`.

Every transformers-format model folder this project writes for the Hub gets them: MobileCLIP cards carry them as
assets (`MobileCLIPModelCard.write`, `push_model_to_hub`, the converter's output folder), and trained CLIP / SigLIP
students write them next to their weights. Deploying: docs/hub.md#inference-endpoints.
"""

from __future__ import annotations

from pathlib import Path

HANDLER_FILE = "handler.py"
REQUIREMENTS_FILE = "requirements.txt"
# What the endpoint installs on top of its image (torch, transformers): the pins of this project's pyproject.toml
# (tests/test_hub_push.py checks they agree); MobileCLIP's remote code also needs timm.
TRANSFORMERS_REQUIREMENT = "transformers>=5.23,<6"
TIMM_REQUIREMENT = "timm>=1.0.31,<2"


def endpoint_files(model_type: str) -> dict[str, bytes]:
    """{repo path: bytes} of the handler and its requirements for a model of `model_type` (config.json's)."""
    requirements = [TRANSFORMERS_REQUIREMENT] + ([TIMM_REQUIREMENT] if model_type == "mobileclip" else [])
    handler = (Path(__file__).with_name("endpoint_handler.py")).read_bytes()
    return {HANDLER_FILE: handler, REQUIREMENTS_FILE: ("\n".join(requirements) + "\n").encode()}


def write_endpoint_files(folder: str | Path, model_type: str) -> list[Path]:
    folder = Path(folder)
    written = []
    for name, data in endpoint_files(model_type).items():
        (folder / name).write_bytes(data)
        written.append(folder / name)
    return written
