"""Pushing checkpoints and output folders to the Hugging Face Hub, with retries (not Hub-facing code).

    from hub_cards import generate_model_card
    from modeling_mobileclip.hub import push_model_to_hub, push_folder_to_hub

    card = generate_model_card(model, "mobileclip-s0", processor=processor, repo_id="org/mobileclip-s0")
    push_model_to_hub(model, processor, "org/mobileclip-s0", card, commit_message="Add MobileCLIP-S0")
    push_folder_to_hub("runs/s0/final", "org/mobileclip-s0-ft", commit_message="Final checkpoint")

Each push is one commit (`HfApi.upload_folder`) after `create_repo(exist_ok=True)`. Transient failures (HTTP 5xx,
408, 429, connection errors and timeouts) are retried with exponential backoff; permanent ones (401, 403, 404 and other
4xx) raise `HubPushError` at once. Every failure message says where the complete local output is and gives the
`hf upload` command that retries the push by hand. `run_as_future=True` returns a `Future` and uploads in a
background thread (pushes run one at a time, in submission order).
"""

from __future__ import annotations

import logging
import shlex
import shutil
import tempfile
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import yaml
from huggingface_hub import CommitInfo, HfApi
from huggingface_hub.errors import HfHubHTTPError
from huggingface_hub.repocard import REGEX_YAML_BLOCK
from huggingface_hub.utils import httpx

logger = logging.getLogger(__name__)

TRANSIENT_STATUS_CODES = frozenset({408, 429, 500, 502, 503, 504})
MAX_BACKOFF_S = 60.0
_EXECUTOR: ThreadPoolExecutor | None = None
_EXECUTOR_LOCK = threading.Lock()


class HubPushError(RuntimeError):
    """A push failed; the local folder that was being uploaded is intact at `folder`."""

    def __init__(self, message: str, *, repo_id: str, folder: Path, retry_command: str, status_code: int | None,
                 attempts: int):
        super().__init__(message)
        self.repo_id, self.folder, self.retry_command = repo_id, folder, retry_command
        self.status_code, self.attempts = status_code, attempts


def _status_code(error: BaseException) -> int | None:
    response = getattr(error, "response", None)
    return getattr(response, "status_code", None)


def is_transient(error: BaseException) -> bool:
    """Worth retrying: a connection problem or an HTTP status that says "try again later"."""
    if isinstance(error, httpx.TransportError):  # connect/read errors, timeouts, protocol errors
        return True
    return isinstance(error, HfHubHTTPError) and _status_code(error) in TRANSIENT_STATUS_CODES


def retry_command(repo_id: str, folder: Path, repo_type: str = "model", commit_message: str | None = None,
                  revision: str | None = None) -> str:
    """The `hf upload` command that pushes `folder` by hand (it resumes where an interrupted upload stopped)."""
    parts = ["hf", "upload", repo_id, str(folder), ".", "--repo-type", repo_type]
    if revision:
        parts += ["--revision", revision]
    if commit_message:
        parts += ["--commit-message", commit_message]
    return shlex.join(parts)


def check_card_references(folder: Path) -> None:
    """Every repo-relative widget image named in `folder/README.md` must be in `folder` (else the Hub page breaks)."""
    readme = folder / "README.md"
    if not readme.is_file():
        return
    match = REGEX_YAML_BLOCK.search(readme.read_text(encoding="utf-8"))
    metadata = (yaml.safe_load(match.group(2)) if match else None) or {}
    for i, example in enumerate(metadata.get("widget") or []):
        src = example.get("src", "") if isinstance(example, dict) else ""
        if src and not src.startswith(("http://", "https://")) and not (folder / src).is_file():
            raise FileNotFoundError(f"README.md widget[{i}].src is {src!r}, but {folder / src} does not exist; write "
                                    "the card with card.write(folder) (it adds its widget images) or fix the src.")


def _upload(api: HfApi, folder: Path, repo_id: str, *, repo_type: str, commit_message: str, retries: int,
            backoff: float, private: bool | None, revision: str | None, allow_patterns, ignore_patterns,
            cleanup: bool) -> CommitInfo:
    """create_repo + upload_folder, retried on transient errors; `cleanup` removes `folder` after a success."""
    command = retry_command(repo_id, folder, repo_type, commit_message, revision)
    attempts = 0
    while True:
        attempts += 1
        try:
            api.create_repo(repo_id, repo_type=repo_type, private=private, exist_ok=True)
            info = api.upload_folder(repo_id=repo_id, folder_path=folder, repo_type=repo_type, revision=revision,
                                     commit_message=commit_message, allow_patterns=allow_patterns,
                                     ignore_patterns=ignore_patterns)
            break
        except Exception as error:  # classified below, always re-raised with the local path
            transient = is_transient(error)
            if transient and attempts <= retries:
                delay = min(backoff * 2 ** (attempts - 1), MAX_BACKOFF_S)
                logger.warning("Push of %s to %s failed (attempt %d of %d: %s); retrying in %.1f s.", folder,
                               repo_id, attempts, retries + 1, _describe(error), delay)
                time.sleep(delay)
                continue
            status = _status_code(error)
            if transient:
                reason = f"gave up after {attempts} attempts; the last error was transient ({_describe(error)})"
            elif status in (401, 403):
                reason = (f"the Hub refused it ({_describe(error)}): check that your token (HF_TOKEN or `hf auth "
                          f"login`) has write access to {repo_id!r}")
            elif status == 404:
                reason = (f"the Hub could not find it ({_describe(error)}): check the repo id {repo_id!r}, repo_type "
                          f"{repo_type!r} and revision {revision or 'main'!r}")
            else:
                reason = f"it failed permanently ({_describe(error)})"
            raise HubPushError(
                f"Pushing {folder} to {repo_type} repo {repo_id!r} failed: {reason}. The local output is intact at "
                f"{folder}. Once the cause is fixed, retry with:\n    {command}",
                repo_id=repo_id, folder=folder, retry_command=command, status_code=status, attempts=attempts,
            ) from error
    if cleanup:
        shutil.rmtree(folder, ignore_errors=True)
    return info


