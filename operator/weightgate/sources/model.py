"""What a source says about a model: its pinned revision and the files that make it up."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

from weightgate.sources.paths import check_file_tree, safe_relative_path


@dataclass(frozen=True)
class RemoteFile:
    """One file of a model, as the source describes it before download.

    Attributes:
        path: POSIX path relative to the model root (see :mod:`.paths` for the rule).
        size: Size in bytes, as announced by the source (checked on download).
        sha256: Hex digest the source vouches for (HF LFS oid, OCI layer digest, a `#sha256=`
            pin), or None when only the download can tell.
        locator: What the source needs to fetch exactly this revision of the file (a URL at a
            commit, an S3 version id, a blob digest): opaque outside the source.
        etag: The source's entity tag, when it has one (checked on download where possible).
    """

    path: str
    size: int
    sha256: str | None = None
    locator: str = ""
    etag: str | None = None


@dataclass(frozen=True)
class ResolvedModel:
    """A model reference resolved to an immutable revision.

    Attributes:
        reference: The reference as given (`hf://org/name`, `models:/name@prod`, ...).
        lineage: The reference without its revision: the model's identity across versions.
        revision: The source's immutable name for this content (commit sha, manifest digest,
            `sha256:` of the object versions), or None when only the content can name it
            (an unpinned HTTPS URL): then :attr:`FetchedModel.content_digest` is the revision.
        pinned: A reference that always means this revision (`hf://org/name@<sha>`).
        files: The files, sorted by path (sorted here, in whatever order they are given).

    Every file path is checked here, for every source alike (:mod:`.paths`): a model whose
    listing names a path outside its directory, a path twice, or a file inside another file
    is refused with a SourceError before anything is downloaded.
    """

    reference: str
    lineage: str
    revision: str | None
    pinned: str
    files: tuple[RemoteFile, ...]

    def __post_init__(self) -> None:
        """Refuse unsafe or conflicting paths; keep the files sorted by path."""
        for file in self.files:
            safe_relative_path(file.path, self.reference)
        check_file_tree((file.path for file in self.files), self.reference)
        object.__setattr__(self, "files", tuple(sorted(self.files, key=lambda f: f.path)))

    @property
    def total_size(self) -> int:
        """Bytes in all files."""
        return sum(file.size for file in self.files)


@dataclass(frozen=True)
class FetchedFile:
    """A file of a fetched model: its verified content lives at `blob` in the cache."""

    path: str
    size: int
    sha256: str
    blob: Path  # read-only: blobs are shared by every model that contains the same bytes


@dataclass(frozen=True)
class FetchedModel:
    """A resolved model whose every file is in the cache, verified."""

    resolved: ResolvedModel
    files: tuple[FetchedFile, ...] = field(default=())

    @property
    def content_digest(self) -> str:
        """`sha256:` over the sorted (path, sha256) pairs: names the content whatever its source."""
        digest = hashlib.sha256()
        for file in sorted(self.files, key=lambda f: f.path):
            digest.update(file.path.encode() + b"\0" + bytes.fromhex(file.sha256))
        return f"sha256:{digest.hexdigest()}"

    @property
    def revision(self) -> str:
        """The source's revision, else the content digest."""
        return self.resolved.revision or self.content_digest
