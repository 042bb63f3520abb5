"""What every command does with bad input: one `error:` line and exit status 2, as argparse does for a bad flag.

A traceback would bury the message, which already says what is wrong and how to fix it; `--debug` (or
`MOBILECLIP_DEBUG=1`) lets it through for a bug report.
"""

import os
import sys
from collections.abc import Callable, Sequence

# The errors our tools raise for input a user can fix; anything else is a bug and keeps its traceback.
USER_ERRORS = (ValueError, FileNotFoundError)


def wants_traceback(argv: Sequence[str]) -> bool:
    return "--debug" in argv or os.environ.get("MOBILECLIP_DEBUG", "") not in ("", "0")


def run_command(main: Callable, argv: Sequence[str] | None = None, errors: tuple = USER_ERRORS) -> int:
    """Run `main(argv)`; a user error becomes one `error:` line on stderr and exit status 2 (returned)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        main([a for a in argv if a != "--debug"])
    except errors as err:
        if wants_traceback(argv):
            raise
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0
