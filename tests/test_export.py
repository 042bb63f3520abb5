"""ONNX export: two fused encoders with a dynamic batch, equal to PyTorch in onnxruntime."""

import json

import numpy as np
import onnxruntime
import torch
from conftest import randomize_statistics, tiny_config

from modeling_mobileclip import MobileCLIPModel, MobileCLIPProcessor
from modeling_mobileclip.export import main as export_main


def test_export_fuses_and_matches_pytorch(tmp_path, tokenizer, capsys):
    torch.manual_seed(0)
    model = randomize_statistics(MobileCLIPModel(tiny_config("mci-s0text"))).eval()
    model.save_pretrained(tmp_path / "model")
    processor = MobileCLIPProcessor.from_variant("mobileclip-s0", tokenizer=tokenizer)
    processor.image_processor.size, processor.image_processor.crop_size = {"shortest_edge": 64}, {"height": 64,
                                                                                                  "width": 64}
    processor.save_pretrained(tmp_path / "model")

    summary = export_main(["--model", str(tmp_path / "model"), "--output", str(tmp_path / "onnx")])
    assert "is not fused: fusing it first" in capsys.readouterr().out
    assert summary["max_abs_diff_vs_pytorch"]["image"] <= 1e-4
    assert summary["max_abs_diff_vs_pytorch"]["text"] <= 1e-4
    assert json.loads((tmp_path / "onnx" / "export_config.json").read_text())["image_size"] == 64
    assert (tmp_path / "onnx" / "processor_config.json").exists()

    # Independent check against the un-fused PyTorch model, batch of 5 through the dynamic axis.
    session = onnxruntime.InferenceSession(str(tmp_path / "onnx" / "text_encoder.onnx"))
    inputs = processor(text=["a cat", "two dogs on a sofa", "x", "a photo of a car", "red"], return_tensors="np")
    got = session.run(None, {"input_ids": inputs["input_ids"].astype(np.int64)})[0]
    with torch.no_grad():
        expected = model(input_ids=torch.from_numpy(inputs["input_ids"]), pixel_values=torch.rand(1, 3, 64, 64))
    assert got.shape == (5, 24)
    assert np.abs(got - expected.text_embeds.numpy()).max() <= 1e-4
