"""The reinforcement tool's command line (dataset_scripts/reinforce/cli.py): `python -m dataset_scripts.reinforce`
killed and resumed, two `accelerate launch` processes, the storage estimate and job-sized stops, and the
`mobileclip-reinforce` console script."""

import glob
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import tomllib

import numpy as np
import pytest

import dataset_scripts  # noqa: F401  (registers "datacompdr")
from dataset_scripts.reinforce import main
from dataset_scripts.reinforce.claims import claim_log
from dataset_scripts.reinforce.shards import partial_shard_path
from reinforce_inputs import (
    CROP,
    REPO,
    load_reinforced,
    shard_bytes,
    tiny_models_fixture,  # noqa: F401  (provides the module-scoped models fixture)
    write_tar_dataset,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _cli(data, out, models, *extra):
    return [sys.executable, "-m", "dataset_scripts.reinforce", "--dataset", data, "--output", out,
            "--teachers", f"{models['open_clip_at_crop']},{models['mobileclip']}",
            "--teacher-logit-scales", "100,100", "--captioner", models["coca"], "--num-captions", "2",
            "--num-augmentations", "3", "--crop-size", str(CROP), "--seed", "3", "--batch-size", "2",
            "--max-caption-tokens", "10", "--device", "cpu", *extra]


def _env():
    return dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=REPO, OMP_NUM_THREADS="1")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_resume_after_kill_and_two_processes_match_one(models, tmp_path):
    data = write_tar_dataset(str(tmp_path / "data"), per_shard=1)  # 10 shards, 3 of them without a good sample
    reference = str(tmp_path / "ref")
    main(_cli(data, reference, models, "--no-progress")[3:])
    expected = shard_bytes(reference)
    assert len(expected) == 10

    # A real SIGKILL of the CLI as soon as it has finished one shard (the next one is then being written).
    killed = str(tmp_path / "killed")
    proc = subprocess.Popen(_cli(data, killed, models, "--no-progress"), env=_env(), cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 180
    while time.time() < deadline and proc.poll() is None and not glob.glob(os.path.join(killed, "_manifest", "*.json")):
        time.sleep(0.002)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_before = len(glob.glob(os.path.join(killed, "_manifest", "*.json")))
    assert 1 <= done_before < 10 and not os.path.exists(os.path.join(killed, "manifest.jsonl"))
    summary = main(_cli(data, killed, models, "--no-progress")[3:])
    assert summary["done_before"] == done_before and len(summary["processed_shards"]) == 10 - done_before
    assert shard_bytes(killed) == expected
    assert not glob.glob(os.path.join(killed, "**", "*.partial"), recursive=True)

    # Two real processes (torchrun + gloo on the CPU), progress bar on: the same bytes as one process.
    two = str(tmp_path / "two")
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
              "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port",
              str(_free_port()), "-m", "dataset_scripts.reinforce"] + _cli(data, two, models)[3:]
    done = subprocess.run(launch, env=_env(), cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert shard_bytes(two) == expected
    for name in ("manifest.jsonl", "config.json"):
        assert open(os.path.join(two, name)).read() == open(os.path.join(reference, name)).read(), name
    records = [json.load(open(p)) for p in glob.glob(os.path.join(two, "_manifest", "*.json"))]
    assert {r["written_by"]["process_index"] for r in records} == {0, 1}
    assert {r["written_by"]["num_processes"] for r in records} == {2}
    summaries = [json.loads(line[len("reinforce: "):]) for line in done.stdout.splitlines()
                 if line.startswith("reinforce: {")]
    assert sorted(s["process_index"] for s in summaries) == [0, 1]
    assert sorted(shard for s in summaries for shard in s["processed_shards"]) == sorted(expected)
    # One progress bar, on the main process, with the rate and the ETA.
    assert "process 0 of 2: 10 shards to do" in done.stderr and "process 1 of 2" not in done.stderr
    # tqdm shows the rate as "s/sample" below one sample per second (a loaded machine)
    assert re.search(r"\| *\d+/\d+ \[\d\d:\d\d<\d\d:\d\d, +[\d.]+(sample/s|s/sample)\]", done.stderr), \
        done.stderr[-2000:]


# A worker on "another machine" that hangs inside each shard it claims, after its first batch: the test SIGKILLs it
# there. Its claims carry another machine's identity, so (as across machines) only the lease expiry frees them.
_SLOW_WORKER = """
import sys, time
from dataset_scripts.reinforce import claims, cli, pipeline
claims.MACHINE_ID = "another-machine"
real = pipeline.Reinforcer.process_shard
def hanging(self, shard, progress, *args):
    def hang(n):
        progress(n)
        time.sleep(600)
    return real(self, shard, hang, *args)
pipeline.Reinforcer.process_shard = hanging
cli.main(sys.argv[1:])
"""


def _read(path):
    with open(path, encoding="utf-8") as f:
        return f.read()


def _claims_of(out, pid):
    claims = [(path, json.loads(_read(path))) for path in glob.glob(os.path.join(out, "_claims", "0*.json"))]
    return [(os.path.basename(path)[:-len(".json")].split("."), claim) for path, claim in claims
            if claim["pid"] == pid]


def _writing(out, pid):
    """The shard that process ``pid`` holds a claim on and has started writing (its own partial file), or None."""
    for (task, generation), claim in _claims_of(out, pid):
        if os.path.exists(partial_shard_path(out, task, f"{claim['worker']}-{generation}")):
            return task, int(generation)
    return None


@pytest.mark.slow
def test_workers_started_at_different_times_one_killed_finish_the_set_exactly_once(models, tmp_path):
    """Three processes share only the output folder: a worker of "another machine" (started first, SIGKILLed inside
    its shard, never restarted), then an `accelerate launch --cpu --num_processes 1` run and a plain
    `python -m dataset_scripts.reinforce` run, separate invocations. The killed worker's shard is taken over after
    its 2 s lease; the result equals a one-process run byte for byte, and each shard was published once (the claim
    log)."""
    data = write_tar_dataset(str(tmp_path / "data"), per_shard=1)  # 10 shards, 3 of them without a good sample
    args = ["--dataset", data, "--teachers", models["open_clip_small"], "--captioner", "none",
            "--num-augmentations", "2", "--crop-size", str(CROP), "--seed", "5", "--batch-size", "2",
            "--device", "cpu", "--no-progress", "--lease-seconds", "2"]
    reference = str(tmp_path / "ref")
    main(args + ["--output", reference])
    expected = shard_bytes(reference)

    out = str(tmp_path / "out")
    argv = args + ["--output", out]
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--cpu", "--num_processes", "1",
              "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
              "-m", "dataset_scripts.reinforce", *argv]
    run = {"env": _env(), "cwd": REPO, "stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "text": True}
    slow_log = tmp_path / "slow.log"
    with open(slow_log, "w") as log:
        slow = subprocess.Popen([sys.executable, "-c", _SLOW_WORKER, *argv], env=_env(), cwd=REPO,
                                stdout=subprocess.DEVNULL, stderr=log)
    first = second = None
    try:
        deadline = time.time() + 240
        while time.time() < deadline and slow.poll() is None and not _writing(out, slow.pid):
            time.sleep(0.01)
        held = _writing(out, slow.pid)  # mid-shard: it hangs there
        assert held is not None, slow_log.read_text()[-3000:]
        task, generation = held
        first = subprocess.Popen(launch, **run)
        second = subprocess.Popen([sys.executable, "-m", "dataset_scripts.reinforce", *argv], **run)
        slow.send_signal(signal.SIGKILL)
        slow.wait()
        outputs = [proc.communicate(timeout=240) for proc in (first, second)]
    finally:
        for proc in (slow, first, second):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()
    for proc, (stdout, stderr) in zip((first, second), outputs):
        assert proc.returncode == 0, stderr[-3000:]

    assert shard_bytes(out) == expected
    for name in ("manifest.jsonl", "config.json"):
        assert _read(os.path.join(out, name)) == _read(os.path.join(reference, name)), name
    assert not glob.glob(os.path.join(out, "**", "*.partial"), recursive=True)
    # The killed worker's claim stayed unpublished; the next generation took it over once the lease expired.
    (_, held), = _claims_of(out, slow.pid)
    assert held["state"] == "claimed" and held["machine"] == "another-machine"
    log = claim_log(out, task)
    assert log[generation + 1]["taken_over"].startswith("its lease expired")
    assert [e["state"] for e in log[generation + 1:]][-1] == "published"
    # Exactly once: one published claim per shard, and every shard in exactly one process's summary.
    for shard in expected:
        assert [e["state"] for e in claim_log(out, shard[:-len(".tar")])].count("published") == 1, shard
    summaries = [json.loads(line[len("reinforce: "):]) for stdout, _ in outputs for line in stdout.splitlines()
                 if line.startswith("reinforce: {")]
    assert len(summaries) == 2
    assert sorted(s for summary in summaries for s in summary["processed_shards"]) == sorted(expected)
    assert f"{task}.tar" in [t["shard"] for summary in summaries for t in summary["taken_over"]]
    assert any(summary.get("complete") for summary in summaries)
    print("shards per launch:", [len(s["processed_shards"]) for s in summaries])


def test_cli_storage_estimate_max_samples_and_max_shards(models, tmp_path, capsys):
    data = write_tar_dataset(str(tmp_path / "data"))
    argv = _cli(data, str(tmp_path / "out"), models, "--max-samples", "7", "--embedding-format", "pth.gz",
                "--no-progress")[3:]
    first = main(argv + ["--max-shards", "1"])  # a clean stop after one shard (e.g. a job's time limit)
    assert first["processed_shards"] == ["00000000.tar"] and "complete" not in first
    assert ("storage estimate (N_aug 3 + 1 + n_syn 2) x D_total 40 x 2 B = 480 B per sample (embeddings only; plus "
            "images and JSON); 7 samples -> 3.36 kB") in capsys.readouterr().out
    summary = main(argv)
    assert summary["processed_shards"] == ["00000001.tar"] and summary["complete"] and summary["total_uids"] == 5
    ds = load_reinforced(str(tmp_path / "out"), joins=False)
    assert len(ds) == 5 and np.asarray(ds[0]["image_emb"]).shape == (3, 40)


def test_console_script_runs_the_cli_and_exits_zero(models, tmp_path):
    """pyproject's `mobileclip-reinforce` entry point, called the way the installed wrapper calls it
    (`sys.exit(entry())`): a finished run exits 0 rather than with main's summary dict."""
    with open(os.path.join(REPO, "pyproject.toml"), "rb") as f:
        module, _, function = tomllib.load(f)["project"]["scripts"]["mobileclip-reinforce"].partition(":")
    wrapper = f"import sys; from {module} import {function}; sys.exit({function}())"
    out = str(tmp_path / "out")
    argv = _cli(write_tar_dataset(str(tmp_path / "data")), out, models, "--max-samples", "1", "--no-progress")[3:]
    done = subprocess.run([sys.executable, "-c", wrapper, *argv], env=_env(), cwd=REPO, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert '"complete": true' in done.stdout and len(load_reinforced(out, joins=False)) == 1


def test_bad_input_is_one_error_line_and_exit_status_2(tmp_path):
    """`python -m dataset_scripts.reinforce` (the console script runs the same function): a missing dataset is one
    `error:` line naming it and exit status 2, not a traceback; nothing is written."""
    missing, out = str(tmp_path / "no-such-pairs"), tmp_path / "out"
    done = subprocess.run([sys.executable, "-m", "dataset_scripts.reinforce", "--dataset", missing, "--output",
                           str(out), "--teachers", str(tmp_path / "teacher")], env=_env(), cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stderr[-3000:]
    assert done.stderr.strip().splitlines()[-1].startswith("error: ") and missing in done.stderr
    assert "Traceback" not in done.stderr and not out.exists()
