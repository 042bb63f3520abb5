"""Where the converter writes (`conversion/staging.py`): the output's folder is checked writable before any work, and
a conversion SIGKILLed at any point of writing or of the `--overwrite` swap is cleaned up, or its swap finished, by
the next run into the same output, which says what it did (issue 15, items 9 and 11).

The kills are real: `conversion_kill_driver.py` runs the converter's command line in a subprocess and SIGKILLs it at
the chosen rename of the swap (or while the new folder is verified)."""

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from conversion_fixtures import hidden_leftovers, s0_constant_file_fixture, stub_card_fixture  # noqa: F401
from test_convert import assert_same_weights

from modeling_mobileclip import MobileCLIPModel
from modeling_mobileclip.conversion.cli import main
from modeling_mobileclip.conversion.convert import convert
from modeling_mobileclip.conversion.staging import _HOST, recover_interrupted

REPO_ROOT = Path(__file__).resolve().parents[1]
DRIVER = Path(__file__).with_name("conversion_kill_driver.py")


def _args(checkpoint: Path, out: Path, *extra: str) -> list[str]:
    return ["--variant", "mobileclip-s0", "--checkpoint", str(checkpoint), "--output", str(out), *extra]


def _convert_killed_at(point: str, checkpoint: Path, out: Path, *extra: str) -> None:
    done = subprocess.run([sys.executable, str(DRIVER), point, *_args(checkpoint, out, *extra)], cwd=REPO_ROOT,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"}, capture_output=True, text=True, timeout=600)
    assert done.returncode == -signal.SIGKILL, done.stderr[-3000:]


def _kinds(names: list[str]) -> list[str]:
    return [name.rpartition("-")[0].rpartition("-")[0].rpartition("-")[0] for name in names]  # drop the writer id


# ----------------------------------------------------------------------------------------------------------------
# Killed conversions (15.9)
# ----------------------------------------------------------------------------------------------------------------

def test_a_conversion_killed_while_writing_leaves_a_partial_that_the_next_run_removes(s0_constant_file, tmp_path,
                                                                                      stub_card, capsys):
    out = tmp_path / "model"
    _convert_killed_at("writing", s0_constant_file, out)
    (partial,) = [tmp_path / name for name in hidden_leftovers(tmp_path)]
    assert partial.name.startswith(f".model.partial-{_HOST}-") and (partial / "model.safetensors").is_file()
    assert not out.exists()

    assert main(_args(s0_constant_file, out)) == 0
    assert f"removed {partial.name}, the unfinished folder of a killed conversion" in capsys.readouterr().out
    assert hidden_leftovers(tmp_path) == [] and (out / "model.safetensors").is_file()


SWAP_KILLS = {  # point: (hidden folders the kill leaves, what the next run says, which model is then in place)
    "before-swap": ([".model.partial"], "removed .model.partial-", "old"),
    "between-renames": ([".model.partial", ".model.replaced"], "finished the swap of a killed --overwrite run", "new"),
    "before-cleanup": ([".model.replaced"], "removed .model.replaced-", "new"),
}


@pytest.mark.parametrize("point", SWAP_KILLS)
def test_a_killed_overwrite_swap_is_finished_or_undone_by_the_next_run(point, s0_constant_file, tmp_path, capsys):
    left, said, installed = SWAP_KILLS[point]
    out = tmp_path / "model"
    out.mkdir()
    (out / "old.txt").write_text("previous conversion")
    _convert_killed_at(point, s0_constant_file, out, "--overwrite")
    assert _kinds(hidden_leftovers(tmp_path)) == left
    assert out.exists() == (point != "between-renames")  # the dangerous moment: no output at all

    # Without --overwrite the next run recovers, says so, then refuses to replace what is there: nothing else runs.
    assert main(_args(s0_constant_file, out)) == 1
    captured = capsys.readouterr()
    assert said in captured.out and "already exists; pass --overwrite" in captured.err
    assert hidden_leftovers(tmp_path) == []
    if installed == "old":
        assert sorted(p.name for p in out.iterdir()) == ["old.txt"]
    else:
        assert not (out / "old.txt").exists()
        assert_same_weights(MobileCLIPModel.from_pretrained(out), convert(s0_constant_file, "mobileclip-s0")[0])


def test_recovery_keeps_what_a_live_or_unknown_writer_owns_and_restores_a_moved_aside_output(tmp_path):
    out = tmp_path / "model"
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        live = tmp_path / f".model.partial-{_HOST}-{sleeper.pid}-0123abcd"
        remote = tmp_path / f".model.partial-{_HOST}x-{sleeper.pid}-0123abcd"  # another host's pid
        unnamed = tmp_path / ".model.partial-k3j_x9qa"  # an older converter's name: no writer recorded
        for folder in (live, remote, unnamed):
            folder.mkdir()
        said = recover_interrupted(out)
        assert sorted(said) == sorted(
            f"kept {folder.name} in {tmp_path}: {reason}; delete it once no conversion into {out} runs"
            for folder, reason in ((live, "its writer process may still be running"),
                                   (remote, ("it was written from another host, whose processes cannot be checked "
                                             "from here")),
                                   (unnamed, "its name records no writer process")))
        assert live.is_dir() and remote.is_dir() and unnamed.is_dir()
    finally:
        sleeper.kill()
        sleeper.wait()
    # The writer is gone now: its folder goes; an old output it had moved aside (without a new one) comes back.
    replaced = tmp_path / f".model.replaced-{_HOST}-{sleeper.pid}-4567cdef"  # a second run of that pid
    replaced.mkdir()
    (replaced / "old.txt").write_text("previous conversion")
    said = recover_interrupted(out)
    assert f"removed {live.name}, the unfinished folder of a killed conversion" in said
    assert f"restored the previous {out} that a killed --overwrite run had moved aside" in said
    assert (out / "old.txt").read_text() == "previous conversion" and not live.exists()
    assert hidden_leftovers(tmp_path) == sorted([remote.name, unnamed.name])


# ----------------------------------------------------------------------------------------------------------------
# An output folder that cannot be written (15.11)
# ----------------------------------------------------------------------------------------------------------------

@pytest.fixture(params=["chmod-555", "proc", "file-as-parent"])
def unwritable_output(request, tmp_path):
    """(--output, the folder the error must name) where creating the output really fails, also for root: root
    ignores a 0o555 mode (that case is skipped then), but cannot create folders in /proc or inside a file."""
    if request.param == "chmod-555":
        folder = tmp_path / "read-only"
        folder.mkdir()
        folder.chmod(0o555)
        request.addfinalizer(lambda: folder.chmod(0o755))
        if os.access(folder, os.W_OK):
            pytest.skip("this user (root) can write into a 0o555 folder; the other cases fail for root too")
        return folder / "model", folder
    if request.param == "proc":
        if not Path("/proc").is_dir():
            pytest.skip("no /proc on this system")
        return Path("/proc/mobileclip-test/model"), Path("/proc")
    (tmp_path / "file").write_text("not a folder")
    return tmp_path / "file" / "sub" / "model", tmp_path / "file"


def test_an_unwritable_output_folder_fails_at_once_with_one_error_line(unwritable_output, s0_constant_file, capsys):
    out, folder = unwritable_output
    with pytest.raises(SystemExit) as info:
        main(_args(s0_constant_file, out))
    assert info.value.code == 2
    captured = capsys.readouterr()
    (error,) = [line for line in captured.err.splitlines() if "error:" in line]
    assert error.startswith("python -m modeling_mobileclip.conversion: error: --output ")
    assert f"--output {out}: " in error and f"{folder} " in error and "choose an --output" in error
    assert "Traceback" not in captured.err
    assert captured.out == ""  # before the checkpoint was even read
