"""KServe modelcar images: container images whose `/models` directory is the model.

KServe serves `/models` of an image for all three of its OCI schemes (`oci://` modelcar
sidecar, `oci+native://` image volume, `oci+fetch://` storage initializer). The files are
inside the layers, so the file list exists only once the layers are read: resolving a modelcar
streams each layer once from the registry, checks its digest and size, and writes every file
under `/models` into the cache as a verified blob while listing it (path, size, sha256). The
fetch that follows finds every blob in the cache and downloads nothing; the listing is kept in
the cache by manifest digest, so resolving the same image again reads no layer. A file evicted
in between is fetched by streaming its layer again to that member (:func:`member_chunks`).

Layers apply in order, as container runtimes apply them (the OCI image layer spec): a whiteout
`.wh.NAME` hides NAME of the layers below, `.wh..wh..opq` hides everything below its directory
in the layers below; a hard link names an earlier file; a symbolic link under `/models` that
leads to a file of the model lists that file under the link's name too (Hugging Face snapshots
are made of such links). Any other link, a device, a FIFO, a sparse file, or a name with a
`..` segment refuses the image (fail closed: the scan must see what the server will read).
Files outside `/models` (the base image) are read past, never written.

Standard library `tarfile` in stream mode reads the layers (no seeking: a layer streams from
the network once; gzip, or none). zstd layers are refused with a clear message: the standard
library has no zstd, and KServe's modelcar tooling does not make them. Bounds: the model's
bytes and all layers' unpacked bytes at most the model size limit, at most
:data:`MAX_MODEL_FILES` files, extended tar headers at most :data:`MAX_HEADER_BYTES` (tarfile
would read any size into memory).
"""

from __future__ import annotations

import hashlib
import json
import posixpath
import tarfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field, replace
from typing import IO, Any

from weightgate.sources.base import ProgressCounter, SourceSettings
from weightgate.sources.cache import CHUNK_BYTES, ModelCache, PartialDownload
from weightgate.sources.errors import (
    DigestMismatch,
    ModelTooLarge,
    SourceError,
    TruncatedDownload,
    UnsupportedReference,
)
from weightgate.sources.model import RemoteFile
from weightgate.sources.paths import check_file_tree, safe_relative_path
from weightgate.sources.retry import with_retries

MODELS = "models"  # the directory KServe serves (/models, mounted at /mnt/models)
MEMBER_LOCATOR = "modelcar-member:"  # + JSON [layer URL, size, sha256, member name]
MAX_MODEL_FILES = 100_000
MAX_HEADER_BYTES = 1024 * 1024
MAX_LINK_HOPS = 8
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_EXTENDED_HEADERS = (
    tarfile.XHDTYPE,
    tarfile.XGLTYPE,
    tarfile.SOLARIS_XHDTYPE,
    tarfile.GNUTYPE_LONGNAME,
    tarfile.GNUTYPE_LONGLINK,
)

LayerChunks = Callable[[RemoteFile], AbstractContextManager[Iterator[bytes]]]
"""Streams one layer blob from the registry (a RemoteFile whose locator is the blob URL)."""


@dataclass
class _Entry:
    """A file of the model so far: where its bytes are and which layer put it there."""

    file: RemoteFile
    layer: int


@dataclass
class _Link:
    """A symbolic link under /models, resolved once every layer is applied."""

    target: str
    layer: int


@dataclass
class _Tree:
    """/models as the layers applied so far build it."""

    entries: dict[str, _Entry] = field(default_factory=dict)
    links: dict[str, _Link] = field(default_factory=dict)
    unpacked: int = 0  # bytes of every layer's members (the base image's too)


class _Refused(Exception):
    """Raised inside tarfile's header parsing; turned into a SourceError by the caller."""


class _BoundedTarInfo(tarfile.TarInfo):
    """TarInfo that refuses oversized extended headers before tarfile reads them."""

    def _proc_member(self, tarfile_: tarfile.TarFile) -> tarfile.TarInfo:
        if self.type in _EXTENDED_HEADERS and self.size > MAX_HEADER_BYTES:
            raise _Refused(f"an extended tar header of {self.size} bytes")
        return super()._proc_member(tarfile_)  # type: ignore[misc, no-any-return]


