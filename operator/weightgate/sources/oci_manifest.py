"""What an `oci://` reference names and what an ORAS model artifact's manifest lists.

Pure parsing, no network: the reference grammar (the distribution spec's, restricted to
sha256 digests) and the manifest -> files mapping (one file per layer, its path the layer's
`org.opencontainers.image.title`, its sha256 the layer digest). :mod:`weightgate.sources.oci`
fetches manifests and blobs.
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


def files_of_manifest(
    reference: str, manifest: Any, content_type: str, blobs_url: str
) -> tuple[RemoteFile, ...]:
    """The files of an ORAS artifact manifest (one per titled layer); refuse anything else."""
    if not isinstance(manifest, dict):
        raise SourceError(f"{reference}: the manifest is not a JSON object")
    media_type = manifest.get("mediaType") or content_type.split(";", 1)[0].strip()
    if "manifests" in manifest or media_type in (OCI_INDEX, DOCKER_LIST):
        listed = manifest.get("manifests")
        children = [
            str(child.get("digest"))
            for child in (listed if isinstance(listed, list) else [])
            if isinstance(child, dict)
        ]
        raise UnsupportedReference(
            f"{reference}: an image index (of {', '.join(children[:5]) or 'no manifests'}); "
            "pin one manifest by digest: oci://registry/repo@sha256:..."
        )
    if media_type not in (OCI_MANIFEST, DOCKER_MANIFEST):
        raise UnsupportedReference(
            f"{reference}: manifest media type {media_type!r} is not understood "
            f"(expected {OCI_MANIFEST} or {DOCKER_MANIFEST})"
        )
    layers = manifest.get("layers")
    if not isinstance(layers, list) or not layers or len(layers) > MAX_LAYERS:
        raise SourceError(f"{reference}: the manifest lists no layers, or more than {MAX_LAYERS}")
    titled = [layer for layer in layers if isinstance(layer, dict) and _title(layer)]
    if not titled:
        raise UnsupportedReference(
            f"{reference}: a container image (no layer has an {TITLE} annotation), such as a "
            "KServe modelcar; reading models out of image layers is not supported: push the "
            "model files as an ORAS artifact (oras push REGISTRY/REPO:TAG model.safetensors ...)"
        )
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
        if not isinstance(digest, str) or not _SHA256.fullmatch(digest):
            raise SourceError(f"{what}: digest {digest!r} is not sha256:<hex>")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise SourceError(f"{what}: size {size!r} is not a byte count")
        files.append(RemoteFile(title, size, digest.removeprefix("sha256:"), blobs_url + digest))
    return tuple(files)


def _title(layer: dict[str, Any]) -> str | None:
    annotations = layer.get("annotations")
    title = annotations.get(TITLE) if isinstance(annotations, dict) else None
    return title if isinstance(title, str) else None
