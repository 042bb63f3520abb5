"""Checkpoint folders of a training run: writing, completing, rotating, finding and resuming them.

`checkpoints/checkpoint_<i>/` holds accelerate's `save_state` files (model, optimizer, RNG states) and, per process,
`training_state_<rank>.json`: the optimizer step, the LR schedule and the data position (the streaming loader's
`state_dict()`), in JSON so that a resume unpickles none of our state. The main process writes `COMPLETE_MARKER` once
every process has written its files; only marked folders count, and old ones are deleted only after a new one is
marked, so a run killed at any moment keeps its last complete checkpoint.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

COMPLETE_MARKER = "checkpoint_complete.json"


def checkpoint_folders(output_dir: Path) -> list[tuple[int, Path]]:
    """accelerate's `checkpoints/checkpoint_<i>` folders as (i, path), complete or not, oldest first."""
    found = []
    for folder in (Path(output_dir) / "checkpoints").glob("checkpoint_*"):
        match = re.fullmatch(r"checkpoint_(\d+)", folder.name)
        if match:
            found.append((int(match.group(1)), folder))
    return sorted(found)


def latest_checkpoint(output_dir: Path) -> tuple[Path, int] | None:
    """The newest *complete* `checkpoints/checkpoint_<i>` (incomplete ones, e.g. from a killed run, are ignored)."""
    complete = [(i, folder) for i, folder in checkpoint_folders(output_dir) if (folder / COMPLETE_MARKER).is_file()]
    if not complete:
        return None
    iteration, folder = complete[-1]
    return folder, iteration


def save_checkpoint(accelerator, training_state: dict, total_limit: int) -> Path:
    """accelerate's state + this process's JSON state, the marker, then the rotation down to `total_limit`."""
    path = Path(accelerator.save_state())
    state_file = path / f"training_state_{accelerator.process_index}.json"
    state_file.write_text(json.dumps(training_state))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        (path / COMPLETE_MARKER).write_text(json.dumps({"step": training_state["step"]}))
        complete = [(i, f) for i, f in checkpoint_folders(path.parent.parent) if (f / COMPLETE_MARKER).is_file()]
        for _, folder in complete[:-total_limit]:
            shutil.rmtree(folder)
    accelerator.wait_for_everyone()
    return path


def load_checkpoint(accelerator, output_dir: Path) -> dict:
    """Restore accelerate's state from the newest complete checkpoint; returns this process's JSON state."""
    found = latest_checkpoint(output_dir)
    if found is None:
        raise ValueError(f"--resume {output_dir}: no complete checkpoint under {output_dir}/checkpoints.")
    path, iteration = found
    if accelerator.is_main_process:  # newer, incomplete folders: drop them so automatic naming can reuse the numbers
        for i, folder in checkpoint_folders(output_dir):
            if i > iteration:
                shutil.rmtree(folder)
    accelerator.wait_for_everyone()
    state_file = path / f"training_state_{accelerator.process_index}.json"
    if not state_file.is_file():
        raise ValueError(f"--resume {output_dir}: {path} has no {state_file.name}; it was written by "
                         f"{_process_count(path)} process(es) and this run has {accelerator.num_processes}. Resume "
                         f"with the same number of processes.")
    accelerator.load_state(str(path))
    accelerator.project_configuration.iteration = iteration + 1  # load_state does not restore it
    return {"path": str(path), **json.loads(state_file.read_text())}


def _process_count(path: Path) -> int:
    return len(list(path.glob("training_state_*.json")))


def check_output_dir(args) -> None:
    out = Path(args.output_dir)
    if args.resume is None and (out / "checkpoints").exists() and not args.overwrite_output_dir:
        raise ValueError(f"{out} already holds checkpoints; continue with --resume {out}, choose another "
                         f"--output-dir, or pass --overwrite-output-dir.")
