"""The command line of train_accelerate.py (modeling_mobileclip/training/args.py) and the logit-scale clamp of every
student family (training/students.py)."""

import io
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from modeling_mobileclip.training.args import parse_args
from modeling_mobileclip.training.students import student_class


@pytest.mark.parametrize("value, message", [
    ("gradient-checkpointing: 'false'", r"gradient-checkpointing: 'false' is not true/false"),
    ("caption-mode: bogus", r"argument --caption-mode: invalid choice: 'bogus'"),
    ("max-steps: 3.7", r"max-steps: 3.7 is not a whole number"),
    ("max-steps: true", r"max-steps: True is not a value for --max-steps"),
    ("max-steps: '12'\nlr: fast", r"argument --lr: invalid float value: 'fast'"),
    ("batch-size: 0", r"--batch-size 0: expected a positive number"),
])
def test_config_values_get_the_command_lines_checks(tmp_path, capsys, value, message):
    config = tmp_path / "run.yaml"
    config.write_text(value + "\n")
    with pytest.raises(SystemExit) as err:
        parse_args(["--config", str(config)])
    assert err.value.code == 2
    assert re.search(message, capsys.readouterr().err)


def test_config_booleans_and_lists_and_the_command_line_wins(tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text("gradient-checkpointing: false\nloss-weights: [1, 0]\nmax-steps: 30\ndata-mode: stream\n")
    args = parse_args(["--config", str(config), "--max-steps", "7"])
    assert (args.gradient_checkpointing, args.loss_weights, args.max_steps, args.data_mode) == \
        (False, [1.0, 0.0], 7, "stream")


def test_length_flags_and_their_defaults():
    assert parse_args([]).max_steps == 1000
    args = parse_args(["--epochs", "2"])
    assert (args.max_steps, args.epochs) == (None, 2)
    with pytest.raises(SystemExit):
        parse_args(["--samples", "-5"])


@pytest.mark.parametrize("name", ["tiny", "tiny-clip", "tiny-siglip", "tiny-open-clip"])
def test_logit_scale_parameter_is_clamped_after_crossing_ln_100(name):
    """AdamW would push the parameter past ln 100, where exp().clamp(max=100) has a zero gradient and the parameter
    could never come back; the clamp after the step keeps it at ln 100, from where it moves again."""
    student = student_class(name)(name)
    model = student.model
    scale = model.logit_scale
    with torch.no_grad():
        scale.fill_(math.log(100) - 1e-3)
    optimizer = torch.optim.AdamW([scale], lr=0.05, weight_decay=0.0)
    for direction in (-1.0, -1.0) + (1.0,) * 10:  # up, up (crossing ln 100), then down (Adam turns after a few)
        optimizer.zero_grad()
        exp_scale = student.logit_scale(model, forward_output(model))
        (direction * exp_scale).backward()
        assert scale.grad is not None and scale.grad.item() != 0.0, (name, scale.item())
        optimizer.step()
        student.clamp_logit_scale(model)
        assert 0.0 <= scale.item() and scale.exp().item() <= 100.0, (name, scale.item())
    assert scale.item() < math.log(100) - 0.01  # it came back down


def forward_output(model):
    """The forward output a student reads its scale from (MobileCLIP returns it; the others read the parameter)."""
    class Output:
        logit_scale = model.logit_scale.exp().clamp(max=100)
    return Output()


def test_config_file_carries_flags_and_the_command_line_wins(tmp_path, capsys):
    config = tmp_path / "run.yaml"
    config.write_text("model: tiny-clip\nmax-steps: 30000\nloss_weights: [0.5, 1]\nteacher-logit-scales: [70, 60]\n"
                      "gradient-checkpointing: true\n")
    args = parse_args(["--config", str(config), "--max-steps", "7"])
    assert (args.model, args.max_steps, args.loss_weights, args.teacher_logit_scales, args.gradient_checkpointing) == \
        ("tiny-clip", 7, [0.5, 1.0], [70.0, 60.0], True)
    (tmp_path / "run.json").write_text(json.dumps({"batch-size": 16, "max_step": 3}))
    with pytest.raises(SystemExit):
        parse_args(["--config", str(tmp_path / "run.json")])
    assert "unknown flag(s) ['max_step']" in capsys.readouterr().err


def test_a_user_error_is_one_line_and_exit_status_2(tmp_path):
    script = Path(__file__).resolve().parents[1] / "train_accelerate.py"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    args = [sys.executable, str(script), "--train-data", str(tmp_path / "*.tar"), "--output-dir", str(tmp_path / "o")]
    done = subprocess.run(args, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "error: --train-data needs --eval-data (a held-out set for the periodic evaluation: images with labels and/or "
        "captions)."]
    debug = subprocess.run([*args, "--debug"], capture_output=True, text=True, env=env, timeout=300)
    assert debug.returncode == 1 and "Traceback (most recent call last)" in debug.stderr


@pytest.fixture()
def answers_yes(monkeypatch):
    """stdin that answers "y": had transformers been left to ask (trust_remote_code=None), the code would run."""
    monkeypatch.setattr(sys, "stdin", io.StringIO("y\n" * 10))


def test_a_student_folder_with_its_own_code_is_refused_without_asking(tmp_path, answers_yes):
    """Issue 15.3d: the folder's auto_map names marker_clip.py, which writes `marker` when imported."""
    from fixtures.remote_code_model import save_marker_clip

    from hub_cards import generate_model_card
    from hub_cards.remote_code import RemoteCodeRefusedError
    from modeling_mobileclip.training.students import CLIPStudent

    marker = tmp_path / "marker"
    folder = str(save_marker_clip(tmp_path / "marker_clip", marker))
    with pytest.raises(RemoteCodeRefusedError, match=rf"--model '{re.escape(folder)}' ships Python code of its own"
                       r".*pass --trust-remote-code to run it"):
        student_class(folder)
    with pytest.raises(RemoteCodeRefusedError, match="pass --trust-remote-code"):
        CLIPStudent(folder)
    with pytest.raises(RemoteCodeRefusedError, match=r"model_dir_or_model .* pass trust_remote_code=True to run it"):
        generate_model_card(folder, license="mit", converted_from_apple=False)
    assert not marker.exists()


def test_a_saved_mobileclip_student_loads_without_remote_code(tmp_path, answers_yes):
    from dataset_scripts.toy_data import tiny_mobileclip
    from modeling_mobileclip import MobileCLIPModel

    model, processor = tiny_mobileclip()
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    assert "auto_map" in json.loads((tmp_path / "config.json").read_text())
    student = student_class(str(tmp_path))(str(tmp_path))
    assert type(student.model) is MobileCLIPModel and sys.stdin.read(1) == "y"  # nothing was asked
