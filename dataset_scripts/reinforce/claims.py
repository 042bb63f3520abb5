"""Claims on the output's shards: which worker writes which shard, with a lease that expires when the worker dies.

Any number of processes, on any number of machines, started at any time, share one output folder and nothing else.
A worker claims a shard by creating ``_claims/<shard>.<generation>.json``; the highest generation is the shard's
current claim. Files are created exclusively with the ``link(2)`` recipe of ``open(2)``'s manual (a unique file,
complete, hard-linked to the claim name: the link fails if the name exists, and a retried link whose reply was lost is
recognised by the unique file's link count), so no one ever reads a half-written claim and two workers never both
create one generation. The claim holds the worker, its machine and pid, and the lease expiry (``time.time()``
seconds); a heartbeat thread rewrites it (atomic replace) every quarter lease. A claim may be taken over, by creating
the next generation, when its lease has expired, when its process is gone (same machine: pid and start time), or when
it was released (its worker failed) or published but the shard's files were removed since.

A finished shard is published with ``link(partial, final)`` too: only one worker can ever create ``<shard>.tar``,
whatever the claims say (a worker whose lease was taken over while it was paused, or a stale NFS view), and only the
one that created it writes the manifest record. The claim then says ``published``: one published generation per
shard is the log that no shard was written twice.

Filesystems: local POSIX filesystems and NFS (v3 / v4: exclusive ``link``, close-to-open consistency). Machines'
clocks must agree to well within the lease (NTP), and the lease must exceed the NFS attribute cache time (``actimeo``,
at most 60 s by default) by a wide margin: the 600 s default does. Object storage (``s3://``, ``gs://`` through fsspec)
has neither hard links nor exclusive rename, so it is refused as an output: write to a shared filesystem, then push
(``--push-to-hub``) or copy.
"""

from __future__ import annotations

import glob
import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

CLAIMS_DIR = "_claims"
FINAL_TASK = "_final"  # the manifest, card and push, once every shard is done
_TMP_SUFFIX = ".tmp"


def refuse_object_storage(output: str) -> None:
    if "://" in output:
        raise ValueError(
            f"--output {output!r}: object storage is not supported as the output folder (the workers' claims and the "
            f"publication of each shard need an exclusive create, which fsspec stores do not offer). Write to a local "
            f"or shared (NFS) folder, then use --push-to-hub or copy the folder.")


