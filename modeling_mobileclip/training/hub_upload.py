"""`--push-to-hub` during training: checks before step 1, checkpoints in the background, the final model at the end.

A run's pushes create the repo at the first upload (the pre-flight check creates nothing); a push that created it
and failed deletes it again while it is empty (`hub_cards.push`), so a run whose pushes all fail leaves no repo.
"""

from __future__ import annotations

import sys
from pathlib import Path

# The final push publishes the output folder except the training state (optimizer, RNG, data position).
FINAL_IGNORE_PATTERNS = ["checkpoints/*"]


def check_hub_push(args, accelerator) -> None:
    """`--push-to-hub`: before any data is read or step trained, everything the pushes will need: a licence, a card
    the Hub accepts, a token, and a repo this token can write to or create. A failure is one `error:` line naming
    the flag and the fix, exit status 2 (as argparse's), on every process."""
    if args.push_to_hub is None:
        return
    problem = _hub_push_problem(args) if accelerator.is_main_process else None
    if accelerator.num_processes > 1:
        from accelerate.utils import broadcast_object_list

        problem = broadcast_object_list([problem])[0]
    if problem is not None:
        if accelerator.is_main_process:
            print(f"train_accelerate.py: error: --push-to-hub {args.push_to_hub}: {problem}", file=sys.stderr)
        raise SystemExit(2)


def _hub_push_problem(args) -> str | None:
    """What would make the pushes fail, as the fix to make (None: nothing)."""
    from .data_sources import weights_licence

    licence = weights_licence(args)
    if licence is None:
        return ("no --license given: the model card of the pushed weights needs their licence. Pass a Hub licence "
                "id, e.g. --license apache-2.0, or the licence your data and teachers require.")
    from huggingface_hub import constants, get_token
    from huggingface_hub.utils import httpx

    from hub_cards.push import describe_error

    if constants.HF_HUB_OFFLINE:
        return "HF_HUB_OFFLINE is set, but pushing needs the Hub: unset HF_HUB_OFFLINE, or drop --push-to-hub."
    if get_token() is None:
        return ("no Hugging Face token found. Log in with `hf auth login` (a token with write access) or set HF_TOKEN, "
                "then rerun.")
    try:
        return _card_problem(args, licence) or _access_problem(args.push_to_hub)
    except httpx.TransportError as err:
        return f"could not reach the Hub ({describe_error(err)}); check the connection and rerun."


def _card_problem(args, licence: str) -> str | None:
    from huggingface_hub.errors import HfHubHTTPError

    from hub_cards import validate_card
    from hub_cards.push import describe_error

    from .card import card_fields
    from .students import student_class

    fields = card_fields(args, licence, [args.train_data or "the embedded toy DataCompDR"], [], [], {})
    try:
        card = student_class(args.model, args.trust_remote_code).model_card(args.model, None, None, fields)
        validate_card(card, "model")
    except HfHubHTTPError as err:  # not the card's fault: the Hub did not answer the validation
        return (f"could not validate the model card with the Hub ({describe_error(err)}); check the connection "
                "and rerun.")
    except ValueError as err:
        return (f"the model card this run would write is invalid ({err}); fix --license (a Hub licence id such as "
                "apache-2.0) or --model.")
    return None


def _access_problem(repo_id: str) -> str | None:
    """The token is accepted by the Hub and may write to `repo_id`, or create it in its namespace."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError

    from hub_cards.push import describe_error, status_code

    api = HfApi()
    try:
        me = api.whoami()
    except HfHubHTTPError as err:
        if status_code(err) == 401:
            return ("the Hub rejects the token (401). Create a write token at https://huggingface.co/settings/tokens "
                    "and log in with `hf auth login --force` (or set HF_TOKEN), then rerun.")
        return f"could not reach the Hub to check the token ({describe_error(err)}); check the connection and rerun."
    role = (me.get("auth") or {}).get("accessToken", {}).get("role")
    if role == "read":
        return ("the token is read-only. Create a write token at https://huggingface.co/settings/tokens and log in "
                "with `hf auth login --force` (or set HF_TOKEN), then rerun.")
    try:
        api.auth_check(repo_id, write=True)
        return None
    except RepositoryNotFoundError:  # to be created by the first push: the namespace must be the user's or an org's
        namespaces = [me["name"], *(org["name"] for org in me.get("orgs") or [])]
        if repo_id.split("/")[0] in namespaces:
            return None
        return (f"the repo does not exist and {me['name']!r} cannot create repos under {repo_id.split('/')[0]!r}. "
                f"Use a namespace of yours ({', '.join(namespaces)}), e.g. --push-to-hub "
                f"{me['name']}/{repo_id.split('/')[1]}.")
    except HfHubHTTPError as err:
        if status_code(err) in (401, 403):
            return (f"the token of {me['name']!r} has no write access to this existing repo ({describe_error(err)}). "
                    "Ask its owner for write access, or push to a repo of yours (--push-to-hub "
                    f"{me['name']}/{repo_id.split('/')[1]}).")
        return f"could not check access to the repo ({describe_error(err)}); check the connection and rerun."


class HubUploader:
    """`--push-to-hub`: each checkpoint to `last-checkpoint/` in the background (a snapshot of its files, replacing
    the previous one, one upload at a time), the final model to the repo root at the end."""

    def __init__(self, args, accelerator):
        self.repo_id, self.folder, self.private = args.push_to_hub, Path(args.output_dir), args.hub_private or None
        self.enabled = self.repo_id is not None and accelerator.is_main_process
        self.pending = None

    def checkpoint(self, path: Path, step: int) -> None:
        if not self.enabled:
            return
        from hub_cards.push import push_folder_to_hub

        self.wait()  # the previous upload had a whole checkpoint interval; uploads never pile up
        self.pending = push_folder_to_hub(path, self.repo_id, commit_message=f"Checkpoint at step {step}",
                                          path_in_repo="last-checkpoint", delete_patterns="*", private=self.private,
                                          run_as_future=True)

    def wait(self) -> None:
        if self.pending is None:
            return
        from hub_cards.push import HubPushError

        try:
            self.pending.result()
        except HubPushError as err:  # a lost checkpoint upload must not stop training; the final push will tell
            print(f"Warning: {err}", file=sys.stderr)
        self.pending = None

    def final(self) -> None:
        if not self.enabled:
            return
        from hub_cards.push import push_folder_to_hub

        self.wait()
        push_folder_to_hub(self.folder, self.repo_id, commit_message="Final model (train_accelerate.py)",
                           ignore_patterns=FINAL_IGNORE_PATTERNS, private=self.private)
        print(f"Pushed the final model to https://huggingface.co/{self.repo_id}")


