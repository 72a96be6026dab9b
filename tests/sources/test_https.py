"""The https:// source against a real TLS server on loopback (resolve and open, no cache)."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import pytest

from tests.controlplane.pki import CertificateAuthority
from tests.models import minilm_dir
from tests.servers.https import Fault, HttpsFileServer, etag_of
from tests.sources.streams import read
from weightgate.sources import (
    ModelTooLarge,
    NotFound,
    RevisionMoved,
    SourceTimeout,
    SourceUnavailable,
    TruncatedDownload,
    Unauthorized,
    UnsupportedReference,
    resolve,
)
from weightgate.sources.base import SourceSettings
from weightgate.sources.https import HttpsSource

DATA = bytes(range(256)) * 4096  # 1 MiB, every offset distinguishable
DIGEST = hashlib.sha256(DATA).hexdigest()


def read_all(source: HttpsSource, reference: str, offset: int = 0) -> bytes:
    model = source.resolve(reference)
    return read(source, model, model.files[0], offset)


def test_resolves_a_real_model_file_to_its_size_and_etag(
    https_server: HttpsFileServer, tmp_path: Path
) -> None:
    original = minilm_dir() / "model.safetensors"
    url = https_server.link("minilm/model.safetensors", original)

    model = resolve(url, https_server.settings(tmp_path))

    assert model.reference == url
    assert model.lineage == url
    assert model.revision is None  # only the content can name an unpinned URL
    assert model.pinned == url
    (file,) = model.files
    assert file.path == "model.safetensors"
    assert file.size == original.stat().st_size
    assert file.sha256 is None
    assert file.etag == etag_of(https_server.root / "minilm/model.safetensors")
    assert file.locator == url
    assert [r.method for r in https_server.requests("minilm/model.safetensors")] == ["HEAD"]


def test_a_sha256_pin_is_the_files_digest_and_the_revision(
    https_server: HttpsFileServer, tmp_path: Path
) -> None:
    url = https_server.put("w.bin", DATA)

    model = resolve(f"{url}#sha256={DIGEST.upper()}", https_server.settings(tmp_path))

    assert model.revision == f"sha256:{DIGEST}"
    assert model.lineage == url
    assert model.pinned == f"{url}#sha256={DIGEST.upper()}"
    assert model.files[0].sha256 == DIGEST


@pytest.mark.parametrize(
    ("reference", "complaint"),
    [
        ("https://example.org/w.bin#md5=abc", "#sha256=<64 hex digits>"),
        ("https://example.org/w.bin#sha256=abc", "#sha256=<64 hex digits>"),
        ("https://example.org/models/", "must end in a file name"),
        ("https://example.org/models/..", "must end in a file name"),
        ("https:///w.bin", "expected https://host/path/file"),
    ],
)
def test_malformed_references_are_refused(reference: str, complaint: str) -> None:
    with pytest.raises(UnsupportedReference, match=complaint):
        HttpsSource(SourceSettings()).resolve(reference)


def test_refused_head_falls_back_to_a_one_byte_ranged_get(
    https_server: HttpsFileServer, tmp_path: Path
) -> None:
    url = https_server.put("w.bin", DATA)
    https_server.inject("w.bin", Fault(methods=frozenset({"HEAD"}), status=405, times=None))

    model = resolve(url, https_server.settings(tmp_path))

    assert model.files[0].size == len(DATA)
    assert model.files[0].etag == etag_of(https_server.root / "w.bin")
    methods = [(r.method, r.range, r.status) for r in https_server.requests("w.bin")]
    assert methods == [("HEAD", None, 405), ("GET", "bytes=0-0", 206)]


@pytest.mark.parametrize(("status", "error"), [(401, Unauthorized), (403, Unauthorized)])
def test_refused_credentials_are_unauthorized(
    https_server: HttpsFileServer, tmp_path: Path, status: int, error: type[Exception]
) -> None:
    url = https_server.put("w.bin", DATA)
    https_server.inject(
        "w.bin", Fault(methods=frozenset({"HEAD", "GET"}), status=status, times=None)
    )

    with pytest.raises(error, match=f"HTTP {status} .*credentials missing or refused") as raised:
        resolve(url, https_server.settings(tmp_path))

    assert url in str(raised.value)
    assert len(https_server.requests("w.bin")) == 2  # HEAD, then the ranged GET; no retries


def test_a_missing_file_is_not_found_at_once(https_server: HttpsFileServer, tmp_path: Path) -> None:
    with pytest.raises(NotFound, match="HTTP 404"):
        resolve(https_server.url("missing.bin"), https_server.settings(tmp_path))

    assert len(https_server.requests("missing.bin")) == 1


def test_a_server_error_once_is_retried(https_server: HttpsFileServer, tmp_path: Path) -> None:
    url = https_server.put("w.bin", DATA)
    https_server.inject("w.bin", Fault(methods=frozenset({"HEAD"}), status=500))

    model = resolve(url, https_server.settings(tmp_path))

    assert model.files[0].size == len(DATA)
    assert [r.status for r in https_server.requests("w.bin")] == [500, 200]


def test_server_errors_every_time_are_unavailable_after_the_retries(
    https_server: HttpsFileServer, tmp_path: Path
) -> None:
    url = https_server.put("w.bin", DATA)
    https_server.inject("w.bin", Fault(methods=frozenset({"HEAD"}), status=503, times=None))

    with pytest.raises(SourceUnavailable, match=r"HTTP 503 .*\(after 3 attempts\)"):
        resolve(url, https_server.settings(tmp_path, retries=2))

    assert len(https_server.requests("w.bin")) == 3


def test_a_client_without_the_ca_says_the_certificate_is_untrusted_without_retrying(
    https_server: HttpsFileServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    url = https_server.put("w.bin", DATA)
    settings = https_server.settings(tmp_path, ca_bundle=None, retries=3, backoff=2.0)

    started = time.monotonic()
    with pytest.raises(SourceUnavailable, match="TLS certificate is not trusted") as raised:
        resolve(url, settings)

    assert time.monotonic() - started < 2.0  # no retry: the backoff would have slept 2 s
    assert "CERTIFICATE_VERIFY_FAILED" in str(raised.value)
    assert "SourceSettings.ca_bundle" in str(raised.value)
    assert https_server.requests("w.bin") == []  # the handshake failed: no request was made


def test_the_settings_ca_bundle_wins_over_requests_ca_bundle(
    https_server: HttpsFileServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    other = tmp_path / "other-ca.pem"
    other.write_bytes(CertificateAuthority("some-other-ca").cert_pem)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(other))  # requests would prefer it otherwise
    url = https_server.put("w.bin", DATA)

    assert read_all(HttpsSource(https_server.settings(tmp_path)), url) == DATA


def test_open_streams_from_an_offset_with_range_and_if_match(
    https_server: HttpsFileServer, tmp_path: Path
) -> None:
    url = https_server.put("w.bin", DATA)
    source = HttpsSource(https_server.settings(tmp_path))

    assert read_all(source, url, offset=1000) == DATA[1000:]

    get = https_server.requests("w.bin", "GET")[-1]
    assert (get.range, get.if_match, get.status) == (
        "bytes=1000-",
        etag_of(https_server.root / "w.bin"),
        206,
    )


def test_a_server_ignoring_range_has_the_bytes_before_the_offset_skipped(
    https_server: HttpsFileServer, tmp_path: Path
) -> None:
    url = https_server.put("w.bin", DATA)
    https_server.inject("w.bin", Fault(ignore_range=True))
    source = HttpsSource(https_server.settings(tmp_path))

    assert read_all(source, url, offset=300_000) == DATA[300_000:]
    assert https_server.requests("w.bin", "GET")[-1].status == 200


def test_content_changed_after_resolve_is_a_moved_revision(
    https_server: HttpsFileServer, tmp_path: Path
) -> None:
    url = https_server.put("w.bin", DATA)
    https_server.inject("w.bin", Fault(methods=frozenset({"HEAD"}), replace_with=DATA[::-1]))
    source = HttpsSource(https_server.settings(tmp_path))
    model = source.resolve(url)

    with (
        pytest.raises(RevisionMoved, match="changed on the server since it was resolved"),
        source.open(model, model.files[0], 0),
    ):
        pass

    assert https_server.requests("w.bin", "GET")[-1].status == 412


def test_a_model_over_the_size_limit_is_refused_at_resolve(
    https_server: HttpsFileServer, tmp_path: Path
) -> None:
    url = https_server.put("w.bin", DATA)

    with pytest.raises(
        ModelTooLarge, match=f"{len(DATA)} bytes in 1 files is more than the limit of 1000"
    ):
        resolve(url, https_server.settings(tmp_path, max_model_bytes=1000))

    assert https_server.requests("w.bin", "GET") == []


def test_a_connection_closed_mid_body_is_a_truncated_download(
    https_server: HttpsFileServer, tmp_path: Path
) -> None:
    url = https_server.put("w.bin", DATA)
    https_server.inject("w.bin", Fault(truncate_after=200_000))
    source = HttpsSource(https_server.settings(tmp_path))
    model = source.resolve(url)
    received = bytearray()

    with (
        pytest.raises(TruncatedDownload, match="closed the connection after 200000 of"),
        source.open(model, model.files[0], 0) as chunks,
    ):
        for chunk in chunks:
            received += chunk

    assert bytes(received) == DATA[:200_000]


def test_a_stalled_body_times_out(https_server: HttpsFileServer, tmp_path: Path) -> None:
    url = https_server.put("w.bin", DATA)
    https_server.inject("w.bin", Fault(stall_after=100_000))
    source = HttpsSource(https_server.settings(tmp_path, timeout=0.5))
    model = source.resolve(url)

    started = time.monotonic()
    with (
        pytest.raises(SourceTimeout, match="timed out"),
        source.open(model, model.files[0], 0) as chunks,
    ):
        for _ in chunks:
            pass

    assert time.monotonic() - started < 3.0
