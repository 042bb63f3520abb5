"""Pushing models, checkpoints and datasets to the Hugging Face Hub, with retries (not Hub-facing code).

    from hub_cards import generate_model_card
    from hub_cards.push import push_folder_to_hub, push_model_to_hub

    card = generate_model_card(model, "mobileclip-s0", processor=processor, repo_id="org/mobileclip-s0")
    push_model_to_hub(model, processor, "org/mobileclip-s0", card, commit_message="Add MobileCLIP-S0")
    push_folder_to_hub("runs/s0/final", "org/mobileclip-s0-ft", commit_message="Final model")   # README.md inside
    future = push_folder_to_hub("runs/s0/checkpoints/checkpoint_3", "org/mobileclip-s0-ft", run_as_future=True,
                                path_in_repo="last-checkpoint", delete_patterns="*", commit_message="Step 3000")

Each push is one commit (`HfApi.upload_folder`) after `create_repo(exist_ok=True)`; a push that created the repo and
then failed deletes it again while it is still empty, so a failed first push leaves nothing on the Hub. Before
anything is uploaded, a
model folder pushed to the repo root is checked: it has its card (README.md, validated by the Hub's
`/api/validate-yaml`, after huggingface_hub's own `ModelCard`/`DatasetCard` parsing of it), the files the card
references, and for a MobileCLIP model the remote code and the `auto_map` entries
`AutoModel.from_pretrained(repo, trust_remote_code=True)`, `AutoProcessor` and the zero-shot pipeline need.

Transient failures (HTTP 5xx, 408, 429, connection errors and timeouts) are retried with exponential backoff;
permanent ones (401, 403, 404, a rejected card, other 4xx) raise `HubPushError` at once. Every failure says where the
complete local output is and gives the `hf upload` command that retries the push by hand (with the same
`--include`/`--exclude`/`--delete` patterns, so it publishes exactly what the push would have). `run_as_future=True`
returns a `concurrent.futures.Future` and uploads in a background thread (pushes run one at a time, in submission
order); by default it uploads a copy of the folder taken at call time, so the caller may overwrite or delete the
folder meanwhile (accelerate's checkpoint rotation does). That copy is removed when its push ends, however it ends
(success, failure, retries given up, or the interpreter exiting, even by Ctrl-C while queued pushes are awaited);
the error and its retry command name the original folder. Keep the futures and call `.result()` before exiting: a
failed background push raises there.
"""

from __future__ import annotations

import atexit
import json
import logging
import re
import shlex
import shutil
import tempfile
import threading
import time
import warnings
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from huggingface_hub import CommitInfo, HfApi, RepoCard
from huggingface_hub.errors import HfHubHTTPError
from huggingface_hub.utils import filter_repo_objects, httpx

from .common import parse_card

logger = logging.getLogger(__name__)

TRANSIENT_STATUS_CODES = frozenset({408, 429, 500, 502, 503, 504})
MAX_BACKOFF_S = 60.0
# What `AutoModel` / `AutoModelForZeroShotImageClassification` (config.json) and `AutoProcessor`
# (processor_config.json) need in a MobileCLIP repo loaded with trust_remote_code=True.
REQUIRED_AUTO_MAP = {"config.json": ("AutoConfig", "AutoModel", "AutoModelForZeroShotImageClassification"),
                     "processor_config.json": ("AutoProcessor",)}
_EXECUTOR: ThreadPoolExecutor | None = None
_EXECUTOR_LOCK = threading.Lock()
_RESOLVE_PATH = re.compile(r"/(?P<repo>[^/]+/[^/]+)/resolve/[^/]+/(?P<path>.+)")
_LIVE_SNAPSHOTS: set[Path] = set()  # snapshot copies whose push has not ended; removed at exit whatever happens


class HubPushError(RuntimeError):
    """A push failed; the local folder that was being uploaded is intact at `folder`."""

    def __init__(self, message: str, *, repo_id: str, folder: Path, retry_command: str, status_code: int | None,
                 attempts: int):
        super().__init__(message)
        self.repo_id, self.folder, self.retry_command = repo_id, folder, retry_command
        self.status_code, self.attempts = status_code, attempts


