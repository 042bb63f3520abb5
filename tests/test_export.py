"""Export: two fused encoders with a dynamic batch, equal to PyTorch in onnxruntime; CoreML conversion; bad input."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime
import pytest
import torch
from conftest import calibrated, save_tiny_s0, tiny_config
from fixtures.remote_code_model import assert_refused_without_running, copied_model_code, save_marker_clip

from modeling_mobileclip import MobileCLIPModel, MobileCLIPProcessor
from modeling_mobileclip.export.cli import main as export_main

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def unfused_s0_dir(tmp_path_factory, tokenizer):
    """A tiny MobileCLIP-S0-family model saved un-fused (as converted train-time checkpoints are) with its processor."""
    path = tmp_path_factory.mktemp("s0")
    save_tiny_s0(path, tokenizer)
    return path


# An export killed by a real SIGKILL of its own process as it starts writing into its staging folder.
KILLED_WHILE_EXPORTING = ("import os, signal, sys\nfrom modeling_mobileclip.export import cli\n"
                          "cli.export_onnx = lambda *args: os.kill(os.getpid(), signal.SIGKILL)\nsys.exit(cli.run())")


def test_onnx_export_fuses_and_matches_the_unfused_pytorch_model(unfused_s0_dir, tmp_path, capsys):
    """Also issue 15.3b: the staging folder is named after its writer (conversion/staging.py), so this export into
    the same --output removes what a killed one left, and keeps what a live one is writing."""
    killed = subprocess.run([sys.executable, "-c", KILLED_WHILE_EXPORTING, "--model", str(unfused_s0_dir),
                             "--output", str(tmp_path / "onnx")], cwd=REPO_ROOT, capture_output=True, text=True,
                            env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=300, check=False)  # fmt: skip
    assert killed.returncode == -9, killed.stderr
    (left,) = tmp_path.iterdir()
    assert left.name.startswith(".onnx.partial-") and left.is_dir()
    live = tmp_path / f".onnx.partial-{left.name.split('-')[-3]}-{os.getpid()}-0123abcd"  # this process: alive
    live.mkdir()

    summary = export_main(["--model", str(unfused_s0_dir), "--format", "onnx", "--output", str(tmp_path / "onnx")])
    said = capsys.readouterr().err
    assert "is not fused: fusing it first" in said
    assert f"removed {left.name}, the unfinished folder of a killed conversion" in said
    assert f"kept {live.name} in {tmp_path}: its writer process may still be running" in said
    live.rmdir()
    assert summary["max_abs_diff_vs_pytorch"]["image"] <= 1e-4
    assert summary["max_abs_diff_vs_pytorch"]["text"] <= 1e-4
    written = json.loads((tmp_path / "onnx" / "export_config.json").read_text())
    assert written == summary and written["image_size"] == 64 and written["context_length"] == 77
    assert sorted(p.name for p in tmp_path.iterdir()) == ["onnx"]  # the staging folder is gone
    processor = MobileCLIPProcessor.from_pretrained(tmp_path / "onnx")  # saved next to the encoders

    # Independent check through the processor against the un-fused PyTorch model, batch of 5 (dynamic axis).
    model = MobileCLIPModel.from_pretrained(unfused_s0_dir).eval()
    texts = ["a cat", "two dogs on a sofa", "x", "a photo of a car", "red"]
    inputs = processor(text=texts, images=[np.uint8(np.random.default_rng(i).integers(0, 256, (80, 70, 3)))
                                           for i in range(5)], return_tensors="np")
    with torch.no_grad():
        expected = model(input_ids=torch.from_numpy(inputs["input_ids"]),
                         pixel_values=torch.from_numpy(inputs["pixel_values"]))
    for kind, name in (("text", "input_ids"), ("image", "pixel_values")):
        session = onnxruntime.InferenceSession(str(tmp_path / "onnx" / f"{kind}_encoder.onnx"))
        got = session.run(None, {name: inputs[name].astype(np.int64 if kind == "text" else np.float32)})[0]
        assert got.shape == (5, 24)
        assert np.abs(got - getattr(expected, f"{kind}_embeds").numpy()).max() <= 1e-4
        assert np.abs(got[1:] - got[0]).max() > 1e-3  # the embeddings depend on the input: the check means something


def test_onnx_export_of_a_causal_vit_model_matches(tmp_path):
    """The MobileCLIP-B family (ViT image tower with conv stem, causal text tower), already fused."""
    torch.manual_seed(1)
    model = calibrated(MobileCLIPModel(tiny_config("vit-convstem")))
    model.eval().reparameterize().save_pretrained(tmp_path / "model")
    summary = export_main(["--model", str(tmp_path / "model"), "--output", str(tmp_path / "onnx")])
    assert max(summary["max_abs_diff_vs_pytorch"].values()) <= 1e-4


def test_coreml_conversion_runs_with_a_dynamic_batch(unfused_s0_dir, tmp_path):
    ct = pytest.importorskip("coremltools")
    summary = export_main(["--model", str(unfused_s0_dir), "--format", "coreml", "--output", str(tmp_path / "cml"),
                           "--max-batch", "8"])
    assert summary["image_encoder"] == "image_encoder.mlpackage" and summary["max_batch"] == 8
    for kind, name, dtype, shape in (("image", "pixel_values", "FLOAT32", [3, 64, 64]),
                                     ("text", "input_ids", "INT32", [77])):
        spec = ct.utils.load_spec(str(tmp_path / "cml" / f"{kind}_encoder.mlpackage"))
        (array,) = [i.type.multiArrayType for i in spec.description.input if i.name == name]
        assert ct.proto.FeatureTypes_pb2.ArrayFeatureType.ArrayDataType.Name(array.dataType) == dtype
        ranges = [(r.lowerBound, r.upperBound) for r in array.shapeRange.sizeRanges]
        assert ranges == [(1, 8)] + [(n, n) for n in shape]
        assert [o.name for o in spec.description.output] == [f"{kind}_embeds"]
        assert spec.WhichOneof("Type") == "mlProgram"
    if "max_abs_diff_vs_pytorch" in summary:  # macOS: the runtime exists and parity was checked
        assert max(summary["max_abs_diff_vs_pytorch"].values()) <= 1e-4


def test_export_bad_input_names_the_fix(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"--model '.*empty' has no config.json; pass a directory written by"):
        export_main(["--model", str(tmp_path / "empty"), "--output", str(tmp_path / "out")])
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match=r"--output '.*file' is a file; pass a directory"):
        export_main(["--model", str(tmp_path / "empty"), "--output", str(tmp_path / "file")])


def test_an_unwritable_output_folder_fails_before_the_model_is_loaded(unfused_s0_dir, tmp_path, capsys):
    """As for the converter (test_conversion_staging.py), with folders that refuse a new entry also to root."""
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(ValueError, match=r"--output .*file/onnx: .*file is a file, not a folder; choose an --output"):
        export_main(["--model", str(unfused_s0_dir), "--output", str(tmp_path / "file" / "onnx")])
    if Path("/proc").is_dir():
        with pytest.raises(ValueError, match=r"cannot create a folder in /proc .*; choose an --output in a folder"):
            export_main(["--model", str(unfused_s0_dir), "--output", "/proc/mobileclip-test/onnx"])
    assert "fusing it first" not in capsys.readouterr().err  # the model was not loaded


def test_python_dash_m_bad_input_exits_with_the_message(tmp_path):
    """`python -m modeling_mobileclip.export` (what the `mobileclip-export` console script runs too): bad input is one
    `error:` line and exit status 2, not a traceback."""
    (tmp_path / "empty").mkdir()
    done = subprocess.run([sys.executable, "-m", "modeling_mobileclip.export", "--model", str(tmp_path / "empty"),
                           "--output", str(tmp_path / "out")], cwd=REPO_ROOT, env={**os.environ, "HF_HUB_OFFLINE": "1"},
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 2
    assert "error: --model" in done.stderr and "has no config.json" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "out").exists()


def _export_run(*args, env=None):
    return subprocess.run([sys.executable, "-m", "modeling_mobileclip.export", *map(str, args)], cwd=REPO_ROOT,
                          env={**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})}, capture_output=True, text=True,
                          timeout=300)



def test_a_model_with_its_own_code_is_exported_only_with_trust_remote_code(tmp_path):
    """Issue 15.1: the folder's auto_map names marker_clip.py, which writes `marker` when imported."""
    marker = tmp_path / "marker"
    folder = save_marker_clip(tmp_path / "marker_clip", marker)
    env = {"HF_MODULES_CACHE": str(tmp_path / "modules")}
    args = ("--model", folder, "--output", tmp_path / "onnx", "--no-verify")
    refused = _export_run(*args, env=env)
    assert_refused_without_running(refused, folder, marker, tmp_path / "modules", returncode=2)
    assert not (tmp_path / "onnx").exists()

    trusted = _export_run(*args, "--trust-remote-code", env=env)
    assert trusted.returncode == 0, trusted.stderr
    assert marker.exists() and "marker_clip.py" in copied_model_code(tmp_path / "modules")
    assert json.loads((tmp_path / "onnx" / "export_config.json").read_text())["image_encoder"] == "image_encoder.onnx"


def test_a_mobileclip_folder_is_exported_without_the_flag_and_without_its_copied_code(unfused_s0_dir, tmp_path):
    """The installed classes load it: the folder's auto_map and modules (written by save_pretrained) stay unused."""
    assert "auto_map" in json.loads((unfused_s0_dir / "config.json").read_text())
    done = _export_run("--model", unfused_s0_dir, "--output", tmp_path / "onnx", "--no-verify",
                       env={"HF_MODULES_CACHE": str(tmp_path / "modules")})
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "onnx" / "export_config.json").is_file() and copied_model_code(tmp_path / "modules") == []

