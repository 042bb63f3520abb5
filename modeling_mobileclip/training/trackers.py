"""Trackers for `--report-to`: accelerate's own by name, plus a dependency-free JSONL tracker."""

from __future__ import annotations

import json
from pathlib import Path

from accelerate.tracking import GeneralTracker, on_main_process


class JSONLTracker(GeneralTracker):
    """Appends one JSON object per `log` call to `<logging_dir>/<run>/metrics.jsonl` (offline, dependency-free)."""

    name = "jsonl"
    requires_logging_directory = True

    @on_main_process
    def __init__(self, run_name: str, logging_dir: str):
        super().__init__()
        self.path = Path(logging_dir) / run_name / "metrics.jsonl"
        self.path.parent.mkdir(parents=True, exist_ok=True)

    @property
    def tracker(self):
        return self.path

    @on_main_process
    def store_init_configuration(self, values: dict):
        (self.path.parent / "config.json").write_text(json.dumps(values, indent=1, default=str))

    @on_main_process
    def log(self, values: dict, step: int | None = None, **kwargs):
        with self.path.open("a") as f:
            f.write(json.dumps({"step": step, **{k: float(v) for k, v in values.items()}}) + "\n")


def trackers(args) -> list:
    from accelerate.tracking import filter_trackers
    from accelerate.utils import LoggerType

    names = [n.strip() for n in args.report_to.split(",") if n.strip() and n.strip() != "none"]
    logs = str(Path(args.output_dir) / "logs")
    chosen = [JSONLTracker("mobileclip", logs)] if "jsonl" in names or "all" in names else []
    wanted = [n for n in names if n != "jsonl"]
    unknown = sorted(set(wanted) - {t.value for t in LoggerType})
    if unknown:
        raise ValueError(f"--report-to {args.report_to!r}: unknown tracker(s) {unknown}; choose from jsonl, "
                         f"{', '.join(t.value for t in LoggerType)} or none.")
    return chosen + filter_trackers(wanted, logs) if wanted else chosen


