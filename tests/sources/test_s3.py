"""S3Source (boto3) against moto's S3 server running as a real process on loopback."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.servers.s3 import (
    ModelInS3,
    MotoS3,
    ScriptedEndpoint,
    http_response,
    isolate_aws_environment,
)
from tests.sources.streams import by_path, read, source_settings
from weightgate.sources import (
    DigestMismatch,
    ModelTooLarge,
    NotFound,
    RevisionMoved,
    SourceError,
    SourceTimeout,
    SourceUnavailable,
    TruncatedDownload,
    Unauthorized,
    UnsupportedReference,
    fetch,
)
from weightgate.sources.model import RemoteFile, ResolvedModel
from weightgate.sources.s3 import S3Source, parse_reference


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --- resolve --------------------------------------------------------------------------------


def test_resolve_versioned_prefix_lists_files_sizes_versions_and_revision(
    s3_env: MotoS3, tmp_path: Path
) -> None:
    bucket = s3_env.bucket(versioned=True)
    a = s3_env.put(bucket, "models/m/a.bin", b"alpha")
    c = s3_env.put(bucket, "models/m/sub/c.json", b"{}")
    s3_env.put(bucket, "models/m/", b"")  # a console's "folder" marker: not a file
    s3_env.put(bucket, "models/m-other/x.bin", b"not part of the model")
    s3_env.put(bucket, "models/m", b"a sibling object named like the prefix")

    model = S3Source(source_settings(tmp_path)).resolve(f"s3://{bucket}/models/m")

    assert [f.path for f in model.files] == ["a.bin", "sub/c.json"]
    files = by_path(model)
    assert files["a.bin"].size == 5 and files["sub/c.json"].size == 2
    assert files["a.bin"].locator.endswith(f"?versionId={a['VersionId']}")
    assert files["sub/c.json"].locator.endswith(f"?versionId={c['VersionId']}")
    assert (files["a.bin"].etag, files["sub/c.json"].etag) == (a["ETag"], c["ETag"])
    manifest = [
        {"etag": a["ETag"], "key": "models/m/a.bin", "size": 5, "version_id": a["VersionId"]},
        {"etag": c["ETag"], "key": "models/m/sub/c.json", "size": 2, "version_id": c["VersionId"]},
    ]
    canonical = json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode()
    assert model.revision == f"sha256:{sha256(canonical)}"
    assert model.lineage == f"s3://{bucket}/models/m"
    assert model.pinned == f"s3://{bucket}/models/m#revision={model.revision}"
    assert model.reference == f"s3://{bucket}/models/m"


def test_trailing_slash_and_whole_bucket_references(s3_env: MotoS3, tmp_path: Path) -> None:
    bucket = s3_env.bucket(versioned=False)
    s3_env.put(bucket, "m/a.bin", b"alpha")
    s3_env.put(bucket, "top.bin", b"top")
    source = S3Source(source_settings(tmp_path))

    assert [f.path for f in source.resolve(f"s3://{bucket}/m/").files] == ["a.bin"]
    whole = source.resolve(f"s3://{bucket}")
    assert [f.path for f in whole.files] == ["m/a.bin", "top.bin"]
    assert whole.lineage == f"s3://{bucket}"


def test_unversioned_bucket_pins_by_etag(s3_env: MotoS3, tmp_path: Path) -> None:
    bucket = s3_env.bucket(versioned=False)
    put = s3_env.put(bucket, "m/a.bin", b"alpha")

    (file,) = S3Source(source_settings(tmp_path)).resolve(f"s3://{bucket}/m").files

    assert file.locator == "m/a.bin?versionId="
    assert file.etag == put["ETag"]


def test_sha256_only_from_a_full_object_sha256_checksum(s3_env: MotoS3, tmp_path: Path) -> None:
    bucket = s3_env.bucket(versioned=True)
    s3_env.put(bucket, "m/checksummed.bin", b"with sha256", sha256=True)
    s3_env.put(bucket, "m/crc-only.bin", b"boto3's default CRC32 only", sha256=False)
    parts = [b"a" * 5 * 1024 * 1024, b"b" * 10]
    admin = s3_env.admin
    upload = admin.create_multipart_upload(
        Bucket=bucket, Key="m/multi.bin", ChecksumAlgorithm="SHA256"
    )
    done = []
    for number, part in enumerate(parts, start=1):
        sent = admin.upload_part(
            Bucket=bucket, Key="m/multi.bin", UploadId=upload["UploadId"], PartNumber=number,
            Body=part, ChecksumAlgorithm="SHA256",
        )  # fmt: skip
        done.append(
            {"PartNumber": number, "ETag": sent["ETag"], "ChecksumSHA256": sent["ChecksumSHA256"]}
        )
    admin.complete_multipart_upload(
        Bucket=bucket,
        Key="m/multi.bin",
        UploadId=upload["UploadId"],
        MultipartUpload={"Parts": done},
    )

    files = by_path(S3Source(source_settings(tmp_path)).resolve(f"s3://{bucket}/m"))

    assert files["checksummed.bin"].sha256 == sha256(b"with sha256")
    assert files["crc-only.bin"].sha256 is None
    # A multipart object's SHA256 is a hash of the parts' hashes, and its ETag is no MD5.
    assert files["multi.bin"].sha256 is None
    assert files["multi.bin"].etag is not None and files["multi.bin"].etag.endswith('-2"')


def test_minilm_resolves_and_streams_the_real_files(
    minilm_in_s3: ModelInS3, s3_env: MotoS3, tmp_path: Path
) -> None:
    source = S3Source(source_settings(tmp_path))

    model = source.resolve(minilm_in_s3.reference)

    local = {
        key.removeprefix(f"{minilm_in_s3.prefix}/"): path for key, path in minilm_in_s3.keys.items()
    }
    assert [f.path for f in model.files] == sorted(local)
    assert "1_Pooling/config.json" in local
    for file in model.files:
        data = local[file.path].read_bytes()
        assert file.size == len(data)
        streamed = read(source, model, file)
        assert sha256(streamed) == sha256(data), file.path
        if file.size > 8 * 1024 * 1024:  # multipart upload: no vouched digest
            assert file.sha256 is None
        else:
            assert file.sha256 == sha256(data)
    assert model.total_size == sum(p.stat().st_size for p in local.values())


def test_single_key_reference(s3_env: MotoS3, tmp_path: Path) -> None:
    bucket = s3_env.bucket(versioned=True)
    put = s3_env.put(bucket, "weights/model.safetensors", b"tensor bytes")
    source = S3Source(source_settings(tmp_path))

    model = source.resolve(f"s3://{bucket}/weights/model.safetensors")

    (file,) = model.files
    assert (file.path, file.size, file.sha256) == ("model.safetensors", 12, sha256(b"tensor bytes"))
    assert file.locator == f"weights/model.safetensors?versionId={put['VersionId']}"
    assert model.lineage == f"s3://{bucket}/weights/model.safetensors"
    assert read(source, model, file) == b"tensor bytes"
    assert source.resolve(model.pinned).revision == model.revision


def test_prefix_wins_over_an_object_of_the_same_name(s3_env: MotoS3, tmp_path: Path) -> None:
    bucket = s3_env.bucket(versioned=False)
    s3_env.put(bucket, "m", b"object")
    s3_env.put(bucket, "m/inner.bin", b"inner")

    model = S3Source(source_settings(tmp_path)).resolve(f"s3://{bucket}/m")

    assert [f.path for f in model.files] == ["inner.bin"]


def test_model_too_large_before_any_download(s3_env: MotoS3, tmp_path: Path) -> None:
    bucket = s3_env.bucket(versioned=False)
    s3_env.put(bucket, "m/a.bin", b"x" * 100)

    with pytest.raises(ModelTooLarge, match="100 bytes"):
        S3Source(source_settings(tmp_path, max_model_bytes=99)).resolve(f"s3://{bucket}/m")


@pytest.mark.parametrize(
    "key", ["m/../../etc/passwd", "m/a//b.bin", "m/./c.bin", "m/sub/..", "m//abs.bin", "m/a\\b"]
)
def test_hostile_keys_are_refused(s3_env: MotoS3, tmp_path: Path, key: str) -> None:
    bucket = s3_env.bucket(versioned=False)
    s3_env.put(bucket, "m/fine.bin", b"fine")
    s3_env.put(bucket, key, b"hostile")

    with pytest.raises(SourceError, match="refusing the file path") as caught:
        S3Source(source_settings(tmp_path)).resolve(f"s3://{bucket}/m")
    assert type(caught.value) is SourceError


def test_a_key_that_is_also_a_directory_is_refused(s3_env: MotoS3, tmp_path: Path) -> None:
    bucket = s3_env.bucket(versioned=False)
    s3_env.put(bucket, "m/a", b"a file")
    s3_env.put(bucket, "m/a/b.bin", b"a file under a file")

    with pytest.raises(SourceError, match="both a file and the directory"):
        S3Source(source_settings(tmp_path)).resolve(f"s3://{bucket}/m")


@pytest.mark.parametrize(
    "reference",
    ["s3:///prefix", "s3://bucket/m#sha256=abc", "s3://bucket/m#revision=md5:00", "https://x/y"],
)
def test_malformed_references(reference: str) -> None:
    with pytest.raises(UnsupportedReference):
        parse_reference(reference)


# --- pins and moved revisions ---------------------------------------------------------------


def test_versioned_overwrite_after_resolve_still_fetches_the_old_bytes(
    s3_env: MotoS3, tmp_path: Path
) -> None:
    bucket = s3_env.bucket(versioned=True)
    s3_env.put(bucket, "m/a.bin", b"original weights")
    source = S3Source(source_settings(tmp_path))
    model = source.resolve(f"s3://{bucket}/m")

    s3_env.put(bucket, "m/a.bin", b"tampered weights, longer")

    assert read(source, model, model.files[0]) == b"original weights"
    assert read(source, model, model.files[0], offset=9) == b"weights"


def test_unversioned_overwrite_after_resolve_is_a_moved_revision(
    s3_env: MotoS3, tmp_path: Path
) -> None:
    bucket = s3_env.bucket(versioned=False)
    s3_env.put(bucket, "m/a.bin", b"original weights")
    source = S3Source(source_settings(tmp_path))
    model = source.resolve(f"s3://{bucket}/m")

    s3_env.put(bucket, "m/a.bin", b"tampered weights")  # same size, new ETag

    with pytest.raises(RevisionMoved, match=r"a\.bin"):
        read(source, model, model.files[0])
    with pytest.raises(RevisionMoved):
        read(source, model, model.files[0], offset=3)


@pytest.mark.parametrize("versioned", [True, False])
@pytest.mark.parametrize("change", ["overwrite", "add", "delete"])
def test_pinned_reference_after_a_change_is_a_moved_revision(
    s3_env: MotoS3, tmp_path: Path, versioned: bool, change: str
) -> None:
    bucket = s3_env.bucket(versioned=versioned)
    s3_env.put(bucket, "m/a.bin", b"alpha")
    s3_env.put(bucket, "m/b.bin", b"beta")
    source = S3Source(source_settings(tmp_path))
    model = source.resolve(f"s3://{bucket}/m")
    assert source.resolve(model.pinned).revision == model.revision  # unchanged: same pin

    if change == "overwrite":
        s3_env.put(bucket, "m/a.bin", b"alpha")  # same bytes, still a new version / upload
    elif change == "add":
        s3_env.put(bucket, "m/c.bin", b"gamma")
    else:
        s3_env.admin.delete_object(Bucket=bucket, Key="m/b.bin")

    if versioned or change != "overwrite":
        with pytest.raises(RevisionMoved, match="changed since it was pinned"):
            source.resolve(model.pinned)
        assert source.resolve(model.lineage).revision != model.revision
    else:  # same bytes, same ETag, no versions: nothing tells the two uploads apart
        assert source.resolve(model.pinned).revision == model.revision


def test_deleted_object_leaves_the_listing(s3_env: MotoS3, tmp_path: Path) -> None:
    bucket = s3_env.bucket(versioned=True)
    s3_env.put(bucket, "m/a.bin", b"alpha")
    s3_env.put(bucket, "m/b.bin", b"beta")
    s3_env.admin.delete_object(Bucket=bucket, Key="m/b.bin")  # a delete marker on top

    model = S3Source(source_settings(tmp_path)).resolve(f"s3://{bucket}/m")

    assert [f.path for f in model.files] == ["a.bin"]


def test_without_list_versions_permission_pins_by_etag(
    s3_env: MotoS3, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    bucket = s3_env.bucket(versioned=True)
    s3_env.put(bucket, "m/a.bin", b"original weights")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3_env.lister.id)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_env.lister.secret)
    source = S3Source(source_settings(tmp_path))

    model = source.resolve(f"s3://{bucket}/m")
    assert model.files[0].locator == "m/a.bin?versionId="
    assert read(source, model, model.files[0]) == b"original weights"

    s3_env.put(bucket, "m/a.bin", b"tampered weights")
    with pytest.raises(RevisionMoved):
        read(source, model, model.files[0])


# --- streams --------------------------------------------------------------------------------


@pytest.mark.parametrize("versioned", [True, False])
def test_open_from_an_offset_resumes(s3_env: MotoS3, tmp_path: Path, versioned: bool) -> None:
    bucket = s3_env.bucket(versioned=versioned)
    data = bytes(range(256)) * 4096 + b"tail"  # 1 MiB + 4: more than one chunk
    s3_env.put(bucket, "m/w.bin", data)
    source = S3Source(source_settings(tmp_path))
    model = source.resolve(f"s3://{bucket}/m")
    (file,) = model.files

    assert read(source, model, file, offset=0) == data
    assert read(source, model, file, offset=1000) == data[1000:]
    assert read(source, model, file, offset=len(data) - 1) == b"l"
    assert read(source, model, file, offset=len(data)) == b""


def test_empty_object_streams_nothing(s3_env: MotoS3, tmp_path: Path) -> None:
    bucket = s3_env.bucket(versioned=True)
    s3_env.put(bucket, "m/empty.txt", b"")
    source = S3Source(source_settings(tmp_path))
    model = source.resolve(f"s3://{bucket}/m")

    assert [(f.path, f.size) for f in model.files] == [("empty.txt", 0)]
    assert read(source, model, model.files[0]) == b""


# --- not found, credentials -----------------------------------------------------------------


@pytest.mark.parametrize("what", ["missing bucket", "missing prefix", "missing key", "deleted key"])
def test_missing_things_are_not_found(s3_env: MotoS3, tmp_path: Path, what: str) -> None:
    bucket = s3_env.bucket(versioned=True)
    s3_env.put(bucket, "m/a.bin", b"alpha")
    s3_env.admin.delete_object(Bucket=bucket, Key="m/a.bin")
    s3_env.put(bucket, "other/b.bin", b"beta")
    reference = {
        "missing bucket": "s3://wg-no-such-bucket/m",
        "missing prefix": f"s3://{bucket}/nothing-here",
        "missing key": f"s3://{bucket}/other/c.bin",
        "deleted key": f"s3://{bucket}/m/a.bin",
    }[what]

    with pytest.raises(NotFound, match=re.escape(reference)):
        S3Source(source_settings(tmp_path)).resolve(reference)


def test_missing_version_when_opening_is_not_found(s3_env: MotoS3, tmp_path: Path) -> None:
    bucket = s3_env.bucket(versioned=True)
    s3_env.put(bucket, "m/a.bin", b"alpha")
    source = S3Source(source_settings(tmp_path))
    model = source.resolve(f"s3://{bucket}/m")
    versions = s3_env.admin.list_object_versions(Bucket=bucket)["Versions"]
    s3_env.admin.delete_object(Bucket=bucket, Key="m/a.bin", VersionId=versions[0]["VersionId"])

    with pytest.raises(NotFound, match=r"a\.bin"):
        read(source, model, model.files[0])


@pytest.mark.parametrize("credentials", ["unknown key", "wrong secret", "outside the policy"])
def test_refused_credentials_are_unauthorized(
    s3_env: MotoS3, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, credentials: str
) -> None:
    bucket = s3_env.bucket(versioned=True)
    s3_env.put(bucket, "m/a.bin", b"alpha")
    if credentials == "unknown key":
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAUNKNOWNKEY000000")
    elif credentials == "wrong secret":
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
    else:
        bucket = s3_env.bucket(versioned=True, prefix="locked-")
        s3_env.put(bucket, "m/a.bin", b"alpha")

    with pytest.raises(Unauthorized, match="AWS_ACCESS_KEY_ID"):
        S3Source(source_settings(tmp_path)).resolve(f"s3://{bucket}/m")


def test_no_credentials_at_all_is_unauthorized(
    s3_env: MotoS3, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    bucket = s3_env.bucket(versioned=True)
    isolate_aws_environment(monkeypatch, tmp_path)
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_env.endpoint)

    with pytest.raises(Unauthorized, match=r"set AWS_ACCESS_KEY_ID .* or AWS_PROFILE"):
        S3Source(source_settings(tmp_path)).resolve(f"s3://{bucket}/m")


def test_credentials_from_a_profile(
    s3_env: MotoS3, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    bucket = s3_env.bucket(versioned=True)
    s3_env.put(bucket, "m/a.bin", b"alpha")
    isolate_aws_environment(monkeypatch, tmp_path)
    (tmp_path / "aws-credentials").write_text(
        f"[models]\naws_access_key_id = {s3_env.reader.id}\n"
        f"aws_secret_access_key = {s3_env.reader.secret}\n"
    )
    (tmp_path / "aws-config").write_text(f"[profile models]\nendpoint_url = {s3_env.endpoint}\n")
    monkeypatch.setenv("AWS_PROFILE", "models")

    model = S3Source(source_settings(tmp_path)).resolve(f"s3://{bucket}/m")
    assert [f.path for f in model.files] == ["a.bin"]

    monkeypatch.setenv("AWS_PROFILE", "no-such-profile")
    with pytest.raises(Unauthorized, match="AWS_PROFILE"):
        S3Source(source_settings(tmp_path)).resolve(f"s3://{bucket}/m")


def test_credentials_from_irsa_web_identity(
    s3_env: MotoS3, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    iam = s3_env.client(s3_env.admin_key, "iam")
    provider = "arn:aws:iam::123456789012:oidc-provider/oidc.eks.example"
    trust = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"Federated": provider},
                "Action": "sts:AssumeRoleWithWebIdentity",
            }
        ],
    }
    role_name = f"model-reader-{tmp_path.name}"
    role = iam.create_role(RoleName=role_name, AssumeRolePolicyDocument=json.dumps(trust))
    allow = {"Effect": "Allow", "Action": ["s3:Get*", "s3:List*"], "Resource": "arn:aws:s3:::wg-*"}
    allow_objects = {**allow, "Resource": "arn:aws:s3:::wg-*/*"}
    policy = {"Version": "2012-10-17", "Statement": [allow, allow_objects]}
    iam.put_role_policy(RoleName=role_name, PolicyName="s3", PolicyDocument=json.dumps(policy))
    bucket = s3_env.bucket(versioned=True)
    s3_env.put(bucket, "m/a.bin", b"alpha")
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    (tmp_path / "token").write_text("eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzeXN0ZW0ifQ.c2ln")  # a JWT
    monkeypatch.setenv("AWS_ROLE_ARN", role["Role"]["Arn"])
    monkeypatch.setenv("AWS_WEB_IDENTITY_TOKEN_FILE", str(tmp_path / "token"))
    s3_env.enforce_auth(after_requests=1)  # the unsigned AssumeRoleWithWebIdentity

    model = S3Source(source_settings(tmp_path)).resolve(f"s3://{bucket}/m")

    assert [f.path for f in model.files] == ["a.bin"]
    locked = s3_env.bucket(versioned=True, prefix="locked-")
    s3_env.enforce_auth(after_requests=1)  # a new source, a new AssumeRoleWithWebIdentity
    with pytest.raises(Unauthorized):  # the role's policy is what moto checked
        S3Source(source_settings(tmp_path)).resolve(f"s3://{locked}/m")


# --- timeouts and server failures -----------------------------------------------------------


def test_unanswered_endpoint_times_out_quickly(
    s3_env: MotoS3, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, silent_port: int
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{silent_port}")
    started = time.monotonic()

    with pytest.raises(SourceTimeout, match="after 2 attempts"):
        S3Source(source_settings(tmp_path, timeout=0.2)).resolve("s3://wg-bucket/m")
    assert time.monotonic() - started < 3


def test_stopped_endpoint_is_unavailable_quickly(
    s3_env: MotoS3, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, refused_port: int
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{refused_port}")
    started = time.monotonic()

    with pytest.raises(SourceUnavailable, match="wg-bucket"):
        S3Source(source_settings(tmp_path, timeout=0.2)).resolve("s3://wg-bucket/m")
    assert time.monotonic() - started < 3


def test_server_errors_are_retried_once_per_setting_then_unavailable(
    s3_env: MotoS3,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    scripted_endpoint: Callable[[bytes, bool], ScriptedEndpoint],
) -> None:
    body = b"<Error><Code>ServiceUnavailable</Code><Message>busy</Message></Error>"
    endpoint = scripted_endpoint(http_response("503 Service Unavailable", {}, body, None), False)
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint.url)

    with pytest.raises(SourceUnavailable, match="ServiceUnavailable"):
        S3Source(source_settings(tmp_path, retries=2)).resolve("s3://wg-bucket/m")
    assert endpoint.requests == 3  # botocore's own retries are off: only the settings' count


def _model_at(reference: str, size: int) -> tuple[ResolvedModel, RemoteFile]:
    file = RemoteFile("a.bin", size, None, "m/a.bin?versionId=", '"etag"')
    return ResolvedModel(reference, reference, "sha256:00", reference, (file,)), file


@pytest.mark.parametrize("stall", [False, True])
def test_body_cut_short_or_stalled(
    s3_env: MotoS3,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    scripted_endpoint: Callable[[bytes, bool], ScriptedEndpoint],
    stall: bool,
) -> None:
    response = http_response("200 OK", {"ETag": '"etag"'}, b"only ten b", length=100)
    endpoint = scripted_endpoint(response, stall)
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint.url)
    source = S3Source(source_settings(tmp_path, timeout=0.3))
    model, file = _model_at("s3://wg-bucket/m", 100)

    expected = SourceTimeout if stall else TruncatedDownload
    started = time.monotonic()
    with pytest.raises(expected, match=r"a\.bin"):
        read(source, model, file)
    assert time.monotonic() - started < 3


def test_checksum_the_endpoint_sends_is_checked_while_streaming(
    s3_env: MotoS3,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    scripted_endpoint: Callable[[bytes, bool], ScriptedEndpoint],
) -> None:
    claimed = base64.b64encode(hashlib.sha256(b"the pinned bytes").digest()).decode()
    headers = {"ETag": '"etag"', "x-amz-checksum-sha256": claimed}
    endpoint = scripted_endpoint(http_response("200 OK", headers, b"other bytes", None), False)
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint.url)
    model, file = _model_at("s3://wg-bucket/m", len(b"other bytes"))

    with pytest.raises(DigestMismatch, match=r"a\.bin"):
        read(S3Source(source_settings(tmp_path)), model, file)


# --- end to end: weightgate.sources.fetch ---------------------------------------------------


def test_fetch_minilm_end_to_end(minilm_in_s3: ModelInS3, s3_env: MotoS3, tmp_path: Path) -> None:
    fetched = fetch(minilm_in_s3.reference, source_settings(tmp_path))

    local = {
        key.removeprefix(f"{minilm_in_s3.prefix}/"): path for key, path in minilm_in_s3.keys.items()
    }
    assert [f.path for f in fetched.files] == sorted(local)
    for file in fetched.files:
        expected = sha256(local[file.path].read_bytes())
        assert file.sha256 == expected, file.path
        assert sha256(file.blob.read_bytes()) == expected
    resolved = S3Source(source_settings(tmp_path)).resolve(minilm_in_s3.reference)
    assert fetched.revision == resolved.revision
    assert fetched.resolved.pinned == resolved.pinned


@pytest.mark.parametrize("versioned", [True, False])
def test_fetch_of_a_model_overwritten_after_resolve(
    s3_env: MotoS3, tmp_path: Path, versioned: bool
) -> None:
    bucket = s3_env.bucket(versioned=versioned)
    s3_env.put(bucket, "m/w.bin", b"original weights", sha256=False)
    resolved = S3Source(source_settings(tmp_path)).resolve(f"s3://{bucket}/m")

    s3_env.put(bucket, "m/w.bin", b"tampered weights", sha256=False)

    if versioned:
        (file,) = fetch(resolved, source_settings(tmp_path)).files
        assert file.sha256 == sha256(b"original weights")
    else:
        with pytest.raises(RevisionMoved, match=r"w\.bin"):
            fetch(resolved, source_settings(tmp_path))
