"""What the benchmarks share: their common options, interleaved timing with paired ratios, FLOP counts, the machine's
GEMM rate, trained-like weight magnitudes, the tiny config of the quick (CI) runs, and the results files: every
benchmark prints the machine it runs on and writes its table(s) to `<results dir>/<bench name>.md` plus the raw
numbers and that machine header to `<bench name>.json` (docs/benchmarks.md; `python -m benchmarks.render_docs` copies
the `.md` files into the docs).

Candidates run in turn within each round, and the order reverses every other round, so load from other jobs on the
machine and position effects (caches, allocator) hit every candidate alike. In a round each candidate makes
`--calls-per-round` back-to-back calls and keeps the fastest: on a machine shared with other jobs, a call that lost
its core for a while measures the other jobs, not the model. A ratio is taken per round (the calls ran seconds apart)
and the median of those per-round ratios is reported with its interquartile range: that range is the noise band a
claim such as "no slower" is read against.
"""

import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from modeling_mobileclip import MobileCLIPConfig, MobileCLIPTextConfig, MobileCLIPVisionConfig
from modeling_mobileclip.inference.machine import cpu_flags, cpu_model, openmp_policy

QUICK_ROUNDS = 2
REPO_ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = Path(__file__).resolve().with_name("results")


@dataclass(frozen=True)
class Schedule:
    """How candidates are timed: `rounds` interleaved rounds, the fastest of `calls_per_round` calls in each."""

    rounds: int
    calls_per_round: int

    def describe(self) -> str:
        # The OpenMP wait policy decides what a shared machine does to the timings (README: "Speed").
        return (f"median of {self.rounds} interleaved rounds (fastest of {self.calls_per_round} back-to-back calls in "
                f"each); ratios: median of the per-round ratios [interquartile range]; OMP_WAIT_POLICY="
                f"{os.environ.get('OMP_WAIT_POLICY', 'unset')}")


def benchmark_parser(description: str, quick: str, calls_per_round: int = 3) -> argparse.ArgumentParser:
    """A parser with the options every benchmark takes: --quick (the CI smoke run, no claims), --rounds,
    --calls-per-round, --threads."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help=f"smoke run, {QUICK_ROUNDS} rounds of 1 call: {quick}")
    parser.add_argument("--rounds", type=int, default=15, help="interleaved rounds (the median is reported)")
    parser.add_argument("--calls-per-round", type=int, default=calls_per_round,
                        help="back-to-back calls per candidate and round; the fastest counts")
    parser.add_argument("--threads", type=int, default=2, help="torch (and onnxruntime) intra-op threads")
    add_results_option(parser)
    return parser


def parse_benchmark_args(parser: argparse.ArgumentParser, argv=None) -> argparse.Namespace:
    """Parse, set the thread count and the seed; `args.schedule` is the timing Schedule (--quick: QUICK_ROUNDS rounds
    of one call)."""
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.calls_per_round < 1:
        parser.error(f"--rounds {args.rounds} and --calls-per-round {args.calls_per_round} must be positive.")
    args.schedule = Schedule(QUICK_ROUNDS, 1) if args.quick else Schedule(args.rounds, args.calls_per_round)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    return args


def caption_ids(batch: int, context_length: int = 77) -> torch.Tensor:
    """`<start> 19 tokens <end>` padded with 0 to the context length, as the MobileCLIP tokenizer pads."""
    ids = torch.randint(1, 49000, (batch, context_length))
    ids[:, 0], ids[:, 20], ids[:, 21:] = 49406, 49407, 0
    return ids


def tiny_config() -> MobileCLIPConfig:
    """MCi + 2-layer text tower, 64 px: the model of the quick runs."""
    return MobileCLIPConfig(
        text_config=MobileCLIPTextConfig(hidden_size=32, intermediate_size=64, num_attention_heads=4,
                                         num_hidden_layers=2),
        vision_config=MobileCLIPVisionConfig(image_size=64, layers=(1, 1, 1, 1), embed_dims=(8, 16, 32, 64)),
        projection_dim=24)


def interleaved_times(candidates: dict[str, Callable[[], object]], schedule: Schedule,
                      warmup: int = 2) -> dict[str, list[float]]:
    """Seconds per call of each candidate in each round of `schedule`: the fastest of its back-to-back calls (after
    `warmup` untimed calls each)."""
    for fn in candidates.values():
        for _ in range(warmup):
            fn()
    times = {name: [] for name in candidates}
    order = list(candidates.items())
    for round_index in range(schedule.rounds):
        for name, fn in order if round_index % 2 == 0 else reversed(order):
            fastest = float("inf")
            for _ in range(schedule.calls_per_round):
                start = time.perf_counter()
                fn()
                fastest = min(fastest, time.perf_counter() - start)
            times[name].append(fastest)
    return times


def median_ms(times: list[float]) -> float:
    return statistics.median(times) * 1e3


def paired_ratio(numerator: list[float], denominator: list[float]) -> tuple[float, float, float]:
    """Median and interquartile range (q1, q3) of the per-round ratios numerator / denominator."""
    ratios = [a / b for a, b in zip(numerator, denominator, strict=True)]
    if len(ratios) < 4:  # quick mode: too few rounds for quartiles
        median = statistics.median(ratios)
        return median, min(ratios), max(ratios)
    q1, median, q3 = statistics.quantiles(ratios, n=4)
    return median, q1, q3


def format_ratio(numerator: list[float], denominator: list[float]) -> str:
    """`0.98 [0.95-1.02]`: the median per-round ratio and its interquartile range."""
    median, q1, q3 = paired_ratio(numerator, denominator)
    return f"{median:.2f} [{q1:.2f}-{q3:.2f}]"


@torch.inference_mode()
def count_flops(fn: Callable[[], object]) -> int:
    """Floating-point operations of one call (a multiply-add counts 2), as torch's FlopCounterMode counts them."""
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