def _read_text(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read().strip()
    except OSError:
        return None


def _machine_id() -> str:
    """What two processes share exactly when they can see each other's pids: host, boot and pid namespace."""
    try:
        namespace = str(os.stat("/proc/self/ns/pid").st_ino)
    except OSError:
        namespace = ""
    return f"{socket.gethostname()}/{_read_text('/proc/sys/kernel/random/boot_id') or ''}/{namespace}"


MACHINE_ID = _machine_id()


def _process_start(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (``/proc/<pid>/stat`` field 22), None where unknown."""
    stat = _read_text(f"/proc/{pid}/stat")
    if stat is None:
        return None
    fields = stat.rpartition(")")[2].split()
    return None if fields[0] == "Z" else fields[19]  # a zombie has exited: it is gone


def _process_gone(pid: int, start: str | None) -> bool:
    if os.path.isdir("/proc/self"):
        now = _process_start(pid)
        return now is None or (start is not None and now != start)  # another process under a reused pid
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def link_exclusive(source: str, target: str) -> bool:
    """Create ``target`` as a hard link to the complete file ``source``; False if ``target`` already exists."""
    try:
        os.link(source, target)
        return True
    except FileExistsError:
        # NFS: a retransmitted link whose first reply was lost reports EEXIST although it was ours.
        return os.path.samefile(source, target)


def _complete_file(path: str, data: dict) -> str:
    """A complete, synced file of a unique name next to ``path``, holding ``data``; returns its name."""
    tmp = f"{path}.{uuid.uuid4().hex}{_TMP_SUFFIX}"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    return tmp


def _write_exclusive(path: str, data: dict) -> bool:
    tmp = _complete_file(path, data)
    try:
        return link_exclusive(tmp, path)
    finally:
        os.remove(tmp)


def _replace(path: str, data: dict) -> None:
    os.replace(_complete_file(path, data), path)


def claim_path(output: str, task: str, generation: int) -> str:
    return os.path.join(output, CLAIMS_DIR, f"{task}.{generation}.json")


def current_claim(output: str, task: str) -> tuple[int, dict | None]:
    """The highest generation of ``task``'s claims and its content (-1, None when unclaimed)."""
    generation = -1
    while os.path.exists(claim_path(output, task, generation + 1)):
        generation += 1
    if generation < 0:
        return -1, None
    try:
        with open(claim_path(output, task, generation), encoding="utf-8") as f:
            return generation, json.load(f)
    except (OSError, ValueError):  # replaced between the two calls: read it again
        return current_claim(output, task)


def claim_log(output: str, task: str) -> list[dict]:
    """Every generation of ``task``'s claims, oldest first."""
    paths = glob.glob(os.path.join(glob.escape(os.path.join(output, CLAIMS_DIR)), f"{glob.escape(task)}.*.json"))
    entries = []
    for path in paths:
        generation = path[:-len(".json")].rpartition(".")[2]
        if generation.isdigit():
            with open(path, encoding="utf-8") as f:
                entries.append(dict(json.load(f), generation=int(generation)))
    return sorted(entries, key=lambda e: e["generation"])


@dataclass
class Worker:
    """This process as a claimant: a unique token, its machine, pid and lease length."""

    output: str
    lease_seconds: float
    token: str = field(default_factory=lambda: uuid.uuid4().hex[:12])

    def identity(self) -> dict:
        return {"worker": self.token, "host": socket.gethostname(), "machine": MACHINE_ID, "pid": os.getpid(),
                "pid_start": _process_start(os.getpid())}

    def takeover_reason(self, content: dict, is_done: Callable[[], bool]) -> str | None:
        """Why a current claim may be taken over, or None while it stands."""
        state = content.get("state")
        if state == "published":  # its output is written before the claim says so: asked now, is_done is current
            return None if is_done() else "published, but its output was removed or changed since"
        if state == "released":
            return "released by its worker"
        if content.get("machine") == MACHINE_ID and _process_gone(content["pid"], content.get("pid_start")):
            return f"its process {content['pid']} is gone"
        if time.time() > content["expires"]:
            return f"its lease expired {time.time() - content['expires']:.1f} s ago"
        return None

    def try_claim(self, task: str, is_done: Callable[[], bool]) -> Claim | None:
        """Claim ``task`` (a shard name, or ``_final``) if it is free; ``is_done``: whether its output is complete."""
        os.makedirs(os.path.join(self.output, CLAIMS_DIR), exist_ok=True)
        generation, content = current_claim(self.output, task)
        reason = None
        if content is not None:
            reason = self.takeover_reason(content, is_done)
            if reason is None:
                return None
        claim = Claim(self, task, generation + 1, taken_over=reason)
        content = dict(self.identity(), state="claimed", started=time.time(), lease_seconds=self.lease_seconds,
                       expires=time.time() + self.lease_seconds, taken_over=reason)
        if not _write_exclusive(claim.path, content):
            return None  # another worker created that generation first
        claim.content = content
        return claim


@dataclass
class Claim:
    """One generation of one task's claim, held by this process; renewed by :meth:`start_heartbeat`."""

    worker: Worker
    task: str
    generation: int
    taken_over: str | None = None
    content: dict = field(default_factory=dict)
    lost: bool = False
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def path(self) -> str:
        return claim_path(self.worker.output, self.task, self.generation)

    @property
    def tag(self) -> str:
        """Names this claim's own half-written files (another worker's never collide with them)."""
        return f"{self.worker.token}-{self.generation}"

    def still_mine(self) -> bool:
        if os.path.exists(claim_path(self.worker.output, self.task, self.generation + 1)):
            self.lost = True
        return not self.lost

    def renew(self) -> bool:
        """Extend the lease; False once the claim was taken over."""
        with self._lock:
            if not self.still_mine() or self.content.get("state") != "claimed":
                return False
            self.content = dict(self.content, expires=time.time() + self.worker.lease_seconds)
            _replace(self.path, self.content)
            return True

    def _finish(self, state: str, **extra) -> None:
        self._stop.set()
        with self._lock:
            self.content = dict(self.content, state=state, finished=time.time(), **extra)
            _replace(self.path, self.content)

    def published(self, **extra) -> None:
        self._finish("published", **extra)

    def release(self, why: str) -> None:
        """Give the task back at once (this worker failed on it), so another takes it without waiting a lease."""
        if not self.lost:
            self._finish("released", why=why)
        self._stop.set()

    def start_heartbeat(self) -> None:
        def beat():
            while not self._stop.wait(self.worker.lease_seconds / 4):
                try:
                    if not self.renew():
                        return
                except OSError:  # a filesystem hiccup: try again at the next beat (the lease has 3 more)
                    continue

        threading.Thread(target=beat, name=f"claim-heartbeat-{self.task}", daemon=True).start()
