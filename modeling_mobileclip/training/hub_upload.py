"""`--push-to-hub` during training: checkpoints in the background, the final model at the end."""

from __future__ import annotations

import sys
from pathlib import Path


class HubUploader:
    """`--push-to-hub`: each checkpoint to `last-checkpoint/` in the background (a snapshot of its files, replacing
    the previous one, one upload at a time), the final model to the repo root at the end."""

    def __init__(self, args, accelerator):
        self.repo_id, self.folder, self.private = args.push_to_hub, Path(args.output_dir), args.hub_private or None
        self.enabled = self.repo_id is not None and accelerator.is_main_process
        self.pending = None

    def checkpoint(self, path: Path, step: int) -> None:
        if not self.enabled:
            return
        from hub_cards.push import push_folder_to_hub

        self.wait()  # the previous upload had a whole checkpoint interval; uploads never pile up
        self.pending = push_folder_to_hub(path, self.repo_id, commit_message=f"Checkpoint at step {step}",
                                          path_in_repo="last-checkpoint", delete_patterns="*", private=self.private,
                                          run_as_future=True)

    def wait(self) -> None:
        if self.pending is None:
            return
        from hub_cards.push import HubPushError

        try:
            self.pending.result()
        except HubPushError as err:  # a lost checkpoint upload must not stop training; the final push will tell
            print(f"Warning: {err}", file=sys.stderr)
        self.pending = None

    def final(self) -> None:
        if not self.enabled:
            return
        from hub_cards.push import push_folder_to_hub

        self.wait()
        push_folder_to_hub(self.folder, self.repo_id, commit_message="Final model (train_accelerate.py)",
                           ignore_patterns=["checkpoints/*"], private=self.private)
        print(f"Pushed the final model to https://huggingface.co/{self.repo_id}")