@torch.no_grad()
def trained_magnitudes(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Give BatchNorm statistics and layer scales the magnitudes of a trained model, in place.

    At init the layer scales are 1e-5, so a deep MCi tower's activations shrink towards 1e-20 and a timing could
    meet denormal arithmetic that a trained model never does; with these values the outputs are of order 1, and
    comparing them with a peer's shows that both really compute the same function."""
    gen = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.running_mean.copy_(torch.randn(module.running_mean.shape, generator=gen) * 0.1)
            module.running_var.copy_(torch.rand(module.running_var.shape, generator=gen) + 0.5)
    for name, param in model.named_parameters():
        if "layer_scale" in name or name.rsplit(".", 1)[-1] == "gamma":
            param.copy_(torch.rand(param.shape, generator=gen) * 0.1 + 0.05)
    return model


def gemm_gflops(schedule: Schedule, size: int = 1024) -> float:
    """The machine's fp32 matrix-multiply rate (GFLOP/s) at the current thread count, timed with `schedule`: the
    practical peak that a model's achieved GFLOP/s is judged against."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    times = interleaved_times({"gemm": lambda: a @ b}, schedule)["gemm"]
    return 2 * size**3 / statistics.median(times) / 1e9


# ------------------------------------------------------------------------------------------------------------------
# The machine header and the results files
# ------------------------------------------------------------------------------------------------------------------

def add_results_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--results-dir", type=Path, default=None,
                        help=f"where <bench name>.md and .json go (default: {RESULTS_DIR.relative_to(REPO_ROOT)}; "
                             "--quick: a new temporary folder, so a smoke run never overwrites measured results)")
    parser.add_argument("--results-tag", type=_results_tag, default=None,
                        help="write <bench name>_<tag>.md and .json instead, e.g. --results-tag amd: keeps another "
                             "machine's results beside the default ones")


def _results_tag(text: str) -> str:
    if not text.replace("_", "").isalnum() or not text.isascii():
        raise argparse.ArgumentTypeError(f"{text!r}: use ASCII letters, digits and _ only (it becomes part of the "
                                         "results' file name, which the docs' <!-- benchmark: name --> markers name)")
    return text


def _git(*args: str) -> str | None:
    try:
        done = subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def _repo_relative(path: str) -> str:
    resolved = Path(path).resolve()
    return resolved.relative_to(REPO_ROOT).as_posix() if resolved.is_relative_to(REPO_ROOT) else path


def machine_header(dtype: str, threads: int | None = None) -> dict:
    """What a timing depends on besides the code: CPU model and ISA (AVX-512, AVX512-BF16, AMX), logical CPUs, load
    average at the start, threads, dtype, torch version, OpenMP wait policy and the other OpenMP / affinity variables
    that are set (`openmp`), date, git commit."""
    flags = cpu_flags()
    known = bool(flags)
    status = _git("status", "--porcelain", "--untracked-files=no")
    return {
        "cpu": cpu_model(),
        "logical_cpus": os.cpu_count(),
        "avx512": "avx512f" in flags if known else None,
        "avx512_bf16": "avx512_bf16" in flags if known else None,
        "amx": bool({"amx_tile", "amx_bf16"} & flags) if known else None,
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "load_average_1min": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
        "threads": threads if threads is not None else torch.get_num_threads(),
        "dtype": dtype,
        "torch": torch.__version__,
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "unset"),
        "openmp": openmp_policy(),
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": _git("rev-parse", "--short", "HEAD"),
        "uncommitted_changes": bool(status) if status is not None else None,
        "command": " ".join(["python", _repo_relative(sys.argv[0]), *sys.argv[1:]]),
    }


def _yes_no(value) -> str:
    return "not recorded" if value is None else ("yes" if value else "no")


def _threads(count: int) -> str:
    return f"{count} thread" + ("" if count == 1 else "s")


def _other_openmp(header: dict) -> str:
    """`, OMP_NUM_THREADS=2, KMP_AFFINITY=...` for the OpenMP variables set besides OMP_WAIT_POLICY (none: "")."""
    others = {k: v for k, v in header.get("openmp", {}).items() if k not in ("torch_threads", "OMP_WAIT_POLICY")}
    return "".join(f", {name}={value}" for name, value in others.items())


def header_line(header: dict) -> str:
    """The machine header as the one line that heads every results table."""
    commit = header["commit"] or "unknown commit"
    if header.get("uncommitted_changes"):
        commit += " + uncommitted changes"
    return (f"*Measured on {header['cpu']}, {header['logical_cpus']} logical CPUs (AVX-512 "
            f"{_yes_no(header['avx512'])}, AVX512-BF16 {_yes_no(header['avx512_bf16'])}, AMX "
            f"{_yes_no(header['amx'])}), load average {header['load_average_1min']} at the start; "
            f"{_threads(header['threads'])}, {header['dtype']}, torch {header['torch']}, "
            f"OMP_WAIT_POLICY={header['omp_wait_policy']}{_other_openmp(header)}; commit {commit}, {header['date']}; "
            f"`{header['command']}`.*")


def markdown_rows(table: str) -> dict:
    """`{"columns", "rows"}` of a markdown table (cells as text, the separator line dropped)."""
    lines = [line.strip() for line in table.strip().splitlines() if line.strip().startswith("|")]
    cells = [[cell.strip() for cell in line.strip("|").split("|")] for line in lines]
    return {"columns": cells[0], "rows": cells[2:]}


def results_dir(args: argparse.Namespace) -> Path:
    """`--results-dir`, else benchmarks/results, but a fresh temporary folder for a --quick run."""
    if args.results_dir is not None:
        return args.results_dir
    return Path(tempfile.mkdtemp(prefix="bench-quick-")) if args.quick else RESULTS_DIR


def write_results(name: str, args: argparse.Namespace, header: dict, intro: str, tables: list[str],
                  raw: object = None) -> Path:
    """Write `<name>.md` (the header line, the run's one-line description, the tables) and `<name>.json` (the same
    header, the tables' cells and `raw`, the unrounded numbers) into `results_dir(args)`; returns the `.md` path."""
    folder = results_dir(args)
    folder.mkdir(parents=True, exist_ok=True)
    if getattr(args, "results_tag", None):
        name = f"{name}_{args.results_tag}"
    markdown = "\n\n".join([header_line(header), intro, *[table.strip() for table in tables]]) + "\n"
    (folder / f"{name}.md").write_text(markdown)
    record = {"benchmark": name, "machine": header, "intro": intro,
              "tables": [markdown_rows(table) for table in tables], "raw": raw}
    (folder / f"{name}.json").write_text(json.dumps(record, indent=1) + "\n")
    print(f"\nResults written to {folder / name}.md and .json", flush=True)
    return folder / f"{name}.md"