class _LayerStream:
    """The layer's compressed bytes as a file for tarfile, hashed and counted on the way."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._chunk = b""
        self._position = 0  # in _chunk: reads slice the chunk, never copy what is left
        self.hasher = hashlib.sha256()
        self.length = 0

    def read(self, size: int = -1) -> bytes:
        pieces: list[bytes] = []
        wanted = size if size >= 0 else 1 << 62
        while wanted > 0:
            if self._position == len(self._chunk) and not self._next_chunk():
                break
            piece = self._chunk[self._position : self._position + wanted]
            self._position += len(piece)
            wanted -= len(piece)
            pieces.append(piece)
        return pieces[0] if len(pieces) == 1 else b"".join(pieces)

    def peek(self, size: int) -> bytes:
        """Up to `size` next bytes (from the current chunk), without consuming them."""
        if self._position == len(self._chunk):
            self._next_chunk()
        return self._chunk[self._position : self._position + size]

    def drain(self) -> None:
        """Read what tarfile left (end-of-archive padding) so the digest covers every byte."""
        self._position = len(self._chunk)
        while self._next_chunk():
            self._position = len(self._chunk)

    def _next_chunk(self) -> bool:
        chunk = next(self._chunks, None)
        if chunk is None:
            return False
        self.hasher.update(chunk)
        self.length += len(chunk)
        self._chunk, self._position = chunk, 0
        return True


class ModelcarUnpacking:
    """One resolve of a modelcar: its layers applied in order, `/models` listed and cached."""

    def __init__(
        self, reference: str, manifest_digest: str, settings: SourceSettings, chunks: LayerChunks
    ) -> None:
        """Unpack the image `reference` pinned to `manifest_digest` with `chunks`."""
        self.reference = reference
        self.manifest_digest = manifest_digest
        self.settings = settings
        self.chunks = chunks
        self.cache = ModelCache(settings.cache_dir)
        self.listing = self.cache.root / "listings" / manifest_digest.replace(":", "-")

    def files(self, layers: Sequence[RemoteFile]) -> tuple[RemoteFile, ...]:
        """The model's files (blobs in the cache), from the cached listing or the layers."""
        self.settings.check_model_size(self.reference, sum(f.size for f in layers), len(layers))
        with self.cache.locked(f"listing-{self.manifest_digest}") as lock:
            assert lock is not None
            listed = self._cached_listing()
            if listed is None:
                listed = with_retries(self.settings, lambda: self._unpack(layers))
                self._save_listing(listed)
            lock.finished = True
        return listed

    def _unpack(self, layers: Sequence[RemoteFile]) -> tuple[RemoteFile, ...]:
        tree = _Tree()
        progress = ProgressCounter(self.settings.progress, sum(layer.size for layer in layers))
        for index, layer in enumerate(layers):
            what = f"{self.reference}: layer {index + 1} of {len(layers)} (sha256:{layer.sha256})"
            with self.chunks(layer) as chunks:
                label = f"layer {index + 1}/{len(layers)}"
                stream = _LayerStream(_counted(chunks, progress, label))
                try:
                    self._apply_layer(stream, layer, index, tree, what)
                except SourceError as error:  # unreadable, perhaps because tampered with
                    stream.drain()
                    _check_layer(stream, layer, what, error)
                    raise
                stream.drain()
            _check_layer(stream, layer, what)
        files = [entry.file for entry in tree.entries.values()]
        files += self._link_files(tree)
        if not files:
            raise SourceError(
                f"{self.reference}: a container image with no files under /{MODELS}: "
                f"KServe serves /{MODELS} of a modelcar image, so there is no model to check"
            )
        check_file_tree((file.path for file in files), self.reference)
        return tuple(sorted(files, key=lambda file: file.path))

    def _apply_layer(
        self,
        stream: _LayerStream,
        layer: RemoteFile,
        index: int,
        tree: _Tree,
        what: str,
    ) -> None:
        """Apply one layer to `tree`."""
        if stream.peek(4) == _ZSTD_MAGIC:
            raise UnsupportedReference(
                f"{what}: a zstd-compressed layer; rebuild the image with gzip layers "
                "(docker build and buildah use gzip unless told otherwise)"
            )
        with _tar_errors(what):
            archive = _layer_archive(stream)
            for member in _members(archive):
                tree.unpacked += member.size
                if tree.unpacked > self.settings.max_model_bytes:
                    raise ModelTooLarge(
                        f"{what}: the layers unpack to more than the limit of "
                        f"{self.settings.max_model_bytes} bytes"
                    )
                if _hides_models(member.name):  # /models itself deleted or made opaque
                    _apply_whiteout(".wh..wh..opq", index, tree)
                    continue
                path = _model_path(member.name, what)
                if path is None:
                    continue
                if posixpath.basename(path).startswith(".wh."):
                    _apply_whiteout(path, index, tree)
                    continue
                tree.links.pop(path, None)
                if member.isdir():
                    continue
                tree.entries.pop(path, None)
                if member.isfile() and not member.issparse():
                    blob = self._write_blob(archive, member, path, layer)
                    tree.entries[path] = _Entry(blob, index)
                elif member.islnk():
                    tree.entries[path] = _Entry(_hard_link(member, path, tree, what), index)
                elif member.issym():
                    tree.links[path] = _Link(member.linkname, index)
                else:
                    raise SourceError(
                        f"{what}: /{MODELS}/{path} is not a regular file, directory or link "
                        f"(tar type {member.type!r}); refusing the image"
                    )
                if len(tree.entries) + len(tree.links) > MAX_MODEL_FILES:
                    raise SourceError(f"{what}: more than {MAX_MODEL_FILES} files under /models")

    def _write_blob(
        self, archive: tarfile.TarFile, member: tarfile.TarInfo, path: str, layer: RemoteFile
    ) -> RemoteFile:
        """Write one member into the cache as a verified blob; its RemoteFile."""
        key = hashlib.sha256(f"modelcar\0{self.manifest_digest}\0{path}".encode()).hexdigest()
        content = archive.extractfile(member)
        assert content is not None  # a regular file
        with PartialDownload(self.cache.partial(key), member.size, resumable=False) as partial:
            while chunk := content.read(CHUNK_BYTES):
                partial.append(chunk)
            if partial.length != member.size:
                raise TruncatedDownload(f"{self.reference}: /{MODELS}/{path} ended early")
            sha256 = partial.hasher.hexdigest()
        self.cache.commit(key, sha256, indexed=False)
        return RemoteFile(path, member.size, sha256, member_locator(layer, member.name))

    def _link_files(self, tree: _Tree) -> list[RemoteFile]:
        """Symbolic links under /models as files: each must lead to a file of the model."""
        files: list[RemoteFile] = []
        for path, link in tree.links.items():
            target, hops = path, 0
            while target in tree.links and hops < MAX_LINK_HOPS:
                target = _link_target(target, tree.links[target].target)
                hops += 1
            entry = tree.entries.get(target)
            if entry is None:
                raise SourceError(
                    f"{self.reference}: /{MODELS}/{path} is a symbolic link to "
                    f"{link.target!r}, which is not a file of the model; refusing the image"
                )
            files.append(replace(entry.file, path=path))
        return files

    def _cached_listing(self) -> tuple[RemoteFile, ...] | None:
        try:
            raw = json.loads(self.listing.read_text())
            return tuple(RemoteFile(*item) for item in raw["files"])
        except (OSError, ValueError, KeyError, TypeError):
            return None  # none yet, or unreadable: unpack again

    def _save_listing(self, files: tuple[RemoteFile, ...]) -> None:
        self.listing.parent.mkdir(exist_ok=True)
        items: list[list[Any]] = [[f.path, f.size, f.sha256, f.locator] for f in files]
        temporary = self.listing.with_name(f".{self.listing.name}.tmp")
        temporary.write_text(json.dumps({"manifest": self.manifest_digest, "files": items}))
        temporary.replace(self.listing)


