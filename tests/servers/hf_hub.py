"""A local Hugging Face Hub on loopback: the endpoints huggingface_hub 2.x calls, over real HTTP.

No hub is reachable here, so this serves repositories held in memory (files from local
directories or bytes) through the routes and headers the client uses:

    GET  /api/models/{repo}[/revision/{rev}][?blobs=true]   model info: sha, siblings (with
                                                            size, blobId, lfs when blobs=true)
    GET  /api/models/{repo}/tree/{rev}[/{path}][?recursive=true]      tree listing
    HEAD|GET /{repo}/resolve/{rev}/{path}   regular file: 200/206 with ETag (git blob id);
                                            LFS file: 302 to the CDN with X-Linked-Etag (its
                                            sha256) and X-Linked-Size; both with X-Repo-Commit
    HEAD|GET /lfs/{sha256}?sig=...          the "CDN": a second port (another origin: the
                                            client must drop Authorization, which is refused
                                            here), signed URLs, Range

Errors carry the hub's X-Error-Code / X-Error-Message: RepoNotFound (401 to anonymous requests,
404 with a token, also for private repos), RevisionNotFound, EntryNotFound, GatedRepo (401/403 on
downloads only: a gated repo's metadata is public); a token the hub does not know gets 401
"Invalid credentials in Authorization header". Tests add commits, move branches, tamper with
served bytes and inject faults (status codes, stalls, truncated bodies); downloads are counted.
"""

from __future__ import annotations

import fnmatch
import hashlib
import hmac
import itertools
import json
import os
import threading
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal
from urllib.parse import parse_qs, unquote, urlsplit

import pytest

from tests.models import minilm_dir
from tests.servers.loopback import LoopbackServer, QuietHandler, byte_range

TOKEN = "hf_weightgateLocalHubTestToken"
MINILM = "sentence-transformers/all-MiniLM-L6-v2"
LFS_THRESHOLD = 10 * 1024 * 1024  # the hub keeps bigger files in LFS whatever .gitattributes says
CHUNK = 1024 * 1024
POINTER = "version https://git-lfs.github.com/spec/v1\noid sha256:{oid}\nsize {size}\n"


def _read(content: Path | bytes, start: int = 0, end: int | None = None) -> Iterator[bytes]:
    if isinstance(content, bytes):
        yield content[start:end]
        return
    with content.open("rb") as stream:
        stream.seek(start)
        left = (end if end is not None else content.stat().st_size) - start
        while left > 0 and (chunk := stream.read(min(CHUNK, left))):
            left -= len(chunk)
            yield chunk


def _size(content: Path | bytes) -> int:
    return len(content) if isinstance(content, bytes) else content.stat().st_size


@dataclass(frozen=True)
class HubFile:
    """One file of a commit: where its bytes live and what the hub lists about them."""

    path: str
    content: Path | bytes
    size: int
    sha256: str
    lfs: bool
    blob_id: str  # git blob sha1 of the content, or of the LFS pointer

    @classmethod
    def make(cls, path: str, content: Path | bytes, lfs_patterns: list[str]) -> HubFile:
        size = _size(content)
        name = path.rsplit("/", 1)[-1]
        lfs = size > LFS_THRESHOLD or any(
            fnmatch.fnmatch(path, p) or fnmatch.fnmatch(name, p) for p in lfs_patterns
        )
        sha256 = hashlib.sha256()
        blob = hashlib.sha1(f"blob {size}\0".encode())
        for chunk in _read(content):
            sha256.update(chunk)
            if not lfs:
                blob.update(chunk)
        if lfs:
            pointer = POINTER.format(oid=sha256.hexdigest(), size=size).encode()
            blob = hashlib.sha1(f"blob {len(pointer)}\0".encode() + pointer)
        return cls(path, content, size, sha256.hexdigest(), lfs, blob.hexdigest())

    @property
    def pointer_size(self) -> int:
        return len(POINTER.format(oid=self.sha256, size=self.size))


@dataclass
class HubRepo:
    """A model repository: commits (path -> file), and branches and tags naming them."""

    repo_id: str
    private: bool = False
    gated: bool = False
    gate_accepted: bool = False  # whether TOKEN's account accepted a gated repo's conditions
    commits: dict[str, dict[str, HubFile]] = field(default_factory=dict)
    refs: dict[str, str] = field(default_factory=dict)


