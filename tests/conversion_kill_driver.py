"""Run the converter's command line and SIGKILL this very process at one point of writing the output
(tests/test_conversion_staging.py): a real kill of a real conversion, at the moments that matter.

    python tests/conversion_kill_driver.py POINT <converter arguments>

POINT is one of KILL_POINTS. The model card's widget inference (seconds) is replaced by a one-line README.md, as in
test_conversion_cli.py's `stub_card`: the kills are about the folder, not the card.
"""

import os
import signal
import sys
from pathlib import Path

from modeling_mobileclip.conversion import cli, output_folder

# point -> (rename of the output swap to wait for, kill before or after it); "writing" kills while verifying.
KILL_POINTS = {
    "writing": None,
    "before-swap": (1, "before"),       # new folder complete; the old output not yet moved aside
    "between-renames": (1, "after"),    # old output moved aside; the new folder not yet in place
    "before-cleanup": (2, "after"),     # new output in place; the old one not yet deleted
}


def kill_self(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGKILL)


def main(point: str, argv: list[str]) -> int:
    output = Path(argv[argv.index("--output") + 1]).absolute()
    output_folder._write_model_card = lambda folder, *args, **kwargs: (folder / "README.md").write_text("card")
    if KILL_POINTS[point] is None:
        output_folder._verify_saved = kill_self
        return cli.main(argv)
    wanted, when = KILL_POINTS[point]
    real_rename, renames = os.rename, []

    def rename(source, target):
        # Only the renames of the swap count: those into or out of the output path itself.
        if output not in (Path(source).absolute(), Path(target).absolute()):
            return real_rename(source, target)
        renames.append((source, target))
        if len(renames) == wanted and when == "before":
            kill_self()
        real_rename(source, target)
        if len(renames) == wanted and when == "after":
            kill_self()

    os.rename = rename
    return cli.main(argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2:]))
