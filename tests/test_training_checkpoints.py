"""Checkpoints of train_accelerate.py (modeling_mobileclip/training/checkpoints.py): rotation under a kill, and a
resume that runs no code from the checkpoint folder."""

import os
import pickle
import shutil
import subprocess
import sys
import textwrap
import traceback
from pathlib import Path

import pytest
from conftest import train_in_process

from modeling_mobileclip.training.checkpoints import COMPLETE_MARKER, checkpoint_folders, latest_checkpoint

ROOT = Path(__file__).resolve().parents[1]
ENV = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
TOY = ["--toy-spec", "num_train=32,samples_per_shard=16,num_augmentations=2,teacher_images=64,teacher_steps=5,"
       "teacher_batch_size=16"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def train_flags(cache, out, *extra):
    return [*TOY, "--cache-dir", str(cache), "--output-dir", str(out), "--batch-size", "4", "--eval-every", "100",
            "--report-to", "jsonl", "--no-progress", *extra]


def train_code(cache, out, *extra, before=""):
    """A Python program that (after `before`) runs train_accelerate.main on the toy set, in a fresh process."""
    flags = train_flags(cache, out, *extra)
    return textwrap.dedent(before) + f"\nimport train_accelerate\ntrain_accelerate.main({flags!r})\n"


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """One toy set (its teachers trained, its shards reinforced) for every run of this module: built by the first."""
    return tmp_path_factory.mktemp("toy_cache")


@pytest.fixture(scope="module")
def two_steps(cache, tmp_path_factory):
    """A run of 2 steps with its checkpoint; each crafted-checkpoint case tampers with a copy of it."""
    out = tmp_path_factory.mktemp("two_steps") / "run"
    run(train_code(cache, out, "--max-steps", "2", "--checkpoint-every", "2"))
    return out


def run(code, expect_rc=0):
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=ENV, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == expect_rc, result.stderr[-3000:]
    return result


def test_a_kill_inside_save_state_keeps_the_last_complete_checkpoint(cache, tmp_path):
    """--checkpoints-total-limit 1: the second save is killed (SIGKILL) after accelerate wrote the model but before
    the marker; the first checkpoint must survive and --resume must find it."""
    out = tmp_path / "run"
    kill_in_second_save = """
        import os, signal
        import accelerate
        original, calls = accelerate.Accelerator.save_state, []
        def save_state(self, *args, **kwargs):
            calls.append(1)
            path = original(self, *args, **kwargs)
            if len(calls) == 2:
                os.kill(os.getpid(), signal.SIGKILL)
            return path
        accelerate.Accelerator.save_state = save_state
    """
    run(train_code(cache, out, "--max-steps", "6", "--checkpoint-every", "2",
                   "--checkpoints-total-limit", "1", before=kill_in_second_save), expect_rc=-9)
    folders = checkpoint_folders(out)
    assert [(folder / COMPLETE_MARKER).is_file() for _, folder in folders] == [True, False]
    path, _ = latest_checkpoint(out)
    assert (path / COMPLETE_MARKER).read_text() == '{"step": 2}'


    train_in_process(train_flags(cache, out, "--max-steps", "6", "--checkpoint-every", "2",
                                 "--checkpoints-total-limit", "1", "--resume", str(out)))  # here: no interpreter start
    assert [(folder / COMPLETE_MARKER).is_file() for _, folder in checkpoint_folders(out)] == [True]
    assert (out / "model.safetensors").is_file()


class _Payload:
    """Unpickling this creates a marker file: what a crafted checkpoint would do with full pickle."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.parametrize("member, refusal", [
    # nothing of ours is pickled (our state is JSON), so no custom object is registered: accelerate refuses the file
    ("custom_checkpoint_0.pkl", "does not match the number of registered objects"),
    # accelerate reads its own files with torch.load(weights_only=True) (numpy's array types allowed): refused; a
    # bad RNG file is skipped by accelerate ("Could not load random states", at INFO level) and the run goes on
    ("random_states_0.pkl", None),
    ("optimizer.bin", "Weights only load failed"),
])
def test_resume_runs_no_code_from_a_crafted_checkpoint(cache, two_steps, tmp_path, member, refusal):
    out, marker = tmp_path / "run", tmp_path / "pwned"
    shutil.copytree(two_steps, out)
    path, _ = latest_checkpoint(out)
    (path / member).write_bytes(pickle.dumps(_Payload(str(marker))))
    resume = train_flags(cache, out, "--max-steps", "4", "--checkpoint-every", "2", "--resume", str(out))
    try:  # in this process (no interpreter to start): a payload that ran would create the marker here as well
        train_in_process(resume)
        failure = None
    except Exception as error:  # noqa: BLE001  (the refusal, whatever accelerate or torch raises)
        failure = "".join(traceback.format_exception(error))
    assert not marker.exists(), f"{member}: unpickling ran code"
    if refusal is None:
        assert failure is None, failure[-2000:]
    else:
        assert failure is not None and refusal in failure, failure
