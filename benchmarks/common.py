"""What the benchmarks share: their common options, interleaved timing with paired ratios, FLOP counts, the machine's
GEMM rate, trained-like weight magnitudes and the tiny config of the quick (CI) runs.

Candidates run in turn within each round, and the order reverses every other round, so load from other jobs on the
machine and position effects (caches, allocator) hit every candidate alike. In a round each candidate makes
`--calls-per-round` back-to-back calls and keeps the fastest: on a machine shared with other jobs, a call that lost
its core for a while measures the other jobs, not the model. A ratio is taken per round (the calls ran seconds apart)
and the median of those per-round ratios is reported with its interquartile range: that range is the noise band a
claim such as "no slower" is read against.
"""

import argparse
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch.utils.flop_counter import FlopCounterMode

from modeling_mobileclip import MobileCLIPConfig, MobileCLIPTextConfig, MobileCLIPVisionConfig

QUICK_ROUNDS = 2


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
