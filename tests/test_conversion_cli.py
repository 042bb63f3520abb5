"""The converter's command line and output folder (`python -m modeling_mobileclip.conversion`, `main`): a complete
Hub folder written atomically, bad input, --fuse/--dtype, --overwrite and --push-to-hub (against the fake Hub)."""

import json
import os
import subprocess
import sys
from pathlib import Path
from unittest import mock

import pytest
import torch
from conversion_fixtures import hidden_leftovers, s0_constant_file_fixture, stub_card_fixture  # noqa: F401
from fake_hub import fake_hub_fixture  # noqa: F401  (provides the fake_hub fixture)
from fixtures.convert_checkpoints import constant_apple_state_dict, random_apple_state_dict
from safetensors.torch import load_file
from test_convert import assert_same_weights

from modeling_mobileclip import MobileCLIPModel
from modeling_mobileclip.conversion import output_folder
from modeling_mobileclip.conversion.cli import main
from modeling_mobileclip.conversion.convert import convert

REPO_ROOT = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------------------------------------------
# CLI and output folder (full-size mobileclip-s0; "constant" files are stride-0 tensors, a few hundred KB on disk)
# ----------------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def s0_random_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "mobileclip_s0.pt"
    torch.save(random_apple_state_dict("mobileclip_s0", seed=3), path)
    return path


