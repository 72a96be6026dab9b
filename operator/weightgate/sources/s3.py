"""`s3://bucket/prefix` and `s3://bucket/key` references, on boto3.

boto3 does the work: endpoint (`AWS_ENDPOINT_URL`, `AWS_ENDPOINT_URL_S3`, config files),
credentials (its default chain: environment, profile, IRSA web identity, instance metadata),
signing, listing and streaming. Our own code exists for what boto3 cannot know:

* the pin. A prefix's revision is `sha256:` of a canonical JSON manifest of (key, version id,
  ETag, size) sorted by key, so it changes when any object does. Files are fetched by
  VersionId in versioned buckets (old bytes stay reachable after an overwrite), else with
  If-Match on the listed ETag (a changed object raises RevisionMoved). The pinned reference is
  `s3://bucket/prefix#revision=sha256:<hex>`; resolving it again finds the same manifest or
  raises RevisionMoved.
* digests. An object's `sha256` is its full-object ChecksumSHA256 when S3 has one; ETags are
  never digests (a multipart ETag is not an MD5) and composite (multipart) checksums are not
  either, so those files get `sha256=None` and the download names their content.
* hostile keys: a key whose path under the prefix breaks :mod:`.paths`' rule is refused.
* one retry policy: botocore's own retries are off; :func:`with_retries` applies the
  settings' retries and backoff, as for every other source.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, ClassVar

import boto3
import botocore.exceptions as boto_errors
from botocore.config import Config
from botocore.parsers import ResponseParserError

from weightgate.sources.base import SourceSettings
from weightgate.sources.errors import (
    DigestMismatch,
    NotFound,
    RevisionMoved,
    SourceError,
    SourceTimeout,
    SourceUnavailable,
    TruncatedDownload,
    Unauthorized,
    UnsupportedReference,
    for_http_status,
)
from weightgate.sources.model import RemoteFile, ResolvedModel
from weightgate.sources.paths import safe_relative_path
from weightgate.sources.retry import with_retries

CHUNK_BYTES = 1024 * 1024
MAX_OBJECTS = 100_000  # bounds the listing (and the memory) of a prefix
_PIN = "#revision="
_VERSION = "?versionId="  # locator = key + _VERSION + version id (empty when unversioned)
_CREDENTIALS_HELP = (
    "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE, "
    "or AWS_ROLE_ARN and AWS_WEB_IDENTITY_TOKEN_FILE (IRSA)"
)
_REFUSED = {"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken"}
_REFUSED |= {"InvalidToken", "AllAccessDisabled", "AccountProblem", "InvalidSecurity"}
_MISSING = {"NoSuchBucket", "NoSuchKey", "NoSuchVersion", "NotFound", "404"}


def parse_reference(reference: str) -> tuple[str, str, str | None]:
    """Split `s3://bucket/prefix[#revision=sha256:<hex>]` into bucket, prefix and pin."""
    scheme, separator, rest = reference.partition("://")
    if scheme.lower() != "s3" or not separator:
        raise UnsupportedReference(f"{reference}: not an s3:// reference")
    rest, pin_separator, pin = rest.partition(_PIN)
    if "#" in rest or (pin_separator and not pin.startswith("sha256:")):
        raise UnsupportedReference(
            f"{reference}: the only fragment s3:// accepts is #revision=sha256:<hex>"
        )
    bucket, _, prefix = rest.partition("/")
    if not bucket:
        raise UnsupportedReference(f"{reference}: no bucket (expected s3://bucket/prefix)")
    return bucket, prefix, pin if pin_separator else None


def _sha256_of(head: dict[str, Any], etag: str) -> str | None:
    """The hex sha256 S3 vouches for: a full-object ChecksumSHA256, else None."""
    value = head.get("ChecksumSHA256")
    if not value or "-" in value or "-" in etag or head.get("ChecksumType") == "COMPOSITE":
        return None  # a multipart object's checksum is a hash of part hashes
    try:
        raw = base64.b64decode(value, validate=True)
    except binascii.Error:
        return None
    return raw.hex() if len(raw) == 32 else None


def revision_of(entries: list[dict[str, Any]]) -> str:
    """`sha256:` of the canonical manifest of (key, version id, etag, size), sorted by key."""
    manifest = [
        {"etag": e["ETag"], "key": e["Key"], "size": e["Size"], "version_id": e["VersionId"]}
        for e in sorted(entries, key=lambda e: str(e["Key"]))
    ]
    text = json.dumps(manifest, sort_keys=True, separators=(",", ":"))
    return f"sha256:{hashlib.sha256(text.encode()).hexdigest()}"


@contextmanager
def translated_errors(what: str) -> Iterator[None]:
    """Turn boto3's exceptions into source errors naming `what` (the reference or file)."""
    try:
        yield
    except (boto_errors.NoCredentialsError, boto_errors.PartialCredentialsError) as error:
        message = f"{what}: no usable AWS credentials ({error}); {_CREDENTIALS_HELP}"
        raise Unauthorized(message) from error
    except boto_errors.ProfileNotFound as error:
        raise Unauthorized(f"{what}: {error}; set AWS_PROFILE to a configured profile") from error
    except boto_errors.CredentialRetrievalError as error:
        raise Unauthorized(f"{what}: {error}; {_CREDENTIALS_HELP}") from error
    except boto_errors.ClientError as error:
        raise _client_error(what, error) from error
    except boto_errors.FlexibleChecksumError as error:
        raise DigestMismatch(f"{what}: S3 checksum mismatch: {error}") from error
    except (boto_errors.ConnectTimeoutError, boto_errors.ReadTimeoutError) as error:
        raise SourceTimeout(f"{what}: timed out ({error})") from error
    except (boto_errors.IncompleteReadError, boto_errors.ResponseStreamingError) as error:
        raise TruncatedDownload(f"{what}: download cut short ({error})") from error
    except (boto_errors.EndpointConnectionError, boto_errors.HTTPClientError) as error:
        raise SourceUnavailable(f"{what}: {error}") from error
    except ResponseParserError as error:  # not XML: a proxy's error page, a broken server
        raise SourceUnavailable(f"{what}: unreadable answer from the endpoint: {error}") from error
    except boto_errors.BotoCoreError as error:
        raise SourceError(f"{what}: {type(error).__name__}: {error}") from error