class CardRejectedError(ValueError):
    """The Hub's `/api/validate-yaml` rejected README.md's metadata; the message lists its reasons."""


def status_code(error: BaseException) -> int | None:
    response = getattr(error, "response", None)
    return getattr(response, "status_code", None)


def is_transient(error: BaseException) -> bool:
    """Worth retrying: a connection problem or an HTTP status that says "try again later"."""
    if isinstance(error, httpx.TransportError):  # connect/read errors, timeouts, protocol errors
        return True
    return isinstance(error, HfHubHTTPError) and status_code(error) in TRANSIENT_STATUS_CODES


def retry_command(repo_id: str, folder: Path, repo_type: str = "model", commit_message: str | None = None,
                  revision: str | None = None, path_in_repo: str | None = None, *,
                  allow_patterns: list[str] | str | None = None, ignore_patterns: list[str] | str | None = None,
                  delete_patterns: list[str] | str | None = None, private: bool | None = None) -> str:
    """The `hf upload` command that pushes `folder` by hand as the push would have: the same files (`--include`,
    `--exclude`), the same remote deletions (`--delete`); it resumes where an interrupted upload stopped."""
    parts = ["hf", "upload", repo_id, str(folder), path_in_repo or ".", "--repo-type", repo_type]
    if revision:
        parts += ["--revision", revision]
    if commit_message:
        parts += ["--commit-message", commit_message]
    for flag, patterns in (("--include", allow_patterns), ("--exclude", ignore_patterns),
                           ("--delete", delete_patterns)):
        for pattern in [patterns] if isinstance(patterns, str) else (patterns or []):
            parts += [flag, pattern]
    if private:
        parts.append("--private")
    return shlex.join(parts)


# ----------------------------------------------------------------------------------------------------------
# Checks before anything is uploaded


def _front_matter(readme: Path) -> dict:
    return RepoCard(readme.read_text(encoding="utf-8"), ignore_metadata_errors=True).data.to_dict()


def check_card_references(folder: Path, repo_id: str | None = None) -> None:
    """Every widget image the card in `folder/README.md` stores in the repo (a relative `src`, or a resolve URL of
    `repo_id`) must be in `folder`, else the Hub page shows broken examples."""
    readme = folder / "README.md"
    if not readme.is_file():
        return
    relative = []
    for i, example in enumerate(_front_matter(readme).get("widget") or []):
        src = example.get("src", "") if isinstance(example, dict) else ""
        if src.startswith(("http://", "https://")):
            match = _RESOLVE_PATH.fullmatch(urlparse(src).path)
            if match is None or match["repo"] != repo_id:
                continue  # an image hosted elsewhere
            src = match["path"]
        elif src:
            relative.append(src)
        if src and not (folder / src).is_file():
            raise FileNotFoundError(f"README.md widget[{i}].src names {src!r}, but {folder / src} does not exist; "
                                    "write the card with card.write(folder) (it adds its widget images) or fix the "
                                    "src.")
    if relative and repo_id is not None:
        warnings.warn(f"{readme} was generated without repo_id: its widget images {relative} are relative paths, "
                      "which the Hub page may not resolve, and its usage snippets name a placeholder repo. "
                      f"Regenerate it with hub_cards.generate_model_card(..., repo_id={repo_id!r}).", UserWarning,
                      stacklevel=4)


