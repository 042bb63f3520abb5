"""Every benchmark script runs end to end in its quick mode (no timing claims are checked here), prints the machine it
runs on and writes its results files where it is told, never over the measured ones in benchmarks/results."""

import argparse
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = sorted((ROOT / "benchmarks").glob("bench_*.py"))
MEASURED = ROOT / "benchmarks" / "results"
MACHINE_KEYS = {"cpu", "logical_cpus", "avx512", "avx512_bf16", "amx", "threads", "dtype", "torch", "date", "commit"}


def load_common():
    spec = importlib.util.spec_from_file_location("benchmarks_common", ROOT / "benchmarks" / "common.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def measured_files() -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in MEASURED.glob("*")} if MEASURED.is_dir() else {}


@pytest.mark.slow
@pytest.mark.parametrize("script", BENCHMARKS, ids=[p.stem for p in BENCHMARKS])
def test_benchmark_quick_mode_runs(script, tmp_path):
    before = measured_files()
    done = subprocess.run([sys.executable, str(script), "--quick", "--results-dir", str(tmp_path)],
                          capture_output=True, text=True, timeout=600, cwd=script.parents[1])
    assert done.returncode == 0, done.stderr[-3000:]
    assert "|" in done.stdout  # printed its results table
    assert "*Measured on " in done.stdout  # printed the machine
    markdown = (tmp_path / f"{script.stem}.md").read_text()
    assert markdown.startswith("*Measured on ") and "|---" in markdown
    record = json.loads((tmp_path / f"{script.stem}.json").read_text())
    assert record["benchmark"] == script.stem and MACHINE_KEYS <= set(record["machine"])
    assert record["tables"] and all(table["rows"] for table in record["tables"])
    assert measured_files() == before


def test_quick_runs_default_to_a_temporary_folder(tmp_path):
    common = load_common()
    quick = common.results_dir(argparse.Namespace(quick=True, results_dir=None))
    assert quick.is_dir() and quick.resolve() != MEASURED.resolve() and not any(quick.iterdir())
    quick.rmdir()
    assert common.results_dir(argparse.Namespace(quick=False, results_dir=None)) == MEASURED
    assert common.results_dir(argparse.Namespace(quick=True, results_dir=tmp_path)) == tmp_path


def test_machine_header_line_names_the_machine():
    common = load_common()
    header = common.machine_header("fp32", threads=2)
    assert MACHINE_KEYS <= set(header) and header["threads"] == 2
    line = common.header_line(header)
    assert line.startswith(f"*Measured on {header['cpu']}") and "AVX-512" in line and "AMX" in line
    assert "torch " + header["torch"] in line


def test_markdown_rows_keep_every_cell():
    table = "| a | b |\n|---|---:|\n| 1 | 2.5 [2.0-3.0] |\n| x | y |"
    assert load_common().markdown_rows(table) == {"columns": ["a", "b"], "rows": [["1", "2.5 [2.0-3.0]"], ["x", "y"]]}


def test_a_results_tag_keeps_another_machines_results_beside_the_default_ones(tmp_path):
    common = load_common()
    parser = argparse.ArgumentParser()
    common.add_results_option(parser)
    args = parser.parse_args(["--results-dir", str(tmp_path), "--results-tag", "amd"])
    header = common.machine_header("fp32", threads=1)
    path = common.write_results("bench_x", args, header, "intro", ["| a |\n|---|\n| 1 |"])
    assert path == tmp_path / "bench_x_amd.md" and sorted(p.name for p in tmp_path.iterdir()) == [
        "bench_x_amd.json", "bench_x_amd.md"]
    assert json.loads((tmp_path / "bench_x_amd.json").read_text())["benchmark"] == "bench_x_amd"
    with pytest.raises(SystemExit):  # a tag that would not make a name the docs' markers can hold
        parser.parse_args(["--results-tag", "amd-epyc"])
