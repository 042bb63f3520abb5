"""Where a conversion writes before its output exists: the writable-parent check, staging folders named after their
writer process, the swap into place, and recovery from a writer that was killed part-way.

Next to `--output out`, a run with process id P on host H uses two hidden names, with one id `W = H-P-<random>`:

    .out.partial-W    the new folder while it is written and verified
    .out.replaced-W   the previous `out`, during an `--overwrite` swap (renamed away only once .out.partial-W is
                      complete and verified, so its existence proves that the new folder is complete)

The swap is `out -> .out.replaced-W`, `.out.partial-W -> out`, then `.out.replaced-W` is deleted. A SIGKILL can stop
it anywhere; the next run on the same output calls `recover_interrupted` first, which for every W whose process is
gone finishes the swap (or, without a complete new folder, puts the old one back) and deletes the leftovers.
"""

import os
import re
import shutil
import socket
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .errors import ConversionError

_HOST = re.sub(r"[^A-Za-z0-9.]", "_", socket.gethostname()) or "localhost"  # no "-": it separates the fields
_WRITER = re.compile(r"(?P<host>[A-Za-z0-9._]+)-(?P<pid>\d+)-[0-9a-f]{8}")


def _writer_id() -> str:
    """W = host-pid-random: the pid tells a later run whether the writer is gone, the host whether it can tell."""
    return f"{_HOST}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def check_parent_writable(output: str | os.PathLike) -> None:
    """Fail in a second, before any work, when the folder that will hold `output` cannot take a new directory.

    `os.access` is not enough: as root it answers yes for a 0o555 folder and for /proc or /sys, where mkdir still
    fails, so this creates (and removes) a probe directory in the nearest existing ancestor."""
    output = Path(output)
    ancestor = output.absolute().parent
    while not ancestor.exists() and not ancestor.is_symlink():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise ConversionError(f"--output {output}: {ancestor} is a file, not a folder; choose an --output whose "
                              "parent is a folder.")
    try:
        probe = ancestor / f".{output.name}.probe-{_writer_id()}"
        probe.mkdir()
        probe.rmdir()
    except OSError as error:
        message = (f"--output {output}: cannot create a folder in {ancestor} ({error.strerror}); choose an --output "
                   f"in a folder you can write to, or make {ancestor} writable.")
        raise ConversionError(message) from error


def new_staging_folder(output: Path) -> Path:
    """`.out.partial-W`, empty, for this process; the caller fills it and hands it to `swap_into_place`."""
    output.parent.mkdir(parents=True, exist_ok=True)
    staging = output.with_name(f".{output.name}.partial-{_writer_id()}")
    staging.mkdir()
    return staging


@contextmanager
def staging_folder(output: Path) -> Iterator[Path]:
    """`new_staging_folder`, deleted on the way out however the block ends; a SIGKILL leaves it to
    `recover_interrupted` (its name records this process). The export (`modeling_mobileclip.export`) builds in it."""
    staging = new_staging_folder(output)
    try:
        yield staging
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def swap_into_place(staging: Path, output: Path) -> None:
    """Move the complete `staging` folder to `output`, replacing an existing `output` (recoverable at every step)."""
    if not output.exists():
        os.rename(staging, output)
        return
    writer = staging.name.rpartition(".partial-")[2]
    retired = output.with_name(f".{output.name}.replaced-{writer}")
    os.rename(output, retired)
    try:
        os.rename(staging, output)
    except BaseException:
        os.rename(retired, output)
        raise
    shutil.rmtree(retired)


def _writer_state(writer: str) -> str:
    """"gone", "running" (the pid exists: maybe the writer, maybe a process that reused its pid), "other host" or
    "unknown" (a name without a writer id, e.g. left by an older converter)."""
    match = _WRITER.fullmatch(writer)
    if match is None:
        return "unknown"
    if match["host"] != _HOST:
        return "other host"
    try:
        os.kill(int(match["pid"]), 0)
    except ProcessLookupError:
        return "gone"
    except PermissionError:  # it exists, owned by another user
        pass
    return "running"


def recover_interrupted(output: str | os.PathLike) -> list[str]:
    """Finish or undo what killed conversions into `output` left behind; return one line per action, for the user.

    Folders of a writer that may still be running (same host, pid alive) or that ran on another host are kept, and
    said so: deleting them could break a conversion in progress."""
    output = Path(output)
    if not output.parent.is_dir():
        return []
    found: dict[str, dict[str, Path]] = {}
    pattern = re.compile(rf"\.{re.escape(output.name)}\.(?P<kind>partial|replaced)-(?P<writer>.+)")
    for path in output.parent.iterdir():
        if (match := pattern.fullmatch(path.name)) is not None and path.is_dir():
            found.setdefault(match["writer"], {})[match["kind"]] = path
    done = []
    for writer, folders in sorted(found.items()):
        partial, replaced = folders.get("partial"), folders.get("replaced")
        state = _writer_state(writer)
        if state != "gone":
            names = " and ".join(p.name for p in folders.values())
            reason = {"running": "its writer process may still be running",
                      "other host": "it was written from another host, whose processes cannot be checked from here",
                      "unknown": "its name records no writer process"}[state]
            done.append(f"kept {names} in {output.parent}: {reason}; delete it once no conversion into {output} runs")
            continue
        if replaced is not None and not output.exists():
            if partial is not None:  # the old folder is renamed away only once the new one is complete and verified
                os.rename(partial, output)
                partial = None
                done.append(f"finished the swap of a killed --overwrite run: installed its complete new {output}")
            else:
                os.rename(replaced, output)
                replaced = None
                done.append(f"restored the previous {output} that a killed --overwrite run had moved aside")
        if replaced is not None:
            shutil.rmtree(replaced)
            done.append(f"removed {replaced.name}, the previous {output.name} that a killed --overwrite run replaced")
        if partial is not None:
            shutil.rmtree(partial)
            done.append(f"removed {partial.name}, the unfinished folder of a killed conversion")
    return done