def check_model_folder(folder: str | Path, repo_id: str | None = None) -> None:
    """A model folder about to become a repo's root: it has a card (README.md) and the files the card references;
    for a MobileCLIP model, the flat remote-code modules and the `auto_map` entries of `REQUIRED_AUTO_MAP`."""
    folder = Path(folder)
    if not (folder / "README.md").is_file():
        raise FileNotFoundError(
            f"{folder} has no README.md: a model repo needs its card (licence, usage, widget). Write one with "
            f"hub_cards.generate_model_card({str(folder)!r}, repo_id={repo_id!r}, ...).write({str(folder)!r}), or push "
            "it with push_model_to_hub(model, processor, repo_id, card).")
    check_card_references(folder, repo_id)
    config_path = folder / "config.json"
    if not config_path.is_file() or json.loads(config_path.read_text()).get("model_type") != "mobileclip":
        return
    for filename, keys in REQUIRED_AUTO_MAP.items():
        path = folder / filename
        auto_map = json.loads(path.read_text()).get("auto_map", {}) if path.is_file() else {}
        missing = [key for key in keys if key not in auto_map]
        if missing:
            raise ValueError(f"{path} lacks auto_map entries {missing}: the repo would not load with "
                             "trust_remote_code=True. Save the model and processor with save_pretrained after "
                             "`import modeling_mobileclip` (it registers them for remote code).")
        for key in keys:
            reference = auto_map[key][0] if isinstance(auto_map[key], list) else auto_map[key]
            module = reference.rsplit(".", 1)[0]
            if "--" not in module and not (folder / f"{module}.py").is_file():  # "repo--module" is another repo's
                raise FileNotFoundError(f"{filename} auto_map[{key!r}] is {reference!r}, but {folder}/{module}.py "
                                        "is missing; save_pretrained copies the remote-code modules next to it.")


# ----------------------------------------------------------------------------------------------------------
# Upload


def _snapshot(folder: Path, allow_patterns, ignore_patterns) -> Path:
    """A copy of the files of `folder` that would be uploaded, in a new temporary folder (copies, not hard links:
    `save_pretrained` and `save_state` rewrite files in place). `_remove_snapshot` deletes it when its push ends."""
    files = [p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()]
    copy = Path(tempfile.mkdtemp(prefix=f"mobileclip-push-{folder.name}-"))
    _LIVE_SNAPSHOTS.add(copy)
    try:
        for relative in filter_repo_objects(files, allow_patterns=allow_patterns, ignore_patterns=ignore_patterns):
            (copy / relative).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(folder / relative, copy / relative)
    except BaseException:
        _remove_snapshot(copy)
        raise
    return copy


def _remove_snapshot(copy: Path) -> None:
    shutil.rmtree(copy, ignore_errors=True)
    _LIVE_SNAPSHOTS.discard(copy)


@atexit.register
def _remove_live_snapshots() -> None:
    """atexit runs after the interpreter has awaited the queued pushes (each removes its own copy), and also when
    that wait was interrupted (Ctrl-C at exit abandons the upload thread before its clean-up runs)."""
    for copy in list(_LIVE_SNAPSHOTS):
        _remove_snapshot(copy)


def _validate_readme(readme: Path, repo_type: str) -> None:
    try:
        # huggingface_hub's own parsing first (a model-index it cannot read, metadata that is not a mapping), then
        # the Hub's /api/validate-yaml
        parse_card(readme.read_text(encoding="utf-8"), repo_type).validate(repo_type=repo_type)
    except ValueError as error:  # 400 from the Hub (its JSON body as text) or YAML that does not parse
        try:
            reasons = "; ".join(e.get("message", "") for e in json.loads(str(error))["errors"])
        except (ValueError, KeyError, TypeError, AttributeError):
            reasons = str(error).strip()
        raise CardRejectedError(reasons) from error


def _failure_reason(error: BaseException, transient: bool, attempts: int, repo_id: str, repo_type: str,
                    revision: str | None) -> str:
    status = status_code(error)
    if transient:
        return f"gave up after {attempts} attempts; the last error was transient ({describe_error(error)})"
    if isinstance(error, CardRejectedError):
        return (f"the Hub rejected README.md's metadata ({error}); fix the card (hub_cards.validate_card(card) "
                "checks one before a push)")
    if status in (401, 403):
        return (f"the Hub refused it ({describe_error(error)}): check that your token (HF_TOKEN or `hf auth login`) "
                f"has write access to {repo_id!r}")
    if status == 404:
        return (f"the Hub could not find it ({describe_error(error)}): check the repo id {repo_id!r}, repo_type "
                f"{repo_type!r} and revision {revision or 'main'!r}")
    return f"it failed permanently ({describe_error(error)})"


