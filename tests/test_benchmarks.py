"""Every benchmark script runs end to end in its quick mode (no timing claims are checked here)."""

import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = sorted((Path(__file__).resolve().parents[1] / "benchmarks").glob("bench_*.py"))


@pytest.mark.slow
@pytest.mark.parametrize("script", BENCHMARKS, ids=[p.stem for p in BENCHMARKS])
def test_benchmark_quick_mode_runs(script):
    done = subprocess.run([sys.executable, str(script), "--quick"], capture_output=True, text=True, timeout=600,
                          cwd=script.parents[1])
    assert done.returncode == 0, done.stderr[-3000:]
    assert "|" in done.stdout  # printed its results table