@dataclass
class Fault:
    """Misbehaviour for the next `times` requests whose path contains `match`.

    `status` answers `status` at once; `stall` waits `seconds` before answering; `stall-body`
    and `truncate` send the headers and half of a file's body, then wait `seconds` or hang up.
    `served` counts the requests it hit.
    """

    kind: Literal["status", "stall", "stall-body", "truncate"]
    match: str = ""
    times: int = 1
    status: int = 503
    seconds: float = 5.0
    served: int = 0


class HubError(Exception):
    """An error answer in the hub's manner."""

    def __init__(self, status: int, code: str | None, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


class LocalHub:
    """The hub's state and the test-side controls; `endpoint` goes into HF_ENDPOINT."""

    def __init__(self) -> None:
        self.repos: dict[str, HubRepo] = {}
        self.lfs_objects: dict[str, HubFile] = {}
        self.tampered: dict[str, bytes] = {}  # listed sha256 -> bytes served instead
        self.faults: list[Fault] = []
        self.stopping = threading.Event()
        self._downloads: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._numbers = itertools.count(1)
        self._secret = os.urandom(16)
        self._servers = [_Server(self, "hub"), _Server(self, "cdn")]
        self.endpoint, self.cdn_url = (server.url for server in self._servers)

    def start(self) -> None:
        for server in self._servers:
            server.start()

    def stop(self) -> None:
        self.stopping.set()
        for server in self._servers:
            server.stop()

    def create_repo(self, repo_id: str, *, private: bool = False, gated: bool = False) -> HubRepo:
        """An empty repository (its `main` branch appears with the first commit)."""
        with self._lock:
            if repo_id in self.repos:
                raise ValueError(f"{repo_id} exists")
            self.repos[repo_id] = HubRepo(repo_id, private=private, gated=gated)
            return self.repos[repo_id]

    def commit(
        self,
        repo_id: str,
        files: Mapping[str, Path | bytes] | Path,
        *,
        branch: str = "main",
        delete: tuple[str, ...] = (),
    ) -> str:
        """A new commit on `branch`: its head's files, updated with `files` (or a directory)."""
        if isinstance(files, Path):
            files = {p.relative_to(files).as_posix(): p for p in files.rglob("*") if p.is_file()}
        with self._lock:
            repo = self.repos[repo_id]
            parent = repo.refs.get(branch)
            tree = dict(repo.commits[parent]) if parent else {}
            for path in delete:
                tree.pop(path)
            attributes: Path | bytes = b""
            if ".gitattributes" in files:
                attributes = files[".gitattributes"]
            elif ".gitattributes" in tree:
                attributes = tree[".gitattributes"].content
            patterns = [
                line.split()[0]
                for line in b"".join(_read(attributes)).decode().splitlines()
                if "filter=lfs" in line
            ]
            tree.update({path: HubFile.make(path, data, patterns) for path, data in files.items()})
            identity = f"{repo_id} {parent} {next(self._numbers)} " + " ".join(
                f"{f.path}:{f.blob_id}" for f in tree.values()
            )
            sha = hashlib.sha1(identity.encode()).hexdigest()
            repo.commits[sha] = tree
            repo.refs[branch] = sha
            self.lfs_objects.update({f.sha256: f for f in tree.values() if f.lfs})
            return sha

    def set_ref(self, repo_id: str, name: str, sha: str) -> None:
        """Point a branch or tag at a commit (moving it if it exists)."""
        with self._lock:
            self.repos[repo_id].refs[name] = sha

    def tamper(self, repo_id: str, path: str, data: bytes, revision: str = "main") -> None:
        """Serve `data` for that file from now on, while the listings stay as they were."""
        repo = self.repos[repo_id]
        self.tampered[repo.commits[repo.refs.get(revision, revision)][path].sha256] = data

    def inject(self, fault: Fault) -> Fault:
        with self._lock:
            self.faults.append(fault)
        return fault

    def take_fault(self, path: str, kinds: tuple[str, ...]) -> Fault | None:
        with self._lock:
            for fault in self.faults:
                if fault.kind in kinds and fault.match in path and fault.served < fault.times:
                    fault.served += 1
                    return fault
        return None

    def downloads(self, repo_id: str, path: str, revision: str = "main") -> int:
        """Bodies (full or ranged) served of that file's content, from the hub or its CDN.

        Counted by content: the same bytes in another repository or commit count together.
        """
        repo = self.repos[repo_id]
        return self._downloads[repo.commits[repo.refs.get(revision, revision)][path].sha256]

    def count_download(self, sha256: str) -> None:
        with self._lock:
            self._downloads[sha256] += 1

    def signature(self, sha256: str) -> str:
        return hmac.new(self._secret, sha256.encode(), "sha256").hexdigest()

    def reset(self) -> None:
        """Forget injected faults and tampering (after each test)."""
        with self._lock:
            self.faults.clear()
            self.tampered.clear()


class _Server(LoopbackServer):
    def __init__(self, hub: LocalHub, role: Literal["hub", "cdn"]) -> None:
        super().__init__(_Handler)
        self.hub, self.role = hub, role


class _Handler(QuietHandler):
    server: _Server

    def do_GET(self) -> None:
        self._handle(body=True)

    def do_HEAD(self) -> None:
        self._handle(body=False)

    def _handle(self, body: bool) -> None:
        hub, url = self.server.hub, urlsplit(self.path)
        segments = [unquote(segment) for segment in url.path.split("/")[1:]]
        try:
            if fault := hub.take_fault(url.path, ("status", "stall")):
                if fault.kind == "status":
                    raise HubError(fault.status, None, "injected fault")
                hub.stopping.wait(fault.seconds)
            if self.server.role == "cdn":
                self._cdn(segments, parse_qs(url.query), body)
            else:
                self._hub(segments, parse_qs(url.query), body)
        except HubError as error:
            payload = json.dumps({"error": error.message}).encode()
            headers = {"Content-Type": "application/json", "Content-Length": str(len(payload))}
            headers["X-Error-Message"] = error.message
            self._send(error.status, headers | ({"X-Error-Code": error.code} if error.code else {}))
            self.wfile.write(payload if body else b"")

    def _hub(self, segments: list[str], query: dict[str, list[str]], body: bool) -> None:
        authorization = self.headers.get("Authorization")
        has_token = authorization is not None
        if has_token and authorization != f"Bearer {TOKEN}":
            raise HubError(401, None, "Invalid credentials in Authorization header")
        if segments[:2] == ["api", "models"] and len(segments) >= 4:
            repo = self._repo(f"{segments[2]}/{segments[3]}", has_token)
            rest = segments[4:]
            if not rest or (rest[0] == "revision" and len(rest) == 2):
                sha = self._commit(repo, rest[1] if rest else "main")
                return self._json(_model_info(repo, sha, _flag(query, "blobs")))
            if rest[0] == "tree" and len(rest) >= 2:
                recursive = _flag(query, "recursive")
                listing = _tree(repo, self._commit(repo, rest[1]), "/".join(rest[2:]), recursive)
                return self._json(listing)
        elif len(segments) >= 5 and segments[2] == "resolve":
            repo = self._repo(f"{segments[0]}/{segments[1]}", has_token)
            sha = self._commit(repo, segments[3])
            if repo.gated and not (has_token and repo.gate_accepted):
                message = f"Access to model {repo.repo_id} is restricted. You must have access."
                raise HubError(403 if has_token else 401, "GatedRepo", message)
            file = repo.commits[sha].get("/".join(segments[4:]))
            if file is None:
                raise HubError(404, "EntryNotFound", "Entry not found")
            headers = {"X-Repo-Commit": sha, "Accept-Ranges": "bytes", "ETag": f'"{file.blob_id}"'}
            if not file.lfs:
                return self._file(file, headers, body)
            signature = self.server.hub.signature(file.sha256)
            location = f"{self.server.hub.cdn_url}/lfs/{file.sha256}?sig={signature}"
            headers |= {"Location": location, "X-Linked-Etag": f'"{file.sha256}"'}
            return self._send(302, headers | {"X-Linked-Size": str(file.size)})
        raise HubError(404, None, "Sorry, we can't find the page you are looking for.")

    def _cdn(self, segments: list[str], query: dict[str, list[str]], body: bool) -> None:
        file = self.server.hub.lfs_objects.get(segments[-1]) if segments[0] == "lfs" else None
        if file is None:
            raise HubError(404, None, "NoSuchKey")
        if "Authorization" in self.headers:  # as S3 answers presigned URLs; and no token leaks
            raise HubError(400, None, "InvalidArgument: Only one auth mechanism allowed")
        if not hmac.compare_digest(
            query.get("sig", [""])[0], self.server.hub.signature(file.sha256)
        ):
            raise HubError(403, None, "AccessDenied: bad signature")
        self._file(file, {"ETag": f'"cdn-{file.sha256[:16]}"', "Accept-Ranges": "bytes"}, body)

    def _repo(self, repo_id: str, has_token: bool) -> HubRepo:
        repo = self.server.hub.repos.get(repo_id)
        if repo is None or (repo.private and not has_token):
            raise HubError(404 if has_token else 401, "RepoNotFound", "Repository not found")
        return repo

    def _commit(self, repo: HubRepo, revision: str) -> str:
        sha = repo.refs.get(revision) or (revision if revision in repo.commits else None)
        if sha is None:
            raise HubError(404, "RevisionNotFound", f"Invalid rev id: {revision}")
        return sha

    def _file(self, file: HubFile, headers: dict[str, str], body: bool) -> None:
        hub = self.server.hub
        content = hub.tampered.get(file.sha256, file.content)
        size = _size(content)
        start, end, status = 0, size, 200
        if ranged := byte_range(self.headers.get("Range"), size):
            (start, end), status = ranged, 206
            if start >= size:
                raise HubError(416, None, f"Range Not Satisfiable (bytes */{size})")
            headers["Content-Range"] = f"bytes {start}-{end - 1}/{size}"
        self._send(status, headers | {"Content-Length": str(end - start)})
        if not body:
            return
        hub.count_download(file.sha256)
        fault = hub.take_fault(self.path, ("stall-body", "truncate"))
        if fault:
            end = start + (end - start) // 2
        for chunk in _read(content, start, end):
            self.wfile.write(chunk)
        if fault:
            self.wfile.flush()
            if fault.kind == "stall-body":
                hub.stopping.wait(fault.seconds)
            self.close_connection = True

    def _json(self, document: object) -> None:
        payload = json.dumps(document).encode()
        self._send(200, {"Content-Type": "application/json", "Content-Length": str(len(payload))})
        self.wfile.write(payload if self.command == "GET" else b"")

    def _send(self, status: int, headers: dict[str, str]) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        if "Content-Length" not in headers:
            self.send_header("Content-Length", "0")
        self.end_headers()


def _flag(query: dict[str, list[str]], name: str) -> bool:
    return query.get(name, [""])[0].lower() == "true"


def _model_info(repo: HubRepo, sha: str, blobs: bool) -> dict[str, object]:
    siblings: list[dict[str, object]] = []
    for path, file in sorted(repo.commits[sha].items()):
        sibling: dict[str, object] = {"rfilename": path}
        if blobs:
            sibling |= {"blobId": file.blob_id, "size": file.size}
            if file.lfs:
                lfs = {"sha256": file.sha256, "size": file.size, "pointerSize": file.pointer_size}
                sibling["lfs"] = lfs
        siblings.append(sibling)
    return {
        "id": repo.repo_id,
        "sha": sha,
        "private": repo.private,
        "gated": "manual" if repo.gated else False,
        "lastModified": "2026-01-01T00:00:00.000Z",
        "siblings": siblings,
    }


def _tree(repo: HubRepo, sha: str, path: str, recursive: bool) -> list[dict[str, object]]:
    prefix = f"{path}/" if path else ""
    files = {p: f for p, f in repo.commits[sha].items() if p.startswith(prefix)}
    if path and not files:
        raise HubError(404, "EntryNotFound", f"{path} does not exist on {sha}")
    entries: list[dict[str, object]] = []
    directories: set[str] = set()
    for name, file in sorted(files.items()):
        parts = name[len(prefix) :].split("/")
        directories.update(prefix + "/".join(parts[:d]) for d in range(1, len(parts)))
        if len(parts) > 1 and not recursive:
            continue
        entry: dict[str, object] = {"type": "file", "oid": file.blob_id, "size": file.size}
        if file.lfs:
            entry["lfs"] = {"oid": file.sha256, "size": file.size, "pointerSize": file.pointer_size}
        entries.append(entry | {"path": name})
    if not recursive:
        directories = {d for d in directories if "/" not in d[len(prefix) :]}
    for directory in sorted(directories):
        oid = hashlib.sha1(directory.encode()).hexdigest()
        entries.append({"type": "directory", "oid": oid, "size": 0, "path": directory})
    return entries


@pytest.fixture(scope="session")
def hf_hub_server() -> Iterator[LocalHub]:
    """The local hub for the session, with all-MiniLM-L6-v2's real files as `MINILM`."""
    hub = LocalHub()
    hub.start()
    try:
        hub.create_repo(MINILM)
        hub.commit(MINILM, minilm_dir())
        yield hub
    finally:
        hub.stop()


@pytest.fixture
def hf_hub(hf_hub_server: LocalHub) -> Iterator[LocalHub]:
    """The session's local hub; a test's injected faults and tampering end with it."""
    yield hf_hub_server
    hf_hub_server.reset()