def describe_error(error: BaseException) -> str:
    status = status_code(error)
    text = str(error).strip()
    first_line = text.splitlines()[0] if text else ""
    return f"{type(error).__name__}" + (f" {status}" if status else "") + (f": {first_line}" if first_line else "")


def _copy(patterns: list[str] | str | None) -> list[str] | None:
    return [patterns] if isinstance(patterns, str) else None if patterns is None else list(patterns)


def _create_repo(api: HfApi, repo_id: str, repo_type: str, private: bool | None) -> bool:
    """`create_repo(exist_ok=True)`; True when the repo did not exist before (this push created it)."""
    existed = api.repo_exists(repo_id, repo_type=repo_type)
    api.create_repo(repo_id, repo_type=repo_type, private=private, exist_ok=True)
    return not existed


def _delete_if_empty(api: HfApi, repo_id: str, repo_type: str) -> str:
    """After a failed push that created the repo: delete it if nothing was committed to it (the Hub's initial
    commit holds only .gitattributes). Returns what happened, for the error message."""
    try:
        if set(api.list_repo_files(repo_id, repo_type=repo_type)) - {".gitattributes"}:
            return ""
        api.delete_repo(repo_id, repo_type=repo_type, missing_ok=True)
        return f" The {repo_type} repo {repo_id!r} this push had created was deleted again (it stayed empty)."
    except Exception as error:  # the push error matters more; say what is left behind
        return (f" The {repo_type} repo {repo_id!r} this push created is still on the Hub, empty (deleting it "
                f"failed: {describe_error(error)}).")


def _upload(api: HfApi, folder: Path, repo_id: str, *, repo_type: str, commit_message: str, path_in_repo,
            retries: int, backoff: float, private: bool | None, revision: str | None, allow_patterns,
            ignore_patterns, delete_patterns, owned: bool, source: Path, command: str) -> CommitInfo:
    """Validate the card, create_repo, upload_folder; retried on transient errors. A snapshot copy (`folder` is not
    `source`) is removed when the push ends, however it ends; an `owned` folder (a temporary save: the only copy)
    is removed after a success and kept after a failure."""
    readme = folder / "README.md"
    validate = not path_in_repo and readme.is_file() and "README.md" in filter_repo_objects(
        ["README.md"], allow_patterns=allow_patterns, ignore_patterns=ignore_patterns)
    attempts, created, repo_ready = 0, False, False
    try:
        while True:
            attempts += 1
            try:
                if validate:  # before the repo is created: a rejected card leaves nothing on the Hub
                    _validate_readme(readme, repo_type)
                if not repo_ready:
                    created, repo_ready = _create_repo(api, repo_id, repo_type, private), True
                # a copy: upload_folder appends its default patterns to the list it is given, in place
                info = api.upload_folder(repo_id=repo_id, folder_path=folder, repo_type=repo_type,
                                         revision=revision, path_in_repo=path_in_repo, commit_message=commit_message,
                                         allow_patterns=allow_patterns, ignore_patterns=_copy(ignore_patterns),
                                         delete_patterns=delete_patterns)
                break
            except Exception as error:  # classified below, always re-raised with the local path
                transient = is_transient(error)
                if transient and attempts <= retries:
                    delay = min(backoff * 2 ** (attempts - 1), MAX_BACKOFF_S)
                    logger.warning("Push of %s to %s failed (attempt %d of %d: %s); retrying in %.1f s.", source,
                                   repo_id, attempts, retries + 1, describe_error(error), delay)
                    time.sleep(delay)
                    continue
                reason = _failure_reason(error, transient, attempts, repo_id, repo_type, revision)
                cleanup = _delete_if_empty(api, repo_id, repo_type) if created else ""
                where = (f"The local output is intact at {folder}." if source == folder else
                         f"Its files are at {source} (the copy taken when the push was queued was removed); retry "
                         "while that folder exists.")
                raise HubPushError(
                    f"Pushing {source} to {repo_type} repo {repo_id!r} failed: {reason}.{cleanup} {where} Once the "
                    f"cause is fixed, retry with:\n    {command}",
                    repo_id=repo_id, folder=source, retry_command=command, status_code=status_code(error),
                    attempts=attempts,
                ) from error
    finally:
        if source != folder:
            _remove_snapshot(folder)
    if owned:
        shutil.rmtree(folder, ignore_errors=True)
    return info