def member_locator(layer: RemoteFile, member_name: str) -> str:
    """The locator of a model file: which layer holds it, under which tar member name."""
    return MEMBER_LOCATOR + json.dumps([layer.locator, layer.size, layer.sha256, member_name])


def parse_member_locator(locator: str) -> tuple[RemoteFile, str] | None:
    """(the layer, the member name) a :func:`member_locator` names; None for other locators."""
    if not locator.startswith(MEMBER_LOCATOR):
        return None
    try:
        url, size, sha256, member_name = json.loads(locator.removeprefix(MEMBER_LOCATOR))
    except (ValueError, TypeError) as error:
        raise SourceError(f"an unreadable modelcar file locator: {error}") from error
    return RemoteFile("layer", int(size), str(sha256), str(url)), str(member_name)


def member_chunks(chunks: Iterator[bytes], member_name: str, what: str) -> Iterator[bytes]:
    """The bytes of one member of a streamed layer (a file evicted since the resolve)."""
    stream = _LayerStream(chunks)
    with _tar_errors(what):
        archive = _layer_archive(stream)
        for member in _members(archive):
            if member.name == member_name and member.isfile():
                content: IO[bytes] | None = archive.extractfile(member)
                assert content is not None
                while chunk := content.read(CHUNK_BYTES):
                    yield chunk
                return
    raise SourceError(f"{what}: the layer no longer holds {member_name!r}")