def _describe(error: BaseException) -> str:
    status = _status_code(error)
    first_line = str(error).strip().splitlines()[0] if str(error).strip() else ""
    return f"{type(error).__name__}" + (f" {status}" if status else "") + (f": {first_line}" if first_line else "")


def _submit(fn, *args, **kwargs) -> Future:
    global _EXECUTOR
    with _EXECUTOR_LOCK:
        if _EXECUTOR is None:
            _EXECUTOR = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mobileclip-hub-push")
    return _EXECUTOR.submit(fn, *args, **kwargs)


def push_folder_to_hub(folder: str | Path, repo_id: str, *, commit_message: str, repo_type: str = "model",
                       run_as_future: bool = False, retries: int = 3, backoff: float = 2.0,
                       private: bool | None = None, revision: str | None = None, token: str | None = None,
                       allow_patterns: list[str] | str | None = None, ignore_patterns: list[str] | str | None = None,
                       _cleanup: bool = False) -> CommitInfo | Future:
    """Upload an already-written output folder (a converted model, a training run's final checkpoint, dataset
    shards) as one commit to `repo_id`, creating the repo if needed.

    Args:
        folder: The folder to upload; it is never modified or deleted.
        repo_id: "namespace/name".
        commit_message: The commit's summary line.
        repo_type: "model", "dataset" or "space".
        run_as_future: Return a `Future` at once and upload in a background thread.
        retries: How many times a transient failure is retried (so at most `retries + 1` attempts).
        backoff: Seconds before the first retry; doubled each time (capped at 60 s).
        private: Visibility if the repo is created (an existing repo keeps its own).
        revision: Branch to commit to (default "main").
        token: Hub token (default: HF_TOKEN or the stored login).
        allow_patterns, ignore_patterns: Globs selecting the files to upload.

    Returns:
        The `CommitInfo` of the commit, or a `Future` of it. Failures raise `HubPushError` (from `.result()` for a
        future), naming the local folder and the `hf upload` command that retries the push.
    """
    folder = Path(folder).resolve()
    if not folder.is_dir() or not any(folder.iterdir()):
        raise FileNotFoundError(f"folder={str(folder)!r} is not a non-empty directory; nothing to push to {repo_id!r}.")
    if repo_type not in ("model", "dataset", "space"):
        raise ValueError(f"repo_type={repo_type!r}; choose 'model', 'dataset' or 'space'.")
    if not isinstance(retries, int) or retries < 0 or backoff < 0:
        raise ValueError(f"retries={retries!r} and backoff={backoff!r} must be a non-negative int and float.")
    if not commit_message:
        raise ValueError("commit_message is empty; say what the commit adds, e.g. 'Add MobileCLIP-S0 weights'.")
    if repo_type == "model":
        check_card_references(folder)
    kwargs: dict[str, Any] = dict(repo_type=repo_type, commit_message=commit_message, retries=retries,
                                  backoff=backoff, private=private, revision=revision, allow_patterns=allow_patterns,
                                  ignore_patterns=ignore_patterns, cleanup=_cleanup)
    api = HfApi(token=token)
    if run_as_future:
        return _submit(_upload, api, folder, repo_id, **kwargs)
    return _upload(api, folder, repo_id, **kwargs)


def push_model_to_hub(model, processor, repo_id: str, card, *, commit_message: str, run_as_future: bool = False,
                      retries: int = 3, backoff: float = 2.0, private: bool | None = None,
                      revision: str | None = None, token: str | None = None,
                      local_dir: str | Path | None = None) -> CommitInfo | Future:
    """Save `model`, `processor` and `card` (README.md plus the files it references) and push them as one commit.

    The files are written to `local_dir`, or to a new temporary folder that is deleted after a successful push and
    kept when the push fails (the error names it and the `hf upload` command to retry). Other arguments as in
    `push_folder_to_hub`. `card` is a `huggingface_hub.ModelCard`, typically from `hub_cards.generate_model_card`
    (generate it with `repo_id=` this repo, so its usage snippets name it).
    """
    card_repo = getattr(card, "repo_id", None)
    if card_repo is not None and card_repo != repo_id:
        raise ValueError(f"The card was generated for repo_id={card_repo!r} (its usage snippets load from it) but is "
                         f"pushed to {repo_id!r}; regenerate it with repo_id={repo_id!r}.")
    if not hasattr(card, "save") or not hasattr(card, "data"):
        raise TypeError(f"card is a {type(card).__name__}; pass a huggingface_hub.ModelCard "
                        "(hub_cards.generate_model_card returns one).")
    cleanup = local_dir is None
    folder = Path(local_dir) if local_dir is not None else Path(
        tempfile.mkdtemp(prefix=f"mobileclip-push-{repo_id.replace('/', '--')}-"))
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    if hasattr(card, "write"):
        card.write(folder)
    else:
        card.save(folder / "README.md")
    return push_folder_to_hub(folder, repo_id, commit_message=commit_message, run_as_future=run_as_future,
                              retries=retries, backoff=backoff, private=private, revision=revision, token=token,
                              _cleanup=cleanup)


__all__ = ["HubPushError", "is_transient", "push_folder_to_hub", "push_model_to_hub", "retry_command"]