def _submit(fn, *args, **kwargs) -> Future:
    global _EXECUTOR
    with _EXECUTOR_LOCK:
        if _EXECUTOR is None:
            _EXECUTOR = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mobileclip-hub-push")
    return _EXECUTOR.submit(fn, *args, **kwargs)


def _push(folder: Path, repo_id: str, *, owned: bool, commit_message: str | None, repo_type: str,
          path_in_repo: str | None, run_as_future: bool, snapshot: bool | None, retries: int, backoff: float,
          private: bool | None, revision: str | None, token: str | None, allow_patterns, ignore_patterns,
          delete_patterns) -> CommitInfo | Future:
    folder = Path(folder).resolve()
    if not folder.is_dir() or not any(folder.iterdir()):
        raise FileNotFoundError(f"folder={str(folder)!r} is not a non-empty directory; nothing to push to {repo_id!r}.")
    if repo_type not in ("model", "dataset", "space"):
        raise ValueError(f"repo_type={repo_type!r}; choose 'model', 'dataset' or 'space'.")
    if not isinstance(retries, int) or retries < 0 or backoff < 0:
        raise ValueError(f"retries={retries!r} and backoff={backoff!r} must be a non-negative int and float.")
    path_in_repo = (path_in_repo or "").strip("/") or None
    if repo_type == "model" and path_in_repo is None:
        check_model_folder(folder, repo_id)
    source = folder
    commit_message = commit_message or f"Upload {source.name} with mobileclip-hf"
    command = retry_command(repo_id, source, repo_type, commit_message, revision, path_in_repo,
                            allow_patterns=allow_patterns, ignore_patterns=ignore_patterns,
                            delete_patterns=delete_patterns, private=private)
    if (run_as_future if snapshot is None else snapshot) and not owned:
        folder = _snapshot(folder, allow_patterns, ignore_patterns)
        allow_patterns = ignore_patterns = None  # applied while copying
    kwargs: dict[str, Any] = dict(
        repo_type=repo_type, commit_message=commit_message, path_in_repo=path_in_repo, retries=retries,
        backoff=backoff, private=private, revision=revision, allow_patterns=allow_patterns,
        ignore_patterns=ignore_patterns, delete_patterns=delete_patterns, owned=owned, source=source,
        command=command)
    api = HfApi(token=token)
    if run_as_future:
        return _submit(_upload, api, folder, repo_id, **kwargs)
    return _upload(api, folder, repo_id, **kwargs)


