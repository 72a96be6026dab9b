r"""Hugging Face Hub models (`hf://org/name[@revision]`), on the `huggingface_hub` client.

huggingface_hub does the talking: it parses hf:// URIs, finds the token (`HF_TOKEN`, then its
token file), pins a revision to a commit and lists that commit's files with their sizes, git blob
ids and LFS sha256 in one call (`HfApi.model_info(files_metadata=True)`), builds the download URL
and headers, and maps the hub's `X-Error-Code` answers to its exceptions. Own code exists because
the client offers no stream of one file of one commit from an offset (`hf_hub_download` writes
into its own cache and retries on its own schedule), and to check what the hub serves against
what it listed, and to translate the client's exceptions into weightgate's source errors
(:mod:`.huggingface_errors`).

Accepted references (only model repositories, always the whole repository):

    hf://org/name                 the repository's default branch
    hf://org/name@<revision>      a branch, tag, commit sha or refs/pr/N (a `/` in a branch
                                  name written `%2F`); `hf://models/org/name@...` also works
    hf://org/name:<revision>      KServe storage initializer's spelling of the same

What is verified: an LFS file's sha256 is the one the hub lists (the fetcher checks it, so a
tampered download is a DigestMismatch); a regular file is checked here against the git blob id
the commit lists (sha1 of `blob <size>\0<content>`) when streamed from its start. TLS trust is
huggingface_hub's shared client's: the system store, or `SSL_CERT_FILE`.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import ClassVar

import httpx2
from huggingface_hub import (
    HfApi,
    get_session,
    get_token,
    hf_hub_url,
    hf_raise_for_status,
    parse_hf_uri,
)
from huggingface_hub.errors import HfUriError, OIDCError
from huggingface_hub.hf_api import ModelInfo, RepoSibling

# documented as public (huggingface_hub.utils.build_hf_headers), exported lazily: mypy misses it
from huggingface_hub.utils import build_hf_headers  # type: ignore[attr-defined]

from weightgate.sources import huggingface_errors
from weightgate.sources.base import SourceSettings
from weightgate.sources.errors import (
    DigestMismatch,
    NotFound,
    RevisionMoved,
    SourceError,
    Unauthorized,
    UnsupportedReference,
)
from weightgate.sources.model import RemoteFile, ResolvedModel
from weightgate.sources.retry import with_retries

DEFAULT_ENDPOINT = "https://huggingface.co"
CHUNK_BYTES = 1024 * 1024
COMMIT_SHA = re.compile(r"[0-9a-f]{40}")
SHA256 = re.compile(r"[0-9a-f]{64}")


def parse_reference(reference: str) -> tuple[str, str | None]:
    """`(repo_id, revision or None)` of an hf:// reference, in any of the accepted forms."""
    scheme, separator, body = reference.partition("://")
    if scheme.lower() != "hf" or not separator:
        raise UnsupportedReference(f"{reference}: not an hf:// reference")
    if "@" not in body:  # KServe: hf://org/name:revision
        repository, colon, revision = body.partition(":")
        body = f"{repository}@{revision}" if colon else body
    try:
        uri = parse_hf_uri(f"hf://{body}")
    except HfUriError as error:
        raise UnsupportedReference(
            f"{reference}: {error.msg} Expected hf://org/name[@revision]"
        ) from error
    if uri.type != "model":
        raise UnsupportedReference(f"{reference}: only model repositories are supported")
    if uri.path_in_repo:
        raise UnsupportedReference(
            f"{reference}: a path inside the repository is not supported; "
            f"reference the whole repository (hf://{uri.id}[@revision])"
        )
    return uri.id, uri.revision


