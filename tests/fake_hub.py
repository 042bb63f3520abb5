"""An in-process fake Hugging Face Hub for offline tests (docs/hf-ecosystem.md section 7).

`huggingface_hub` sends every request through one `httpx2.Client`; `FakeHub.install()` swaps in a client whose
transport is `httpx2.MockTransport(hub.handle)`, so `HfApi` uploads (`create_repo`, `upload_folder`, also with
`run_as_future=True`, `path_in_repo`, `delete_patterns`), `hf_hub_download` / `snapshot_download`,
`ModelCard.validate()`, transformers' `from_pretrained("org/name")` / `pipeline(model="org/name")` and datasets'
`load_dataset("org/name")` all talk to this object. No socket is opened.

Use it from any test module:

    from fake_hub import FakeHub, fake_hub_fixture  # noqa: F401  (the `fake_hub` fixture: a fresh hub per test)

    def test_push(fake_hub, tmp_path):
        push_folder_to_hub(model_dir, "org/tiny", commit_message="Add weights")   # or HfApi().upload_folder(...)
        assert set(fake_hub.files("org/tiny")) >= {"config.json", "model.safetensors"}
        model = AutoModel.from_pretrained("org/tiny")                             # downloads from the fake hub

or by hand: `with FakeHub().install(cache_dir=tmp_path / "hub-cache") as hub: ...` (downloads are cached under
`cache_dir`; on exit every patched constant, environment variable and the client factory are restored).

What a test can read:
    hub.files(repo_id, repo_type="model", revision="main")  {path: bytes} of the latest commit (or a commit oid)
    hub.commits(repo_id, repo_type="model")                 [Commit(oid, message, files (full tree), changed)]
    hub.repo_exists(repo_id, repo_type="model")
    hub.requests                                            [(method, path)] of every request, in order
    hub.validated                                           bodies posted to /api/validate-yaml {"repoType", "content"}
    hub.failures                                            injected failures; `.times` counts down as they are served
and seed or move a store:
    hub.add_commit(repo_id, {path: bytes}, repo_type=, message=)   commit without HTTP
    hub.dump(folder) / FakeHub.load(folder)   the store on disk, e.g. for a subprocess that imports this file by path
                                              (it imports nothing from this project; install() there too)

Failure injection (checked before a route does anything):

    hub.fail("commit", status=500, times=2)   # the next two commits answer 500, then commits work again
    hub.fail("commit", status=403)            # every commit answers 403 until `hub.clear_failures()`
    hub.fail("*", status="connect")           # every request raises httpx2.ConnectError

Route names: "create_repo", "delete_repo", "preupload", "commit", "resolve", "info", "tree", "validate_yaml", "whoami",
"auth_check", "*" (all). Note that
huggingface_hub itself retries a commit POST that answers 5xx, sleeping 1, 2, 4... s between tries (patch
`huggingface_hub.utils._http.time.sleep` to keep such a test fast). Requests must carry this hub's token (`HF_TOKEN`
is set to it by install()); another token gets 401. The token belongs to user `hub.user` ("me"), member of
`hub.orgs` ("org",), with role `hub.role` ("write"): creating, committing to or deleting a repo outside those
namespaces, or with role "read", answers 403 as the Hub does (`hub.role = "read"` simulates a read-only token).
`/api/validate-yaml` applies the subset of the Hub's metadata checks in `validate_metadata` (licence ids, `other` +
name + link, pipeline_tag, widget, model-index, configs).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import itertools
import json
import os
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote

import httpx2
import yaml

FAKE_ENDPOINT = "http://fake-hub.invalid"
FAKE_TOKEN = "hf_fake_write_token"
ROUTES = ("create_repo", "delete_repo", "preupload", "commit", "resolve", "info", "tree", "validate_yaml", "whoami",
          "auth_check")
REPO_TYPES = ("model", "dataset", "space")
_URL_PREFIX = {"model": "", "dataset": "datasets/", "space": "spaces/"}

# The subset of the Hub's metadata schema that `/api/validate-yaml` enforces here (the real Hub checks more).
KNOWN_PIPELINE_TAGS = frozenset({
    "zero-shot-image-classification", "image-classification", "image-feature-extraction", "feature-extraction",
    "image-to-text", "text-to-image", "zero-shot-classification", "image-text-to-text", "text-classification",
})
KNOWN_LICENSES = frozenset({
    "apache-2.0", "mit", "bsd-3-clause", "cc-by-4.0", "cc-by-nc-4.0", "cc-by-nc-nd-4.0", "cc-by-nc-sa-4.0",
    "cc-by-sa-4.0", "cc0-1.0", "openrail", "other", "unknown",
})
_FRONT_MATTER = re.compile(r"\A\s*---\s*\n(.*?)\n---\s*(\n|\Z)", re.DOTALL)
_REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")


def git_blob_sha1(data: bytes) -> str:
    """The object id git (and the Hub's ETag for a non-LFS file) gives `data`."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class Commit:
    oid: str
    repo_type: str
    repo_id: str
    message: str
    files: dict[str, bytes]  # the full tree after this commit
    changed: list[str]  # paths added or modified by this commit


@dataclass
class _Failure:
    route: str
    status: int | str
    times: int | None  # None: forever
    message: str


@dataclass
class FakeHub:
    """A Hub with repos `{(repo_type, repo_id): [Commit, ...]}` served over `httpx2.MockTransport`."""

    endpoint: str = FAKE_ENDPOINT
    token: str = FAKE_TOKEN
    history: dict[tuple[str, str], list[Commit]] = field(default_factory=dict)
    requests: list[tuple[str, str]] = field(default_factory=list)  # (method, path) of every request, in order
    failures: list[_Failure] = field(default_factory=list)
    validated: list[dict] = field(default_factory=list)  # bodies posted to /api/validate-yaml
    user: str = "me"  # whom the token belongs to (whoami)
    orgs: tuple[str, ...] = ("org",)  # the organisations the user may write to
    role: str = "write"  # the token's role: "write", or "read" (every write answers 403)

    def __post_init__(self):
        self._lock = threading.Lock()
        self._counter = itertools.count()

    # ------------------------------------------------------------------ store

    def create_repo(self, repo_id: str, repo_type: str = "model") -> None:
        self.history.setdefault((repo_type, repo_id), [])

    def delete_repo(self, repo_id: str, repo_type: str = "model") -> None:
        self.history.pop((repo_type, repo_id), None)

    def repo_exists(self, repo_id: str, repo_type: str = "model") -> bool:
        return (repo_type, repo_id) in self.history

    def commits(self, repo_id: str, repo_type: str = "model") -> list[Commit]:
        return list(self.history.get((repo_type, repo_id), []))

    def files(self, repo_id: str, repo_type: str = "model", revision: str = "main") -> dict[str, bytes]:
        """`{path: bytes}` of a revision (a branch name always means the latest commit)."""
        key = (repo_type, repo_id)
        if key not in self.history:
            raise KeyError(f"fake hub has no {repo_type} repo {repo_id!r}; repos: {sorted(self.history)}")
        commit = self._commit_at(key, revision)
        return dict(commit.files) if commit is not None else {}

    def add_commit(self, repo_id: str, files: dict[str, bytes], *, repo_type: str = "model", message: str = "seed",
                   deleted: tuple[str, ...] = ()) -> Commit:
        """Commit directly into the store (no HTTP), e.g. to seed a repo."""
        key = (repo_type, repo_id)
        with self._lock:
            self.history.setdefault(key, [])
            previous = self.history[key][-1].files if self.history[key] else {}
            tree = {path: data for path, data in previous.items() if path not in deleted}
            tree.update(files)
            seed = f"{repo_type}/{repo_id}/{next(self._counter)}/{message}".encode()
            commit = Commit(hashlib.sha1(seed).hexdigest(), repo_type, repo_id, message, tree, sorted(files))
            self.history[key].append(commit)
        return commit

    def _commit_at(self, key, revision: str) -> Commit | None:
        commits = self.history.get(key, [])
        if revision in ("main", "HEAD") or revision is None:
            return commits[-1] if commits else None
        for commit in commits:
            if commit.oid == revision:
                return commit
        return None

    def dump(self, folder: str | os.PathLike) -> Path:
        """Write the latest tree of every repo under `folder/<repo_type>/<repo_id>/` (plus commit messages)."""
        folder = Path(folder)
        index = []
        for (repo_type, repo_id), commits in self.history.items():
            root = folder / repo_type / repo_id
            root.mkdir(parents=True, exist_ok=True)
            files = commits[-1].files if commits else {}
            for path, data in files.items():
                (root / path).parent.mkdir(parents=True, exist_ok=True)
                (root / path).write_bytes(data)
            index.append({"repo_type": repo_type, "repo_id": repo_id, "files": sorted(files),
                          "messages": [c.message for c in commits]})
        (folder / "fake_hub_index.json").write_text(json.dumps(index, indent=1))
        return folder

    @classmethod
    def load(cls, folder: str | os.PathLike, **kwargs) -> FakeHub:
        """A hub serving what `dump(folder)` wrote (one commit per repo, holding its latest tree)."""
        folder = Path(folder)
        index_path = folder / "fake_hub_index.json"
        if not index_path.is_file():
            raise FileNotFoundError(f"{folder} holds no fake_hub_index.json; write it with FakeHub.dump({folder}).")
        hub = cls(**kwargs)
        for entry in json.loads(index_path.read_text()):
            root = folder / entry["repo_type"] / entry["repo_id"]
            files = {path: (root / path).read_bytes() for path in entry["files"]}
            hub.create_repo(entry["repo_id"], entry["repo_type"])
            if files:
                hub.add_commit(entry["repo_id"], files, repo_type=entry["repo_type"],
                               message=(entry["messages"] or ["loaded"])[-1])
        return hub

    # ------------------------------------------------------------------ failure injection

    def fail(self, route: str, status: int | str = 500, times: int | None = None, message: str | None = None):
        """Make `route` answer `status` (an HTTP code, or "connect" to raise `httpx2.ConnectError`) for the next
        `times` requests (None: until `clear_failures()`)."""
        if route not in (*ROUTES, "*"):
            raise ValueError(f"unknown fake-hub route {route!r}; valid: {', '.join(ROUTES)} or '*'")
        if not (status == "connect" or (isinstance(status, int) and 400 <= status <= 599)):
            raise ValueError(f"status must be an HTTP error code (400-599) or 'connect', got {status!r}")
        self.failures.append(_Failure(route, status, times, message or f"injected failure on {route}"))

    def clear_failures(self) -> None:
        self.failures.clear()

    def _injected(self, route: str, request: httpx2.Request) -> httpx2.Response | None:
        with self._lock:
            for failure in self.failures:
                if failure.route in (route, "*") and (failure.times is None or failure.times > 0):
                    if failure.times is not None:
                        failure.times -= 1
                    break
            else:
                return None
        if failure.status == "connect":
            raise httpx2.ConnectError(f"[fake hub] {failure.message}", request=request)
        return _error(failure.status, failure.message)

    # ------------------------------------------------------------------ HTTP

    def handle(self, request: httpx2.Request) -> httpx2.Response:
        """The MockTransport handler: route `request`, apply injected failures, answer like the Hub."""
        path = unquote(request.url.path)
        if request.url.host != httpx2.URL(self.endpoint).host:  # e.g. datasets-server: never the network, just 404
            self.requests.append((request.method, f"//{request.url.host}{path}"))
            return _error(404, f"the fake hub serves {self.endpoint} only, not {request.url.host}")
        self.requests.append((request.method, path))
        for route, method, pattern, handler in self._routes():
            if request.method not in method:
                continue
            match = pattern.fullmatch(path)
            if match is None:
                continue
            injected = self._injected(route, request)
            if injected is not None:
                return injected
            return handler(request, **match.groupdict())
        return _error(404, f"fake hub has no route for {request.method} {path}")

    def _routes(self):
        types = "(?P<type>model|dataset|space)s"
        repo = r"(?P<repo>[^/]+/[^/]+)"
        return (
            ("create_repo", ("POST",), re.compile(r"/api/repos/create"), self._create_repo),
            ("delete_repo", ("DELETE",), re.compile(r"/api/repos/delete"), self._delete_repo),
            ("whoami", ("GET",), re.compile(r"/api/whoami-v2"), self._whoami),
            ("auth_check", ("GET",), re.compile(rf"/api/{types}/{repo}/auth-check(?P<write>/write)?"),
             self._auth_check),
            ("preupload", ("POST",), re.compile(rf"/api/{types}/{repo}/preupload/(?P<rev>[^/]+)"), self._preupload),
            ("commit", ("POST",), re.compile(rf"/api/{types}/{repo}/commit/(?P<rev>[^/]+)"), self._commit),
            ("validate_yaml", ("POST",), re.compile(r"/api/validate-yaml"), self._validate_yaml),
            ("tree", ("GET",), re.compile(rf"/api/{types}/{repo}/tree/(?P<rev>[^/]+)(?:/(?P<subpath>.*))?"),
             self._tree),
            ("info", ("GET",), re.compile(rf"/api/{types}/{repo}(?:/revision/(?P<rev>[^/]+))?"), self._info),
            ("resolve", ("GET", "HEAD"),
             re.compile(r"/(?:(?P<prefix>datasets|spaces|models)/)?" + repo + r"/resolve/(?P<rev>[^/]+)/(?P<file>.+)"),
             self._resolve),
        )

    def _authorised(self, request: httpx2.Request) -> httpx2.Response | None:
        if request.headers.get("authorization") != f"Bearer {self.token}":
            return _error(401, "Invalid credentials in Authorization header", code="RepoNotFound")
        return None

    def _may_write(self, repo_id: str) -> httpx2.Response | None:
        """403 unless the token has the write role and the repo's namespace is the user's or one of its orgs."""
        namespace = repo_id.split("/")[0]
        if self.role != "write" or namespace not in (self.user, *self.orgs):
            return _error(403, f"You don't have the rights to write to {repo_id} (token role {self.role!r}, "
                               f"namespaces {[self.user, *self.orgs]})")
        return None

    def _repo_from_body(self, request: httpx2.Request) -> tuple[str, str]:
        body = json.loads(request.content or b"{}")
        name, organization = body.get("name"), body.get("organization")
        return body.get("type") or "model", f"{organization}/{name}" if organization else name

    def _create_repo(self, request: httpx2.Request) -> httpx2.Response:
        if (denied := self._authorised(request)) is not None:
            return denied
        repo_type, repo_id = self._repo_from_body(request)
        if repo_type not in REPO_TYPES or not repo_id or not _REPO_ID.match(repo_id):
            return _error(400, f"invalid repo name {repo_id!r} or type {repo_type!r}")
        if (denied := self._may_write(repo_id)) is not None:
            return denied
        if self.repo_exists(repo_id, repo_type):
            return _error(409, "You already created this model repo", extra={"url": self._repo_url(repo_type,
                                                                                                      repo_id)})
        self.create_repo(repo_id, repo_type)
        return httpx2.Response(200, json={"url": self._repo_url(repo_type, repo_id), "name": repo_id})

    def _delete_repo(self, request: httpx2.Request) -> httpx2.Response:
        repo_type, repo_id = self._repo_from_body(request)
        if (denied := self._authorised(request) or self._missing_repo(repo_type, repo_id)
                or self._may_write(repo_id)) is not None:
            return denied
        self.delete_repo(repo_id, repo_type)
        return httpx2.Response(200)

    def _whoami(self, request: httpx2.Request) -> httpx2.Response:
        if (denied := self._authorised(request)) is not None:
            return denied
        return httpx2.Response(200, json={
            "type": "user", "name": self.user, "orgs": [{"name": org, "roleInOrg": "write"} for org in self.orgs],
            "auth": {"type": "access_token", "accessToken": {"displayName": "fake", "role": self.role}}})

    def _auth_check(self, request, type, repo, write=None) -> httpx2.Response:
        if (denied := self._authorised(request) or self._missing_repo(type, repo)) is not None:
            return denied
        if write and (denied := self._may_write(repo)) is not None:
            return denied
        return httpx2.Response(200, json={})

    def _repo_url(self, repo_type: str, repo_id: str) -> str:
        return f"{self.endpoint}/{_URL_PREFIX[repo_type]}{repo_id}"

    def _missing_repo(self, repo_type: str, repo_id: str) -> httpx2.Response | None:
        if not self.repo_exists(repo_id, repo_type):
            return _error(404, f"Repository not found: {repo_type}s/{repo_id}", code="RepoNotFound")
        return None

    def _preupload(self, request, type, repo, rev) -> httpx2.Response:
        if (denied := self._authorised(request) or self._missing_repo(type, repo)) is not None:
            return denied
        files = json.loads(request.content)["files"]
        # "regular" makes the client inline every file as base64 in the commit: no LFS or Xet round trip.
        return httpx2.Response(200, json={"files": [{"path": f["path"], "uploadMode": "regular",
                                                     "shouldIgnore": False} for f in files],
                                          "commitOid": self._head_oid(type, repo)})

    def _head_oid(self, repo_type: str, repo_id: str) -> str:
        commits = self.history.get((repo_type, repo_id)) or []
        return commits[-1].oid if commits else "0" * 40

    def _commit(self, request, type, repo, rev) -> httpx2.Response:
        if (denied := self._authorised(request) or self._missing_repo(type, repo) or self._may_write(repo)) is not None:
            return denied
        if unquote(rev) != "main":
            return _error(400, f"the fake hub commits to 'main' only, got revision {rev!r}")
        message, files, deleted = "", {}, []
        for line in request.content.splitlines():
            if not line.strip():
                continue
            item = json.loads(line)
            key, value = item["key"], item["value"]
            if key == "header":
                message = value["summary"]
            elif key == "file":
                if value.get("encoding") != "base64":
                    return _error(400, f"file {value['path']!r}: only base64 content is supported")
                files[value["path"]] = base64.b64decode(value["content"])
            elif key == "deletedFile":
                deleted.append(value["path"])
            else:
                return _error(400, f"commit operation {key!r} is not supported by the fake hub (preupload answers "
                                   "'regular' for every file)")
        commit = self.add_commit(repo, files, repo_type=type, message=message, deleted=tuple(deleted))
        return httpx2.Response(200, json={"commitUrl": f"{self._repo_url(type, repo)}/commit/{commit.oid}",
                                          "commitOid": commit.oid, "pullRequestUrl": None})

    def _resolve(self, request, prefix, repo, rev, file) -> httpx2.Response:
        repo_type = {"datasets": "dataset", "spaces": "space"}.get(prefix, "model")
        if (missing := self._missing_repo(repo_type, repo)) is not None:
            return missing
        commit = self._commit_at((repo_type, repo), unquote(rev))
        if commit is None and rev not in ("main", "HEAD"):
            return _error(404, f"Revision not found: {rev}", code="RevisionNotFound")
        if commit is None or file not in commit.files:
            return _error(404, f"Entry not found: {file}", code="EntryNotFound")
        data = commit.files[file]
        headers = {"ETag": f'"{git_blob_sha1(data)}"', "X-Repo-Commit": commit.oid,
                   "Content-Length": str(len(data)), "Accept-Ranges": "bytes"}
        if request.method == "HEAD":
            return httpx2.Response(200, headers=headers)
        start = _range_start(request.headers.get("range"))
        if start:
            headers["Content-Length"] = str(len(data) - start)
            return httpx2.Response(206, headers=headers, content=data[start:])
        return httpx2.Response(200, headers=headers, content=data)

    def _info(self, request, type, repo, rev=None) -> httpx2.Response:
        if (missing := self._missing_repo(type, repo)) is not None:
            return missing
        commit = self._commit_at((type, repo), unquote(rev or "main"))
        files = commit.files if commit else {}
        return httpx2.Response(200, json={
            "id": repo, "_id": hashlib.md5(repo.encode()).hexdigest()[:24], "private": False, "disabled": False,
            "gated": False, "sha": commit.oid if commit else None,
            "siblings": [{"rfilename": p} for p in sorted(files)],
            "tags": [], "downloads": 0, "likes": 0, "lastModified": "2026-01-01T00:00:00.000Z",
            "createdAt": "2026-01-01T00:00:00.000Z", "cardData": _front_matter(files.get("README.md", b"")) or {},
        })

    def _tree(self, request, type, repo, rev, subpath=None) -> httpx2.Response:
        if (missing := self._missing_repo(type, repo)) is not None:
            return missing
        commit = self._commit_at((type, repo), unquote(rev))
        if commit is None:
            return httpx2.Response(200, json=[])
        recursive = request.url.params.get("recursive") in ("1", "true", "True")
        base = (subpath or "").strip("/")
        entries, folders = [], set()
        for path, data in sorted(commit.files.items()):
            if base and not path.startswith(base + "/"):
                continue
            rest = path[len(base) + 1:] if base else path
            parts = rest.split("/")
            for depth in range(1, len(parts)):
                folder = "/".join(([base] if base else []) + parts[:depth])
                if (recursive or depth == 1) and folder not in folders:
                    folders.add(folder)
                    entries.append({"type": "directory", "path": folder, "oid": "0" * 40, "size": 0})
            if recursive or len(parts) == 1:
                entries.append({"type": "file", "path": path, "oid": git_blob_sha1(data), "size": len(data)})
        return httpx2.Response(200, json=entries)

    def _validate_yaml(self, request) -> httpx2.Response:
        body = json.loads(request.content)
        self.validated.append(body)
        errors = validate_metadata(body.get("content", ""), body.get("repoType") or "model")
        if errors:
            return httpx2.Response(400, json={"errors": [{"message": e} for e in errors]},
                                   headers={"X-Error-Message": "; ".join(errors)})
        return httpx2.Response(200, json={"warnings": []})

    # ------------------------------------------------------------------ installation

    def client(self) -> httpx2.Client:
        """An `httpx2.Client` served by this hub, with huggingface_hub's own request hook (offline check, ids)."""
        from huggingface_hub.utils._http import hf_request_event_hook

        return httpx2.Client(transport=httpx2.MockTransport(self.handle), follow_redirects=True, timeout=None,
                             event_hooks={"request": [hf_request_event_hook]})

    @contextlib.contextmanager
    def install(self, cache_dir: str | os.PathLike | None = None):
        """Route huggingface_hub (and transformers through it) to this hub; restore everything on exit.

        `HF_ENDPOINT` is read once at import into `huggingface_hub.constants` (ENDPOINT and the resolve-URL template
        built from it), so those constants are patched, as is the endpoint of the module-level `HfApi` behind
        `huggingface_hub.upload_folder` & co. Offline mode is switched off (`HF_HUB_OFFLINE` is also read at import),
        `HF_TOKEN` is set to this hub's token and, when `cache_dir` is given, downloads go there instead of the
        user's cache.
        """
        import huggingface_hub
        from huggingface_hub import constants, hf_api

        patches = [(constants, "ENDPOINT", self.endpoint),
                   (constants, "HUGGINGFACE_CO_URL_TEMPLATE",
                    self.endpoint + "/{repo_id}/resolve/{revision}/{filename}"),
                   (constants, "HF_HUB_OFFLINE", False),
                   (hf_api.api, "endpoint", self.endpoint)]
        if cache_dir is not None:
            patches.append((constants, "HF_HUB_CACHE", str(cache_dir)))
        patches.append((constants, "HF_URL_HOSTS", constants.HF_URL_HOSTS | {httpx2.URL(self.endpoint).host}))
        try:  # `datasets` reads the endpoint and offline mode at import too: import it now so it is restored on exit
            import datasets.config as datasets_config
        except ImportError:  # pragma: no cover
            datasets_config = None
        if datasets_config is not None:
            patches += [(datasets_config, "HF_ENDPOINT", self.endpoint),
                        (datasets_config, "HUB_DATASETS_URL",
                         self.endpoint + "/datasets/{repo_id}/resolve/{revision}/{path}"),
                        (datasets_config, "HF_HUB_OFFLINE", False), (datasets_config, "HF_DATASETS_OFFLINE", False)]
        env = {"HF_TOKEN": self.token, "HF_ENDPOINT": self.endpoint, "HF_HUB_OFFLINE": "0",
               "HF_DATASETS_OFFLINE": "0", "HF_HUB_DISABLE_TELEMETRY": "1"}
        saved_attrs = [(obj, name, getattr(obj, name)) for obj, name, _ in patches]
        saved_env = {name: os.environ.get(name) for name in (*env, "TRANSFORMERS_OFFLINE")}
        saved_factory = huggingface_hub.utils._http._GLOBAL_CLIENT_FACTORY
        try:
            for obj, name, value in patches:
                setattr(obj, name, value)
            os.environ.update(env)
            os.environ.pop("TRANSFORMERS_OFFLINE", None)
            huggingface_hub.set_client_factory(self.client)
            yield self
        finally:
            huggingface_hub.set_client_factory(saved_factory)
            for obj, name, value in saved_attrs:
                setattr(obj, name, value)
            for name, value in saved_env.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value


# ---------------------------------------------------------------------- helpers


def _error(status: int, message: str, code: str | None = None, extra: dict | None = None) -> httpx2.Response:
    headers = {"X-Error-Message": message}
    if code:
        headers["X-Error-Code"] = code
    return httpx2.Response(status, json={"error": message, **(extra or {})}, headers=headers)


def _range_start(header: str | None) -> int:
    match = re.fullmatch(r"bytes=(\d+)-", header or "")
    return int(match.group(1)) if match else 0


def _front_matter(content: bytes | str) -> dict | None:
    text = content.decode() if isinstance(content, bytes) else content
    match = _FRONT_MATTER.match(text)
    return yaml.safe_load(match.group(1)) if match else None


def validate_metadata(content: str, repo_type: str = "model") -> list[str]:
    """Errors the fake `/api/validate-yaml` reports for a README (a subset of the Hub's checks)."""
    match = _FRONT_MATTER.match(content)
    if match is None:
        return []  # the Hub accepts a README without metadata (it only warns)
    try:
        meta = yaml.safe_load(match.group(1))
    except yaml.YAMLError as err:
        return [f"YAML front matter does not parse: {err}"]
    if meta is None:
        return []
    if not isinstance(meta, dict):
        return [f"YAML front matter must be a mapping, got {type(meta).__name__}"]
    errors = []
    licenses = meta.get("license")
    for license_id in licenses if isinstance(licenses, list) else ([licenses] if licenses is not None else []):
        if license_id not in KNOWN_LICENSES:
            errors.append(f"license: {license_id!r} is not a known license id")
    if licenses == "other" and not (isinstance(meta.get("license_name"), str) and meta.get("license_link")):
        errors.append("license: 'other' needs license_name and license_link")
    if repo_type == "model":
        tag = meta.get("pipeline_tag")
        if tag is not None and tag not in KNOWN_PIPELINE_TAGS:
            errors.append(f"pipeline_tag: {tag!r} is not a known task")
        for name in ("base_model", "datasets"):
            value = meta.get(name)
            values = value if isinstance(value, list) else ([value] if value is not None else [])
            errors += [f"{name}: {v!r} is not a repo id 'org/name'" for v in values
                       if not (isinstance(v, str) and _REPO_ID.match(v))]
        widget = meta.get("widget")
        if widget is not None:
            if not isinstance(widget, list):
                errors.append("widget: must be a list")
            for i, example in enumerate(widget if isinstance(widget, list) else []):
                if not isinstance(example, dict) or not isinstance(example.get("src"), str):
                    errors.append(f"widget[{i}]: needs a 'src' string")
                    continue
                if tag == "zero-shot-image-classification" and not isinstance(example.get("candidate_labels"), str):
                    errors.append(f"widget[{i}].candidate_labels: must be one comma-separated string")
                for j, item in enumerate(example.get("output") or []):
                    if not (isinstance(item, dict) and isinstance(item.get("label"), str)
                            and isinstance(item.get("score"), (int, float))):
                        errors.append(f"widget[{i}].output[{j}]: needs 'label' (str) and 'score' (number)")
        for i, entry in enumerate(meta.get("model-index") or []):
            if not isinstance(entry, dict) or "name" not in entry or not isinstance(entry.get("results"), list):
                errors.append(f"model-index[{i}]: needs 'name' and a 'results' list")
                continue
            for j, result in enumerate(entry["results"]):
                ok = (isinstance(result, dict) and isinstance(result.get("task"), dict) and "type" in result["task"]
                      and isinstance(result.get("dataset"), dict) and {"type", "name"} <= set(result["dataset"])
                      and isinstance(result.get("metrics"), list)
                      and all(isinstance(m, dict) and {"type", "value"} <= set(m) for m in result["metrics"]))
                if not ok:
                    errors.append(f"model-index[{i}].results[{j}]: needs task.type, dataset.type/name and "
                                  "metrics[].type/value")
    if repo_type == "dataset":
        for i, config in enumerate(meta.get("configs") or []):
            if not isinstance(config, dict) or not isinstance(config.get("config_name"), str):
                errors.append(f"configs[{i}]: needs a 'config_name'")
            elif "data_files" in config and not isinstance(config["data_files"], (str, list)):
                errors.append(f"configs[{i}].data_files: must be a string or a list")
    return errors


try:  # the fixture is only defined where pytest is importable (not needed in a subprocess that loads this file)
    import pytest
except ImportError:  # pragma: no cover
    pytest = None

if pytest is not None:

    @pytest.fixture(name="fake_hub")
    def fake_hub_fixture(tmp_path):
        """A fresh `FakeHub` installed for one test, downloads cached under `tmp_path/hub-cache`."""
        hub = FakeHub()
        with hub.install(cache_dir=tmp_path / "hub-cache"):
            yield hub
