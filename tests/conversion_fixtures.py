"""Fixtures of the converter's folder tests (test_conversion_cli.py, test_conversion_staging.py): a full-size
mobileclip-s0 checkpoint of stride-0 tensors (a few hundred KB on disk), a stub model card, the hidden leftovers."""

from pathlib import Path

import pytest
import torch
from fixtures.convert_checkpoints import constant_apple_state_dict

from modeling_mobileclip.conversion import output_folder


@pytest.fixture(name="s0_constant_file", scope="module")
def s0_constant_file_fixture(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "mobileclip_s0_constant.pt"
    torch.save(constant_apple_state_dict("mobileclip_s0"), path)
    return path


@pytest.fixture(name="stub_card")
def stub_card_fixture(monkeypatch):
    """Skip the model card's widget inference (seconds per call) in tests about the folder, not the card."""
    def write(folder, *args, **kwargs):
        (folder / "README.md").write_text("card")

    monkeypatch.setattr(output_folder, "_write_model_card", write)


def hidden_leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))