def push_folder_to_hub(folder: str | Path, repo_id: str, *, commit_message: str | None = None,
                       repo_type: str = "model", path_in_repo: str | None = None, run_as_future: bool = False,
                       snapshot: bool | None = None, retries: int = 3, backoff: float = 2.0,
                       private: bool | None = None, revision: str | None = None, token: str | None = None,
                       allow_patterns: list[str] | str | None = None, ignore_patterns: list[str] | str | None = None,
                       delete_patterns: list[str] | str | None = None) -> CommitInfo | Future:
    """Upload an already-written folder (a converted or trained model with its card, a training checkpoint, dataset
    shards with their card) as one commit to `repo_id`, creating the repo if needed.

    Args:
        folder: The folder to upload; it is never modified or deleted.
        repo_id: "namespace/name".
        commit_message: The commit's summary line (default: "Upload <folder name> with mobileclip-hf").
        repo_type: "model", "dataset" or "space".
        path_in_repo: Folder in the repo to upload into (default: the root), e.g. "last-checkpoint" for training
            state. A model folder pushed to the root is checked first (`check_model_folder`).
        run_as_future: Return a `Future` at once and upload in a background thread.
        snapshot: Upload a copy of the files taken now (default: True with `run_as_future`), so the caller may
            change or delete `folder` while the upload runs; the copy is removed when the push ends, however it
            ends (a failure names `folder` and the command that retries from it).
        retries: How many times a transient failure is retried (so at most `retries + 1` attempts).
        backoff: Seconds before the first retry; doubled each time (capped at 60 s).
        private: Visibility if the repo is created (an existing repo keeps its own).
        revision: Branch to commit to (default "main").
        token: Hub token (default: HF_TOKEN or the stored login).
        allow_patterns, ignore_patterns: Globs selecting the files to upload, e.g. ignore_patterns=["checkpoints/*"]
            for a training output folder.
        delete_patterns: Globs (relative to `path_in_repo`) of remote files to delete in the same commit, e.g. "*" to
            replace the previous "last-checkpoint".

    Returns:
        The `CommitInfo` of the commit, or a `Future` of it. Failures raise `HubPushError` (from `.result()` for a
        future), naming the local folder and the `hf upload` command that retries the push (same patterns). A repo
        this push created is deleted again if the push failed and left it empty.
    """
    return _push(Path(folder), repo_id, owned=False, commit_message=commit_message, repo_type=repo_type,
                 path_in_repo=path_in_repo, run_as_future=run_as_future, snapshot=snapshot, retries=retries,
                 backoff=backoff, private=private, revision=revision, token=token, allow_patterns=allow_patterns,
                 ignore_patterns=ignore_patterns, delete_patterns=delete_patterns)


def push_model_to_hub(model, processor, repo_id: str, card, *, commit_message: str | None = None,
                      run_as_future: bool = False, retries: int = 3, backoff: float = 2.0,
                      private: bool | None = None, revision: str | None = None, token: str | None = None,
                      local_dir: str | Path | None = None) -> CommitInfo | Future:
    """Save `model`, `processor` and `card` (README.md plus the files it references) and push them as one commit.

    The files are written to `local_dir`, or to a new temporary folder that is deleted after a successful push and
    kept when the push fails (the error names it and the `hf upload` command to retry). Other arguments as in
    `push_folder_to_hub`. `card` is a `huggingface_hub.ModelCard`, typically from `hub_cards.generate_model_card`
    (generate it with `repo_id=` this repo, so its usage snippets and widget URLs name it).
    """
    card_repo = getattr(card, "repo_id", None)
    if card_repo is not None and card_repo != repo_id:
        raise ValueError(f"The card was generated for repo_id={card_repo!r} (its usage snippets load from it) but is "
                         f"pushed to {repo_id!r}; regenerate it with repo_id={repo_id!r}.")
    if not hasattr(card, "save") or not hasattr(card, "data"):
        raise TypeError(f"card is a {type(card).__name__}; pass a huggingface_hub.ModelCard "
                        "(hub_cards.generate_model_card returns one).")
    owned = local_dir is None
    folder = Path(local_dir) if local_dir is not None else Path(
        tempfile.mkdtemp(prefix=f"mobileclip-push-{repo_id.replace('/', '--')}-"))
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    if hasattr(card, "write"):
        card.write(folder)
    else:
        card.save(folder / "README.md")
    return _push(folder, repo_id, owned=owned, commit_message=commit_message, repo_type="model", path_in_repo=None,
                 run_as_future=run_as_future, snapshot=False, retries=retries, backoff=backoff, private=private,
                 revision=revision, token=token, allow_patterns=None, ignore_patterns=None, delete_patterns=None)


__all__ = ["CardRejectedError", "HubPushError", "check_model_folder", "describe_error", "is_transient",
           "push_folder_to_hub", "push_model_to_hub", "retry_command", "status_code"]
