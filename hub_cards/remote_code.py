"""`--trust-remote-code` for the tools that load a model folder or Hub repo (evaluation, export).

transformers imports the Python files named by a folder's `auto_map` only with `trust_remote_code=True`. The tools
pass the user's `--trust-remote-code`, off by default as in transformers' own CLIs. MobileCLIP models need no flag
with this project installed: importing `modeling_mobileclip` registers its classes with the Auto API, and with the
flag off transformers loads registered classes instead of a folder's copies of them.

    parser.add_argument("--trust-remote-code", action="store_true", help=TRUST_REMOTE_CODE_HELP)
    with explain_remote_code_refusal(args.model):
        model = AutoModel.from_pretrained(args.model, trust_remote_code=args.trust_remote_code)
"""

from collections.abc import Iterator
from contextlib import contextmanager

TRUST_REMOTE_CODE_HELP = (
    "run the Python code that the model folder or Hub repo ships (the files its config's auto_map names), as "
    "transformers' trust_remote_code=True does; only for code you have read and trust. MobileCLIP models load "
    "without it: the installed classes are used"
)


class RemoteCodeRefusedError(ValueError):
    """A model folder or repo ships code of its own and the caller did not pass trust_remote_code."""


@contextmanager
def explain_remote_code_refusal(model_id: str, argument: str = "--model",
                                trust: str = "--trust-remote-code") -> Iterator[None]:
    """Re-raise transformers' refusal to run `model_id`'s own code as a `RemoteCodeRefusedError` that names the flag
    (`argument` / `trust`: how the caller names the model and the opt-in, e.g. `trust_remote_code=True` in Python).

    Callers always pass `trust_remote_code` explicitly (False by default): with None, transformers *asks* on stdin,
    which hangs under `accelerate launch` and answers from whatever a pipe feeds it."""
    try:
        yield
    except ValueError as error:
        # transformers raises a plain ValueError; only its text tells this refusal from other bad input.
        if "trust_remote_code=True" not in str(error) or isinstance(error, RemoteCodeRefusedError):
            raise
        raise RemoteCodeRefusedError(
            f"{argument} {model_id!r} ships Python code of its own (auto_map in its config files) that loading it "
            f"would run; nothing of it was run. Read that code and pass {trust} to run it, or pass a model "
            "whose classes are installed (MobileCLIP models load without it)."
        ) from error