def _code(error: boto_errors.ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))


def _client_error(what: str, error: boto_errors.ClientError) -> SourceError | RevisionMoved:
    code = _code(error)
    status = int(error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))
    detail = f"{what}: {code or status}: {error.response.get('Error', {}).get('Message', '')}"
    if code == "PreconditionFailed" or status == 412:
        return RevisionMoved(f"{detail}: the object changed since it was resolved")
    if code == "RequestTimeout":
        return SourceTimeout(detail)
    status = 403 if code in _REFUSED else 404 if code in _MISSING else status
    status = 503 if code == "SlowDown" else status
    return for_http_status(
        status, detail, f"credentials refused; {_CREDENTIALS_HELP}", "no such object"
    )


class S3Source:
    """Resolves `s3://bucket/prefix` (every object under `prefix/`) or `s3://bucket/key`."""

    schemes: ClassVar[tuple[str, ...]] = ("s3",)

    def __init__(self, settings: SourceSettings) -> None:
        """Use `settings`' timeouts, retries, size limit and CA bundle."""
        self.settings = settings
        self._client: Any = None

    def client(self, what: str) -> Any:
        """The boto3 S3 client (made on first use: credentials errors name `what`)."""
        if self._client is None:
            config = Config(
                connect_timeout=self.settings.timeout,
                read_timeout=self.settings.timeout,
                retries={"total_max_attempts": 1},  # with_retries does the retrying
            )
            verify = str(self.settings.ca_bundle) if self.settings.ca_bundle else None
            with translated_errors(what):
                self._client = boto3.session.Session().client("s3", config=config, verify=verify)
        return self._client

    def _call(self, what: str, operation: str, **kwargs: Any) -> Any:
        """One S3 call, translated; retried as a resolve step (``open`` calls it once)."""
        return with_retries(self.settings, lambda: self._call_once(what, operation, **kwargs))

    def _call_once(self, what: str, operation: str, **kwargs: Any) -> Any:
        with translated_errors(what):
            return getattr(self.client(what), operation)(**kwargs)

    def resolve(self, reference: str) -> ResolvedModel:
        """List the objects under the prefix (or the one key) with their versions and ETags."""
        bucket, prefix, pin = parse_reference(reference)
        prefix = prefix.rstrip("/")
        lineage = f"s3://{bucket}/{prefix}" if prefix else f"s3://{bucket}"
        entries = self._list(reference, bucket, f"{prefix}/" if prefix else "")
        single = not entries and prefix and not reference.partition(_PIN)[0].endswith("/")
        head = self._head(reference, bucket, prefix) if single else None
        if head is not None:
            entries = [head]
        if not entries:
            raise NotFound(f"{reference}: no objects under {lineage}/ (nor an object {lineage})")
        total = sum(int(entry["Size"]) for entry in entries)
        self.settings.check_model_size(reference, total, len(entries))
        revision = revision_of(entries)
        if pin is not None and pin != revision:
            raise RevisionMoved(
                f"{reference}: the objects under {lineage} changed since it was pinned "
                f"(now {revision}); resolve {lineage} again and re-scan"
            )
        files = [self._remote_file(reference, bucket, prefix, e, bool(single)) for e in entries]
        pinned = f"{lineage}{_PIN}{revision}"
        return ResolvedModel(reference, lineage, revision, pinned, tuple(files))

    def _list(self, reference: str, bucket: str, prefix: str) -> list[dict[str, Any]]:
        """The latest version of every object under `prefix` (VersionId None if unversioned)."""
        pages = self._pages(reference, "list_object_versions", "Versions", bucket, prefix)
        if pages is None:  # no s3:ListBucketVersions: pin by ETag (If-Match on download)
            pages = self._pages(reference, "list_objects_v2", "Contents", bucket, prefix)
        latest = [entry for entry in pages or () if entry.get("IsLatest", True)]
        for entry in latest:
            if entry.get("VersionId") in (None, "null"):  # "null" versions can be overwritten
                entry["VersionId"] = None
        # Zero-byte "folder" markers made by consoles are not files.
        return [e for e in latest if not (e["Key"].endswith("/") and e["Size"] == 0)]

    def _pages(
        self, reference: str, operation: str, field: str, bucket: str, prefix: str
    ) -> list[dict[str, Any]] | None:
        """Every entry of every page; None when listing versions is denied."""

        def attempt() -> list[dict[str, Any]] | None:
            entries: list[dict[str, Any]] = []
            with translated_errors(reference):
                paginator = self.client(reference).get_paginator(operation)
                try:
                    for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
                        entries.extend(page.get(field, []))
                        if len(entries) > MAX_OBJECTS:
                            raise SourceError(f"{reference}: over {MAX_OBJECTS} objects")
                except boto_errors.ClientError as error:
                    if operation == "list_object_versions" and _code(error) == "AccessDenied":
                        return None
                    raise
            return entries

        return with_retries(self.settings, attempt)

    def _head(self, reference: str, bucket: str, key: str) -> dict[str, Any] | None:
        try:
            head = self._call(
                reference, "head_object", Bucket=bucket, Key=key, ChecksumMode="ENABLED"
            )
        except NotFound:
            return None
        entry = {"Key": key, "Size": head["ContentLength"], "ETag": head["ETag"], "Head": head}
        entry["VersionId"] = None if head.get("VersionId") in (None, "null") else head["VersionId"]
        return entry

    def _remote_file(
        self, reference: str, bucket: str, prefix: str, entry: dict[str, Any], single: bool
    ) -> RemoteFile:
        key, etag, version = entry["Key"], entry["ETag"], entry["VersionId"]
        parent = key.rpartition("/")[0] if single else prefix
        path = safe_relative_path(
            key[len(parent) + 1 :] if parent else key, f"{reference}: {key!r}"
        )
        head = entry.get("Head")
        algorithms = entry.get("ChecksumAlgorithm")
        if head is None and (algorithms is None or "SHA256" in algorithms):
            what = f"{reference}: {path}"
            extra = {"VersionId": version} if version else {}
            head = self._call(
                what, "head_object", Bucket=bucket, Key=key, ChecksumMode="ENABLED", **extra
            )
        same = head is not None and head.get("ETag") == etag  # else it changed since the listing
        sha256 = _sha256_of(head, etag) if head is not None and same else None
        return RemoteFile(path, int(entry["Size"]), sha256, f"{key}{_VERSION}{version or ''}", etag)

    @contextmanager
    def open(
        self, model: ResolvedModel, file: RemoteFile, offset: int
    ) -> Iterator[Iterator[bytes]]:
        """Stream `file` from `offset`: by VersionId when known, else If-Match on its ETag."""
        bucket, _, _ = parse_reference(model.lineage)
        key, _, version = file.locator.rpartition(_VERSION)
        what = f"{model.reference}: {file.path}"
        if offset and offset >= file.size:
            yield iter(())
            return
        request: dict[str, Any] = {"Bucket": bucket, "Key": key}
        if version:
            request["VersionId"] = version
        elif file.etag:
            request["IfMatch"] = file.etag
        if offset:
            request["Range"] = f"bytes={offset}-"
        response = self._call_once(what, "get_object", **request)  # the fetcher retries
        body = response["Body"]
        try:
            if not version and file.etag and response.get("ETag") != file.etag:
                raise RevisionMoved(f"{what}: ETag is now {response.get('ETag')}, not {file.etag}")
            yield self._chunks(what, body)
        finally:
            body.close()

    def _chunks(self, what: str, body: Any) -> Iterator[bytes]:
        with translated_errors(what):
            yield from body.iter_chunks(CHUNK_BYTES)