def _counted(chunks: Iterator[bytes], progress: ProgressCounter, label: str) -> Iterator[bytes]:
    """`chunks`, each told to `progress` (the CLI's bar) as it arrives."""
    for chunk in chunks:
        progress.advance(label, len(chunk))
        yield chunk


def _check_layer(
    stream: _LayerStream, layer: RemoteFile, what: str, cause: Exception | None = None
) -> None:
    """Check that the whole layer arrived and is the one the manifest names.

    A digest mismatch wins over whatever error the bytes caused: tampering is the finding.
    """
    sha256 = stream.hasher.hexdigest()
    if stream.length == layer.size and sha256 != layer.sha256:
        raise DigestMismatch(
            f"{what}: the registry sent bytes whose sha256 is {sha256}: not the layer the "
            "manifest names"
        ) from cause
    if stream.length != layer.size and cause is None:
        raise TruncatedDownload(f"{what}: {stream.length} of {layer.size} bytes")


@contextmanager
def _tar_errors(what: str) -> Iterator[None]:
    """Turn what tarfile raises over a layer (and our header bound) into a SourceError."""
    try:
        yield
    except _Refused as error:
        raise SourceError(f"{what}: {error}; refusing the image") from error
    except (tarfile.TarError, EOFError, OSError, ValueError) as error:
        raise SourceError(f"{what}: not a readable tar layer: {error}") from error


def _layer_archive(stream: _LayerStream) -> tarfile.TarFile:
    """A tar stream (gzip or none) over the layer's bytes."""
    return tarfile.open(  # type: ignore[call-overload, no-any-return]
        fileobj=stream, mode="r|*", tarinfo=_BoundedTarInfo, bufsize=CHUNK_BYTES
    )


def _members(archive: tarfile.TarFile) -> Iterator[tarfile.TarInfo]:
    while (member := archive.next()) is not None:
        archive.members = []  # type: ignore[attr-defined]  # stream mode keeps every header
        yield member


def _parts(name: str) -> list[str]:
    return [part for part in name.split("/") if part not in ("", ".")]


def _hides_models(name: str) -> bool:
    """Whether a member is a whiteout of /models, or an opaque whiteout of the root."""
    return _parts(name) in ([f".wh.{MODELS}"], [".wh..wh..opq"])


def _model_path(name: str, what: str) -> str | None:
    """The path under /models a tar member names, or None when it is outside /models."""
    parts = _parts(name)
    if ".." in parts:
        raise SourceError(f"{what}: the tar member {name!r} has a '..' segment; refusing")
    if len(parts) < 2 or parts[0] != MODELS:
        return None
    path = "/".join(parts[1:])
    return safe_relative_path(path, what)


def _apply_whiteout(path: str, layer: int, tree: _Tree) -> None:
    """`.wh.NAME` hides NAME (and below); `.wh..wh..opq` hides its directory's contents."""
    directory, _, name = path.rpartition("/")
    if name == ".wh..wh..opq":
        hidden, prefix = None, f"{directory}/" if directory else ""
    else:
        hidden = f"{directory}/{name[4:]}" if directory else name[4:]
        prefix = f"{hidden}/"
    tables: tuple[dict[str, _Entry] | dict[str, _Link], ...] = (tree.entries, tree.links)
    for table in tables:
        for listed in [p for p, item in table.items() if item.layer < layer]:
            if listed == hidden or listed.startswith(prefix):
                del table[listed]


def _hard_link(member: tarfile.TarInfo, path: str, tree: _Tree, what: str) -> RemoteFile:
    target = _model_path(member.linkname, what)
    entry = tree.entries.get(target) if target is not None else None
    if entry is None:
        raise SourceError(
            f"{what}: /{MODELS}/{path} is a hard link to {member.linkname!r}, which is not an "
            "earlier file of the model; refusing the image"
        )
    return replace(entry.file, path=path)


def _link_target(path: str, target: str) -> str:
    """Where the link at `path` (under /models) leads, as a path under /models ('' if out)."""
    if target.startswith("/"):
        parts = _parts(target)
        if not parts or parts[0] != MODELS:
            return ""
        joined = "/".join(parts[1:])
    else:
        joined = posixpath.join(posixpath.dirname(path), target)
    normal = posixpath.normpath(joined)
    return "" if normal.startswith("..") or normal in ("", ".") else normal
