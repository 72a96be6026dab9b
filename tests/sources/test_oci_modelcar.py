"""KServe modelcar images (the model is /models inside the layers) from a real registry.

The images are built here as a container build would lay them out: a base layer (a shell and
/etc outside /models, plus a file a later layer deletes), then the model's layer with
whiteouts and links, pushed as an OCI image manifest. Hostile layers (traversal, devices,
links out of /models, bombs) go through the same unpacking from in-memory bytes: the registry
adds nothing to what is checked there.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import tarfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.models import minilm_dir, model_files
from tests.servers.registry import OciRegistry
from weightgate.sources import fetch, fetch_model, materialize
from weightgate.sources.base import SourceSettings
from weightgate.sources.errors import (
    DigestMismatch,
    ModelTooLarge,
    SourceError,
    UnsupportedReference,
)
from weightgate.sources.model import RemoteFile, ResolvedModel
from weightgate.sources.oci import OciSource
from weightgate.sources.oci_image import MAX_HEADER_BYTES, ModelcarUnpacking
from weightgate.sources.oci_manifest import OCI_MANIFEST

pytestmark = pytest.mark.usefixtures("isolated_docker_config")

MINILM = minilm_dir()
MINILM_FILES = model_files(MINILM)
GZIP_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
Progress = Callable[[str, int, int], None] | None


@dataclass(frozen=True)
class Member:
    """One tar member: a file (data), a directory, or a link (type and target)."""

    name: str
    data: bytes = b""
    type: bytes = tarfile.REGTYPE
    linkname: str = ""


def tar_layer(*members: Member, compress: bool = True) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for member in members:
            info = tarfile.TarInfo(member.name)
            info.type = member.type
            info.linkname = member.linkname
            info.size = len(member.data) if member.type == tarfile.REGTYPE else 0
            info.mode = 0o755 if member.type == tarfile.DIRTYPE else 0o644
            archive.addfile(info, io.BytesIO(member.data) if info.size else None)
    return gzip.compress(buffer.getvalue(), mtime=0) if compress else buffer.getvalue()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def push_image(
    registry: OciRegistry,
    repository_tag: str,
    layers: list[bytes],
    scratch: Path,
    media_type: str = GZIP_LAYER,
) -> str:
    """Push a container image (config + tar layers) as `docker push` would; its digest."""
    repository = repository_tag.rpartition(":")[0]
    config = json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {}}).encode()
    descriptors = []
    for index, blob in enumerate([config, *layers]):
        path = scratch / f"blob-{index}"
        path.write_bytes(blob)
        digest = f"sha256:{sha256(blob)}"
        registry.upload_blob(repository, path, digest)
        descriptors.append({"mediaType": media_type, "digest": digest, "size": len(blob)})
    descriptors[0]["mediaType"] = "application/vnd.oci.image.config.v1+json"
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": descriptors[0],
        "layers": descriptors[1:],
    }
    return registry.put_manifest(repository_tag, json.dumps(manifest).encode(), OCI_MANIFEST)


BASE = tar_layer(
    Member("bin", type=tarfile.DIRTYPE),
    Member("bin/sh", b"\x7fELF not really"),
    Member("etc/passwd", b"root:x:0:0::/root:/bin/sh\n"),
    Member("models", type=tarfile.DIRTYPE),
    Member("models/stale.bin", b"deleted by the next layer"),
    Member("models/tokenizer/old.json", b"hidden by an opaque whiteout"),
)
MODEL = tar_layer(
    *(Member(f"./models/{name}", path.read_bytes()) for name, path in MINILM_FILES.items()),
    Member("models/.wh.stale.bin"),
    Member("models/tokenizer/.wh..wh..opq"),
    Member("models/tokenizer/vocab.txt", (MINILM / "vocab.txt").read_bytes()),
    Member("models/latest.safetensors", type=tarfile.SYMTYPE, linkname="model.safetensors"),
    Member("models/same-config.json", type=tarfile.LNKTYPE, linkname="models/config.json"),
)
EXPECTED = {name: sha256(path.read_bytes()) for name, path in MINILM_FILES.items()} | {
    "tokenizer/vocab.txt": sha256((MINILM / "vocab.txt").read_bytes()),
    "latest.safetensors": sha256((MINILM / "model.safetensors").read_bytes()),
    "same-config.json": sha256((MINILM / "config.json").read_bytes()),
}


@pytest.fixture(scope="module")
def modelcar(
    oci_registry: OciRegistry, tmp_path_factory: pytest.TempPathFactory
) -> tuple[str, str]:
    scratch = tmp_path_factory.mktemp("modelcar")
    digest = push_image(oci_registry, "models/modelcar:v1", [BASE, MODEL], scratch)
    return f"oci://{oci_registry.host}/models/modelcar:v1", digest


def test_a_modelcar_resolves_to_the_files_under_models_after_whiteouts_and_links(
    oci_settings: SourceSettings, modelcar: tuple[str, str], oci_registry: OciRegistry
) -> None:
    reference, digest = modelcar

    resolved = OciSource(oci_settings).resolve(reference)

    assert resolved.revision == digest
    assert resolved.pinned == f"oci://{oci_registry.host}/models/modelcar@{digest}"
    assert {file.path: file.sha256 for file in resolved.files} == EXPECTED
    assert {file.path: file.size for file in resolved.files}["model.safetensors"] == (
        MINILM / "model.safetensors"
    ).stat().st_size


def test_the_fetch_after_the_resolve_downloads_nothing_and_lays_out_the_model(
    oci_settings: SourceSettings, modelcar: tuple[str, str], tmp_path: Path
) -> None:
    resolved = OciSource(oci_settings).resolve(modelcar[0])

    fetched = fetch_model(resolved, Unreachable(), oci_settings)  # every file is in the cache
    directory = materialize(fetched, tmp_path / "model")

    for name, path in MINILM_FILES.items():
        assert (directory / name).read_bytes() == path.read_bytes()
    assert not (directory / "stale.bin").exists()
    assert not (directory / "tokenizer" / "old.json").exists()


def test_all_three_kserve_schemes_name_the_same_modelcar(
    oci_settings: SourceSettings, modelcar: tuple[str, str]
) -> None:
    reference, digest = modelcar
    for scheme in ("oci+fetch", "oci+native"):
        fetched = fetch(reference.replace("oci", scheme, 1), oci_settings)
        assert fetched.revision == digest
        assert {file.path: file.sha256 for file in fetched.files} == EXPECTED


def test_resolving_again_reads_no_layer(
    oci_settings: SourceSettings, oci_registry: OciRegistry, tmp_path: Path
) -> None:
    layer = tar_layer(Member("models/weights.bin", os.urandom(4096)))
    push_image(oci_registry, "models/listed:v1", [layer], tmp_path)
    reference = f"oci://{oci_registry.host}/models/listed:v1"
    first = OciSource(oci_settings).resolve(reference)
    oci_registry.blob_data_path(f"sha256:{sha256(layer)}").unlink()  # the layer is gone

    again = OciSource(oci_settings).resolve(reference)

    assert again == first


def test_a_file_evicted_since_the_resolve_streams_from_its_layer_again(
    oci_settings: SourceSettings, oci_registry: OciRegistry, tmp_path: Path
) -> None:
    data = os.urandom(300_000)
    layer = tar_layer(Member("models/a.bin", b"first"), Member("models/weights.bin", data))
    push_image(oci_registry, "models/evicted:v1", [layer], tmp_path)
    source = OciSource(oci_settings)
    resolved = source.resolve(f"oci://{oci_registry.host}/models/evicted:v1")
    shutil.rmtree(oci_settings.cache_dir / "blobs")

    fetched = fetch_model(resolved, source, oci_settings)

    blobs = {file.path: file.blob.read_bytes() for file in fetched.files}
    assert blobs == {"a.bin": b"first", "weights.bin": data}


def test_a_tampered_layer_is_a_digest_mismatch(
    oci_settings: SourceSettings, oci_registry: OciRegistry, tmp_path: Path
) -> None:
    layer = tar_layer(Member("models/weights.bin", os.urandom(4096)))
    push_image(oci_registry, "models/tampered-car:v1", [layer], tmp_path)
    stored = oci_registry.blob_data_path(f"sha256:{sha256(layer)}")
    tampered = bytearray(stored.read_bytes())
    tampered[-6] ^= 0xFF  # the gzip CRC: still the same size, no longer the same bytes
    stored.write_bytes(bytes(tampered))

    with pytest.raises(DigestMismatch, match="not the layer the manifest names"):
        OciSource(oci_settings).resolve(f"oci://{oci_registry.host}/models/tampered-car:v1")
    assert not (oci_settings.cache_dir / "listings").exists() or not os.listdir(
        oci_settings.cache_dir / "listings"
    )


def test_a_zstd_image_is_refused_saying_how_to_rebuild_it(
    oci_settings: SourceSettings, oci_registry: OciRegistry, tmp_path: Path
) -> None:
    layer = tar_layer(Member("models/weights.bin", b"w"))
    media_type = "application/vnd.oci.image.layer.v1.tar+zstd"
    push_image(oci_registry, "models/zstd:v1", [layer], tmp_path, media_type)

    with pytest.raises(UnsupportedReference, match=r"zstd-compressed layer.*gzip"):
        OciSource(oci_settings).resolve(f"oci://{oci_registry.host}/models/zstd:v1")


# --- hostile or odd layers, unpacked from memory -------------------------------------------


class Unreachable:
    """A source that fails every download: what is fetched must come from the cache."""

    schemes = ("oci",)

    def resolve(self, reference: str) -> ResolvedModel:
        raise AssertionError("not called")

    @contextmanager
    def open(
        self, model: ResolvedModel, file: RemoteFile, offset: int
    ) -> Iterator[Iterator[bytes]]:
        raise AssertionError(f"{file.path} was downloaded again")
        yield iter(())


def unpack(
    layers: list[bytes], tmp_path: Path, max_bytes: int = 1 << 30, progress: Progress = None
) -> list[str]:
    """The paths a modelcar of `layers` lists (blobs go to a cache under `tmp_path`)."""
    blobs = {f"layers/{index:04d}": layer for index, layer in enumerate(layers)}
    remote = [RemoteFile(path, len(data), sha256(data), path) for path, data in blobs.items()]

    @contextmanager
    def chunks(layer: RemoteFile) -> Iterator[Iterator[bytes]]:
        data = blobs[layer.locator]
        yield iter([data[start : start + 7000] for start in range(0, len(data), 7000)])

    settings = SourceSettings(
        cache_dir=tmp_path / "cache", max_model_bytes=max_bytes, progress=progress
    )
    unpacking = ModelcarUnpacking("oci://r.io/car:v1", "sha256:" + "c" * 64, settings, chunks)
    return [file.path for file in unpacking.files(remote)]


@pytest.mark.parametrize(
    ("member", "problem"),
    [
        (Member("models/../etc/cron.d/x", b"x"), "'..' segment"),
        (Member("usr/../models/x", b"x"), "'..' segment"),
        (Member("models/escape", type=tarfile.SYMTYPE, linkname="/etc/passwd"), "not a file"),
        (Member("models/up", type=tarfile.SYMTYPE, linkname="../etc/passwd"), "not a file"),
        (Member("models/hard", type=tarfile.LNKTYPE, linkname="etc/passwd"), "hard link"),
        (Member("models/null", type=tarfile.CHRTYPE), "not a regular file"),
        (Member("models/fifo", type=tarfile.FIFOTYPE), "not a regular file"),
        (Member("models/a\\b", b"x"), "backslash"),
    ],
)
def test_a_layer_that_could_reach_outside_models_refuses_the_image(
    member: Member, problem: str, tmp_path: Path
) -> None:
    layer = tar_layer(Member("etc/passwd", b"root"), Member("models/ok.bin", b"ok"), member)
    with pytest.raises(SourceError, match=problem):
        unpack([layer], tmp_path)


def test_a_link_chain_inside_models_lists_the_file_under_every_name(tmp_path: Path) -> None:
    layer = tar_layer(
        Member("models/blobs/abc", b"weights"),
        Member("models/snapshots/main/model.bin", type=tarfile.SYMTYPE, linkname="../../link"),
        Member("models/link", type=tarfile.SYMTYPE, linkname="/models/blobs/abc"),
    )
    assert sorted(unpack([layer], tmp_path)) == ["blobs/abc", "link", "snapshots/main/model.bin"]


@pytest.mark.parametrize("whiteout", [".wh.models", "./.wh..wh..opq"])
def test_a_whiteout_of_models_itself_hides_every_lower_file(whiteout: str, tmp_path: Path) -> None:
    lower = tar_layer(Member("models/old.bin", b"old"), Member("models/sub/old.json", b"{}"))
    upper = tar_layer(Member(whiteout), Member("models/new.bin", b"new"))
    assert unpack([lower, upper], tmp_path) == ["new.bin"]


def test_resolving_a_modelcar_reports_download_progress_up_to_every_layer_byte(
    tmp_path: Path,
) -> None:
    layers = [tar_layer(Member("models/a.bin", os.urandom(50_000))), tar_layer(Member("b", b""))]
    seen: list[tuple[str, int, int]] = []

    unpack(layers, tmp_path, progress=lambda label, done, total: seen.append((label, done, total)))

    total = sum(len(layer) for layer in layers)
    assert seen[-1] == ("layer 2/2", total, total)
    assert [done for _, done, _ in seen] == sorted(done for _, done, _ in seen)
    assert {label for label, _, _ in seen} == {"layer 1/2", "layer 2/2"}


def test_an_image_without_models_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="no files under /models"):
        unpack([tar_layer(Member("app/server.py", b"print()"))], tmp_path)


def test_uncompressed_layers_are_read_too(tmp_path: Path) -> None:
    assert unpack([tar_layer(Member("models/m.bin", b"m"), compress=False)], tmp_path) == ["m.bin"]


def test_a_decompression_bomb_stops_at_the_model_size_limit(tmp_path: Path) -> None:
    bomb = tar_layer(Member("usr/share/zeros", bytes(4_000_000)), Member("models/m.bin", b"m"))
    assert len(bomb) < 20_000
    with pytest.raises(ModelTooLarge, match="unpack to more than the limit of 1000000"):
        unpack([bomb], tmp_path, max_bytes=1_000_000)


def test_an_oversized_extended_header_is_refused_before_it_is_read(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as archive:
        info = tarfile.TarInfo("models/m.bin")
        info.pax_headers = {"comment": "x" * (MAX_HEADER_BYTES + 1)}
        archive.addfile(info, io.BytesIO(b""))
    with pytest.raises(SourceError, match="extended tar header"):
        unpack([gzip.compress(buffer.getvalue())], tmp_path)


def test_a_layer_that_is_not_a_tar_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="not a readable tar layer"):
        unpack([gzip.compress(b"not a tar at all" * 100)], tmp_path)