class HuggingFaceSource:
    """Resolves `hf://` references to commits and streams their files from the hub.

    The endpoint is `HF_ENDPOINT` (for mirrors) as set when the source is constructed.
    """

    schemes: ClassVar[tuple[str, ...]] = ("hf",)

    def __init__(self, settings: SourceSettings) -> None:
        """Read the endpoint and the token (HF_TOKEN, else huggingface_hub's token file)."""
        self.settings = settings
        self.endpoint = (os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")
        try:
            self._token = get_token()
        except OIDCError as error:
            raise Unauthorized(
                f"hf://: huggingface_hub could not exchange an OIDC token (HF_OIDC_RESOURCE is "
                f"set): {error}; fix that, or unset it and set HF_TOKEN"
            ) from error
        self._api = HfApi(endpoint=self.endpoint, library_name="weightgate")

    def resolve(self, reference: str) -> ResolvedModel:
        """Pin `reference` to a commit and list its files (sizes, LFS sha256, blob ids)."""
        repo_id, revision = parse_reference(reference)
        info = with_retries(self.settings, lambda: self._model_info(reference, repo_id, revision))
        sha = (info.sha or "").lower()
        if not COMMIT_SHA.fullmatch(sha):
            raise SourceError(f"{reference}: the hub answered without a commit sha ({info.sha!r})")
        if revision and COMMIT_SHA.fullmatch(revision.lower()) and revision.lower() != sha:
            raise SourceError(f"{reference}: the hub answered for commit {sha} instead")
        files = [self._remote_file(reference, repo_id, sha, s) for s in info.siblings or []]
        if not files:
            raise NotFound(f"{reference}: commit {sha} of {repo_id} has no files")
        model = ResolvedModel(
            reference=reference,
            lineage=f"hf://{repo_id}",
            revision=sha,
            pinned=f"hf://{repo_id}@{sha}",
            files=tuple(files),
        )
        self.settings.check_model_size(reference, model.total_size, len(model.files))
        return model

    @contextmanager
    def open(
        self, model: ResolvedModel, file: RemoteFile, offset: int
    ) -> Iterator[Iterator[bytes]]:
        """Stream `file` of the pinned commit from `offset` (a Range request when resuming)."""
        what = f"{model.pinned}: {file.path}"
        headers = build_hf_headers(
            token=self._token or False,
            library_name="weightgate",
            headers={"Accept-Encoding": "identity"},  # byte ranges of the file, not of a gzip
        )
        if offset:
            headers["Range"] = f"bytes={offset}-"
        response = self._get(what, file.locator, headers)  # one attempt: the fetcher retries
        try:
            self._check_served(what, model, file, response)
            yield self._chunks(what, file, offset, response)
        finally:
            response.close()

    def _model_info(self, reference: str, repo_id: str, revision: str | None) -> ModelInfo:
        with self._translated(reference):
            return self._api.model_info(
                repo_id,
                revision=revision,
                files_metadata=True,
                timeout=self.settings.timeout,
                token=self._token or False,
            )

    def _remote_file(
        self, reference: str, repo_id: str, sha: str, sibling: RepoSibling
    ) -> RemoteFile:
        path = sibling.rfilename
        locator = hf_hub_url(repo_id, path, revision=sha, endpoint=self.endpoint)
        if sibling.lfs is not None:
            digest = str(sibling.lfs.sha256).lower()
            if not SHA256.fullmatch(digest):
                raise SourceError(f"{reference}: {path}: the hub lists no valid LFS sha256")
            return RemoteFile(path, int(sibling.lfs.size), digest, locator, etag=digest)
        if sibling.size is None or sibling.blob_id is None:
            raise SourceError(f"{reference}: {path}: the hub lists no size or blob id")
        return RemoteFile(path, int(sibling.size), None, locator, etag=sibling.blob_id.lower())

    def _get(self, what: str, url: str, headers: dict[str, str]) -> httpx2.Response:
        session = get_session()
        with self._translated(what):
            request = session.build_request(
                "GET", url, headers=headers, timeout=self.settings.timeout
            )
            response = session.send(request, stream=True)  # follows the hub's redirect to its CDN
            try:
                if response.status_code >= 400:
                    response.read()
                    hf_raise_for_status(response)
            except BaseException:
                response.close()
                raise
            return response

    def _check_served(
        self, what: str, model: ResolvedModel, file: RemoteFile, response: httpx2.Response
    ) -> None:
        """The hub's own answer (before its CDN redirect) must name the pinned commit and file."""
        if response.status_code not in (200, 206):
            raise SourceError(f"{what}: unexpected HTTP {response.status_code} from the hub")
        answers = [*response.history, response]
        hub = next((r for r in answers if "X-Repo-Commit" in r.headers), None)
        if hub is None:  # a mirror that does not say: the digests still decide
            return
        commit = hub.headers["X-Repo-Commit"]
        if commit.lower() != model.revision:
            raise RevisionMoved(f"{what}: the hub served commit {commit}, not {model.revision}")
        etag = hub.headers.get("X-Linked-Etag") or hub.headers.get("ETag")
        if etag and file.etag and etag.removeprefix("W/").strip('"').lower() != file.etag:
            raise RevisionMoved(
                f"{what}: the hub serves ETag {etag}, but listed {file.etag} for this commit"
            )

    def _chunks(
        self, what: str, file: RemoteFile, offset: int, response: httpx2.Response
    ) -> Iterator[bytes]:
        from_start = response.status_code != 206  # a server that ignores Range sends it all
        skip = offset if from_start else 0
        blob = None
        if file.sha256 is None and file.etag and from_start:
            blob = hashlib.sha1(f"blob {file.size}\0".encode(), usedforsecurity=False)
        received = 0
        with self._translated(what, streaming=True):
            for received_chunk in response.iter_bytes(CHUNK_BYTES):
                received += len(received_chunk)
                if blob is not None:
                    blob.update(received_chunk)
                chunk, skip = received_chunk[skip:], max(0, skip - len(received_chunk))
                if chunk:  # the caller stops at the listed size: a longer body is its to judge
                    yield chunk
        if blob is not None and received == file.size and blob.hexdigest() != file.etag:
            raise DigestMismatch(
                f"{what}: content does not match the git blob id {file.etag} the commit lists "
                f"(got {blob.hexdigest()}): the hub or something between served other bytes"
            )

    def _translated(self, what: str, streaming: bool = False) -> AbstractContextManager[None]:
        hub = huggingface_errors.Hub(self.endpoint, bool(self._token), self.settings.timeout)
        return huggingface_errors.translated_errors(hub, what, streaming)
