"""What the data did in a run: the per-step uid log (`--log-sample-uids`) and the end-of-run counts of samples trained
per epoch, skipped and not trained, over all processes."""

from __future__ import annotations

import json
from pathlib import Path

from accelerate.utils import gather_object


def log_uids(run, output_dir, batch: dict) -> None:
    """--log-sample-uids: one line per micro-step with the global batch's uids in rank order."""
    uids = gather_object(batch["uids"])
    if run.accelerator.is_main_process:
        Path(output_dir).mkdir(parents=True, exist_ok=True)
        with (Path(output_dir) / "sample_uids.jsonl").open("a") as f:
            f.write(json.dumps({"step": run.step + 1, "uids": uids}) + "\n")


def truncate_uid_log(out: Path, step: int) -> None:
    """A resumed run re-trains the steps after its checkpoint: drop what the killed run logged for them."""
    log = out / "sample_uids.jsonl"
    if log.is_file():
        kept = [line for line in log.read_text().splitlines() if json.loads(line)["step"] <= step]
        log.write_text("".join(line + "\n" for line in kept))


def report_data(run) -> None:
    """Samples trained per epoch, skipped and dropped, over all processes (logged and printed once)."""
    counts = gather_object([(dict(run.trained_per_epoch), dict(run.skipped), run.dropped)])
    trained, skipped, dropped = {}, {}, 0
    for per_epoch, skips, drops in counts:
        for key, value in per_epoch.items():
            trained[key] = trained.get(key, 0) + value
        for key, value in skips.items():
            skipped[key] = skipped.get(key, 0) + value
        dropped += drops
    if trained:
        run.accelerator.print(f"Samples trained per epoch: {dict(sorted(trained.items()))}; skipped: {skipped or 0}; "
                              f"not trained at the end of --epochs (partial batches, uneven shards): {dropped}")
    run.accelerator.log({**{f"data/skipped_{k}": v for k, v in skipped.items()}, "data/dropped": dropped},
                        step=run.step)