@pytest.mark.slow
def test_cli_command_writes_a_complete_hub_folder(s0_random_file, tmp_path):
    """The exact command form, in a fresh interpreter; the folder loads through the Auto classes."""
    out = tmp_path / "mobileclip-s0"
    licence = tmp_path / "LICENSE_MODELS"
    licence.write_text("Apple Machine Learning Research Model License Agreement (test copy)\n")
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    proc = subprocess.run([sys.executable, "-m", "modeling_mobileclip.conversion", "--variant", "mobileclip-s0",
                           "--checkpoint", str(s0_random_file), "--output", str(out), "--license-file", str(licence)],
                          capture_output=True, text=True, env=env, cwd=REPO_ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "apple format, 893 keys" in proc.stdout and f"wrote {out}" in proc.stdout
    names = {p.name for p in out.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "processor_config.json",
            "configuration_mobileclip.py", "modeling_mobileclip.py", "processing_mobileclip.py",
            "README.md", "LICENSE", "handler.py", "requirements.txt"} <= names  # handler: Inference Endpoints
    assert (out / "LICENSE").read_bytes() == licence.read_bytes()
    config = json.loads((out / "config.json").read_text())
    assert config["auto_map"]["AutoModelForZeroShotImageClassification"] == "modeling_mobileclip.MobileCLIPModel"
    assert {"AutoConfig", "AutoModel"} <= config["auto_map"].keys() and config["variant"] == "mobileclip-s0"
    card = (out / "README.md").read_text()
    for line in ("license: other", "license_name: apple-amlr", "library_name: transformers",
                 "pipeline_tag: zero-shot-image-classification"):
        assert line in card
    assert "apple/MobileCLIP-S0" in card  # attribution / provenance
    assert hidden_leftovers(tmp_path) == []
    # Weights are exactly the converted checkpoint.
    from transformers import AutoModel, AutoProcessor

    model = AutoModel.from_pretrained(out, trust_remote_code=True)
    expected, _ = convert(s0_random_file, "mobileclip-s0")
    assert_same_weights(model, expected)
    assert AutoProcessor.from_pretrained(out, trust_remote_code=True).image_processor.crop_size["height"] == 256


@pytest.mark.slow
def test_cli_fuse_and_dtype(s0_random_file, tmp_path):
    out = tmp_path / "fused-bf16"
    assert main(["--variant", "mobileclip-s0", "--checkpoint", str(s0_random_file), "--output", str(out),
                 "--fuse", "--dtype", "bf16"]) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["vision_config"]["inference_mode"] and config["text_config"]["inference_mode"]
    assert config["dtype"] == "bfloat16"
    weights = load_file(str(out / "model.safetensors"))
    assert {v.dtype for v in weights.values() if v.is_floating_point()} == {torch.bfloat16}
    assert not any(".rbr_" in k or "conv_scale" in k or "mixer_bn" in k for k in weights)
    model = MobileCLIPModel.from_pretrained(out)
    assert model.dtype == torch.bfloat16 and model.config.vision_config.inference_mode
    # Exactly the un-fused conversion, re-parameterised in float32 and then cast (what test_parity.py measures).
    unfused, _ = convert(s0_random_file, "mobileclip-s0")
    assert_same_weights(model, unfused.reparameterize().to(torch.bfloat16))


def test_cli_refuses_an_existing_output_and_a_wrong_variant(s0_constant_file, tmp_path, capsys):
    out = tmp_path / "exists"
    out.mkdir()
    assert main(["--variant", "mobileclip-s0", "--checkpoint", str(s0_constant_file), "--output", str(out)]) == 1
    assert "already exists; pass --overwrite" in capsys.readouterr().err
    s1 = tmp_path / "mobileclip_s1.pt"
    torch.save(constant_apple_state_dict("mobileclip_s1"), s1)
    assert main(["--variant", "mobileclip-s0", "--checkpoint", str(s1), "--output", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err
    assert "does not match variant 'mobileclip-s0'" in err and "--variant mobileclip-s1" in err
    assert not (tmp_path / "o").exists()
    with pytest.raises(SystemExit) as info:
        main(["--variant", "mobileclip-s9", "--checkpoint", str(s1), "--output", str(tmp_path / "o")])
    assert info.value.code == 2
    assert "mobileclip2-l-14" in capsys.readouterr().err  # the valid variants are listed


def test_overwrite_replaces_atomically_and_failures_leave_nothing_behind(s0_constant_file, tmp_path, stub_card):
    out = tmp_path / "model"
    out.mkdir()
    (out / "old.txt").write_text("previous conversion")
    args = ["--variant", "mobileclip-s0", "--checkpoint", str(s0_constant_file), "--output", str(out),
            "--overwrite"]

    def fail(*args, **kwargs):
        raise OSError("disk full")

    # A failure while writing keeps the old folder intact and removes the partial one.
    with mock.patch.object(output_folder, "_write_model_card", fail), pytest.raises(OSError, match="disk full"):
        main(args)
    assert (out / "old.txt").exists() and hidden_leftovers(tmp_path) == []
    fresh = tmp_path / "fresh"
    with mock.patch.object(output_folder, "_verify_saved", fail), pytest.raises(OSError):
        main([*args[:5], str(fresh)])
    assert not fresh.exists() and hidden_leftovers(tmp_path) == []
    # A successful --overwrite swaps the folder in.
    assert main(args) == 0
    assert not (out / "old.txt").exists() and (out / "model.safetensors").exists()
    assert hidden_leftovers(tmp_path) == []
    umask = os.umask(0)
    os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o777 & ~umask  # not mkdtemp's 0700


def test_push_to_hub_uploads_the_folder_and_it_loads_from_the_hub(s0_constant_file, tmp_path, fake_hub, capsys):
    """--push-to-hub against the in-process fake Hub: the repo holds exactly the output folder (with the real model
    card and its widget images) and loads from the Hub; a refused push keeps the converted folder."""
    from transformers import AutoModel

    out = tmp_path / "pushed"
    args = ["--variant", "mobileclip-s0", "--checkpoint", str(s0_constant_file), "--output", str(out),
            "--push-to-hub", "org/mobileclip-s0"]
    fake_hub.fail("commit", status=403, times=1)
    assert main(args) == 1
    assert "hf upload org/mobileclip-s0" in capsys.readouterr().err and (out / "model.safetensors").exists()
    assert main([*args, "--overwrite", "--private"]) == 0
    local = {str(p.relative_to(out)): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert fake_hub.files("org/mobileclip-s0") == local
    assert any(name.startswith("widget/") for name in local) and "sha256" in local["README.md"].decode()
    assert all(c.message.startswith("Convert mobileclip-s0 from mobileclip_s0_constant.pt")
               for c in fake_hub.commits("org/mobileclip-s0"))
    assert_same_weights(AutoModel.from_pretrained("org/mobileclip-s0", trust_remote_code=True),
                         MobileCLIPModel.from_pretrained(out))


def test_bad_repo_id_fails_before_converting(s0_constant_file, tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        main(["--variant", "mobileclip-s0", "--checkpoint", str(s0_constant_file), "--output", str(tmp_path / "o"),
              "--push-to-hub", "not a repo id"])
    assert info.value.code == 2 and "not a repo id" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
