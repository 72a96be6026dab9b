"""What an `oci://` reference names and what a manifest lists.

Pure parsing, no network: the reference grammar (the distribution spec's, restricted to
sha256 digests) and the manifest's content: an ORAS model artifact's files (one per layer, its
path the layer's `org.opencontainers.image.title`, its sha256 the layer digest), or a
container image's layers (a KServe modelcar: the model is /models inside them, see
:mod:`weightgate.sources.oci_image`). :mod:`weightgate.sources.oci` fetches manifests and blobs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from weightgate.sources.errors import SourceError, UnsupportedReference
from weightgate.sources.model import RemoteFile
from weightgate.sources.paths import safe_relative_path

SCHEMES = ("oci", "oci+fetch", "oci+native")  # KServe's spellings of the same thing
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
ACCEPT = ", ".join((OCI_MANIFEST, DOCKER_MANIFEST, OCI_INDEX, DOCKER_LIST))
TITLE = "org.opencontainers.image.title"
ORAS_UNPACK = "io.deis.oras.content.unpack"  # a directory oras packed into a tar+gzip layer
MAX_LAYERS = 10_000
MAX_PLATFORMS = 16
ATTESTATION = "vnd.docker.reference.type"  # buildkit's annotation on attestation manifests
IMAGE_LAYERS = (  # tar layers a container runtime applies (gzip or uncompressed)
    "application/vnd.oci.image.layer.v1.tar",
    "application/vnd.oci.image.layer.v1.tar+gzip",
    "application/vnd.oci.image.layer.nondistributable.v1.tar",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
    "application/vnd.docker.image.rootfs.diff.tar.gzip",
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
)

# The distribution spec's grammar (docker/distribution reference), restricted to sha256.
_REGISTRY = re.compile(r"(?:[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*|\[[0-9A-Fa-f:.]+\])(?::[0-9]+)?")
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_REPOSITORY = re.compile(rf"{_COMPONENT}(?:/{_COMPONENT})*")
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
_SHA256 = re.compile(r"sha256:[a-f0-9]{64}")


@dataclass(frozen=True)
class ImageReference:
    """The parts of an `oci://` reference."""

    registry: str
    repository: str
    tag: str
    digest: str | None

    @property
    def lineage(self) -> str:
        """`oci://registry/repo`: the model across its tags and digests."""
        return f"oci://{self.registry}/{self.repository}"

    @property
    def api(self) -> str:
        """The repository's distribution API base URL."""
        host = "registry-1.docker.io" if self.registry == "docker.io" else self.registry
        return f"https://{host}/v2/{self.repository}"


def parse_reference(reference: str) -> ImageReference:
    """Split `oci://registry[:port]/repo[:tag][@sha256:...]` (tag defaults to `latest`)."""
    scheme, separator, rest = reference.partition("://")
    if scheme.lower() not in SCHEMES or not separator:
        raise UnsupportedReference(f"{reference}: not an oci:// reference")
    name, at, digest = rest.partition("@")
    registry, _, path = name.partition("/")
    repository, colon, tag = path.rpartition(":") if ":" in path else (path, "", "")
    if "/" in tag:  # the colon was not a tag separator
        repository, colon, tag = path, "", ""
    problem = None
    if not _REGISTRY.fullmatch(registry) or not (
        "." in registry or ":" in registry or registry == "localhost"
    ):
        problem = "name the registry host first: oci://registry.example.com/repo:tag"
    elif not _REPOSITORY.fullmatch(repository):
        problem = f"repository {repository!r} is not a valid OCI repository name"
    elif colon and not _TAG.fullmatch(tag):
        problem = f"tag {tag!r} is not a valid OCI tag"
    elif at and not _SHA256.fullmatch(digest):
        problem = f"digest {digest!r} is not sha256:<64 lower-case hex digits>"
    if problem:
        raise UnsupportedReference(f"{reference}: {problem}")
    return ImageReference(registry, repository, tag or "latest", digest or None)


@dataclass(frozen=True)
class IndexEntry:
    """A manifest an image index lists for one platform."""

    digest: str
    platform: str  # os/architecture[/variant]


def is_index(manifest: Any, content_type: str) -> bool:
    """Whether `manifest` is an image index (OCI) or manifest list (Docker)."""
    if not isinstance(manifest, dict):
        return False
    media_type = manifest.get("mediaType") or content_type.split(";", 1)[0].strip()
    return "manifests" in manifest or media_type in (OCI_INDEX, DOCKER_LIST)


