"""The offline zero-shot demo (`python -m modeling_mobileclip.evaluation.demo`): a preset with random weights, fused,
saved as a Hub-style folder and reloaded by `pipeline("zero-shot-image-classification")`."""

import pytest

from modeling_mobileclip.evaluation.demo import LABELS, main


def test_demo_saves_a_folder_the_pipeline_reloads_and_classifies(tmp_path, capsys):
    result = main(["--variant", "mobileclip-s0", "--output", str(tmp_path / "demo")])
    assert sorted(row["label"] for row in result) == sorted(LABELS)
    assert sum(row["score"] for row in result) == pytest.approx(1.0, abs=1e-5)
    saved = {path.name for path in (tmp_path / "demo").iterdir()}
    assert {"config.json", "model.safetensors", "processor_config.json"} <= saved
    assert "(random weights, fused) saved to" in capsys.readouterr().out