def read_index(reference: str, index: dict[str, Any]) -> tuple[IndexEntry, ...]:
    """The platform manifests of an image index that a Linux node could run.

    Build attestations (buildkit lists them as platform unknown/unknown) are left out; an
    index without any Linux manifest, or with more than MAX_PLATFORMS, is refused.
    """
    listed = index.get("manifests")
    entries: list[IndexEntry] = []
    for child in listed if isinstance(listed, list) else []:
        if not isinstance(child, dict):
            continue
        platform = _object(child.get("platform"))
        annotations = _object(child.get("annotations"))
        if platform and platform.get("os") != "linux":  # no platform: an artifact's
            continue
        if annotations.get(ATTESTATION) == "attestation-manifest":
            continue
        digest = child.get("digest")
        if not isinstance(digest, str) or not _SHA256.fullmatch(digest):
            raise SourceError(f"{reference}: the index lists the digest {digest!r}")
        parts = (platform.get("os"), platform.get("architecture"), platform.get("variant"))
        name = "/".join(str(part) for part in parts if part)
        entries.append(IndexEntry(digest, name or "any platform"))
    if not entries:
        raise UnsupportedReference(
            f"{reference}: an image index without a linux manifest; pin one manifest by digest: "
            "oci://registry/repo@sha256:..."
        )
    if len(entries) > MAX_PLATFORMS:
        raise SourceError(f"{reference}: the index lists more than {MAX_PLATFORMS} platforms")
    return tuple(entries)


@dataclass(frozen=True)
class ManifestContent:
    """What a manifest lists: an artifact's files, or a container image's layers in order."""

    files: tuple[RemoteFile, ...]
    image: bool  # a container image: the model is /models inside the layers `files`


def read_manifest(
    reference: str, manifest: Any, content_type: str, blobs_url: str
) -> ManifestContent:
    """The files of an ORAS artifact, or the layers of a container image; refuse the rest."""
    if not isinstance(manifest, dict):
        raise SourceError(f"{reference}: the manifest is not a JSON object")
    media_type = manifest.get("mediaType") or content_type.split(";", 1)[0].strip()
    if is_index(manifest, content_type):
        raise UnsupportedReference(
            f"{reference}: an image index inside an image index; pin one manifest by digest: "
            "oci://registry/repo@sha256:..."
        )
    if media_type not in (OCI_MANIFEST, DOCKER_MANIFEST):
        raise UnsupportedReference(
            f"{reference}: manifest media type {media_type!r} is not understood "
            f"(expected {OCI_MANIFEST} or {DOCKER_MANIFEST})"
        )
    layers = manifest.get("layers")
    if not isinstance(layers, list) or not layers or len(layers) > MAX_LAYERS:
        raise SourceError(f"{reference}: the manifest lists no layers, or more than {MAX_LAYERS}")
    if not any(isinstance(layer, dict) and _title(layer) for layer in layers):
        return ManifestContent(_image_layers(reference, layers, blobs_url), image=True)
    files: list[RemoteFile] = []
    for layer in layers:
        title = _title(layer) if isinstance(layer, dict) else None
        if not isinstance(layer, dict) or title is None:
            raise SourceError(f"{reference}: a layer without an {TITLE} annotation")
        digest, size = layer.get("digest"), layer.get("size")
        what = f"{reference}: layer {title!r}"
        safe_relative_path(title, what)
        if (layer.get("annotations") or {}).get(ORAS_UNPACK):
            raise UnsupportedReference(f"{what}: a directory packed by oras; push its files")
        files.append(_blob(what, title, digest, size, blobs_url))
    return ManifestContent(tuple(files), image=False)


def _image_layers(reference: str, layers: list[Any], blobs_url: str) -> tuple[RemoteFile, ...]:
    """A container image's layers, in order, as blobs to stream (named `layers/NNNN`)."""
    blobs: list[RemoteFile] = []
    for index, layer in enumerate(layers):
        what = f"{reference}: layer {index + 1}"
        if not isinstance(layer, dict):
            raise SourceError(f"{what} is not a JSON object")
        media_type = layer.get("mediaType")
        if isinstance(media_type, str) and media_type.endswith("+zstd"):
            raise UnsupportedReference(
                f"{what}: a zstd-compressed layer ({media_type}); rebuild the image with gzip "
                "layers (docker build and buildah use gzip unless told otherwise)"
            )
        if media_type not in IMAGE_LAYERS:
            raise UnsupportedReference(
                f"{what}: media type {media_type!r} is neither a container image layer (a "
                f"KServe modelcar) nor a titled file of an ORAS artifact"
            )
        blobs.append(
            _blob(what, f"layers/{index:04d}", layer.get("digest"), layer.get("size"), blobs_url)
        )
    return tuple(blobs)


def _blob(what: str, path: str, digest: Any, size: Any, blobs_url: str) -> RemoteFile:
    if not isinstance(digest, str) or not _SHA256.fullmatch(digest):
        raise SourceError(f"{what}: digest {digest!r} is not sha256:<hex>")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise SourceError(f"{what}: size {size!r} is not a byte count")
    return RemoteFile(path, size, digest.removeprefix("sha256:"), blobs_url + digest)


def _object(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _title(layer: dict[str, Any]) -> str | None:
    annotations = layer.get("annotations")
    title = annotations.get(TITLE) if isinstance(annotations, dict) else None
    return title if isinstance(title, str) else None
