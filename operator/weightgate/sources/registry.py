"""URI scheme -> source implementation.

A source is imported only when a reference needs it: each pulls in its own client library
(huggingface_hub, boto3, oras, ...).
"""

from __future__ import annotations

import importlib

from weightgate.sources.base import Source, SourceSettings
from weightgate.sources.errors import UnsupportedReference

SOURCES: dict[str, str] = {
    "hf": "weightgate.sources.huggingface:HuggingFaceSource",
    "s3": "weightgate.sources.s3:S3Source",
    "models": "weightgate.sources.mlflow:MlflowSource",  # models:/name/1 (MLflow)
    "oci": "weightgate.sources.oci:OciSource",
    "oci+fetch": "weightgate.sources.oci:OciSource",  # KServe's spellings of the same thing
    "oci+native": "weightgate.sources.oci:OciSource",
    "https": "weightgate.sources.https:HttpsSource",
    "file": "weightgate.sources.local:LocalSource",
    "pvc": "weightgate.sources.local:LocalSource",
}

UNSUPPORTED: dict[str, str] = {
    "http": "plain http:// cannot be trusted in transit; use https://",
    "gs": "gs:// is not supported yet; serve the bucket through its S3-compatible endpoint "
    "(s3:// with AWS_ENDPOINT_URL=https://storage.googleapis.com and HMAC keys)",
}


def scheme_of(reference: str) -> str:
    """The lower-cased scheme of `reference` (`models` for `models:/name/1`)."""
    scheme, separator, _ = reference.partition(":")
    if not separator or not scheme:
        raise UnsupportedReference(f"{reference}: not a URI (expected scheme://...)")
    return scheme.lower()


def source_for(reference: str, settings: SourceSettings) -> Source:
    """The source that handles `reference`, constructed with `settings`."""
    scheme = scheme_of(reference)
    if scheme in UNSUPPORTED:
        raise UnsupportedReference(f"{reference}: {UNSUPPORTED[scheme]}")
    target = SOURCES.get(scheme)
    if target is None:
        known = ", ".join(f"{name}:" for name in sorted(SOURCES))
        raise UnsupportedReference(f"{reference}: unknown scheme {scheme!r} (supported: {known})")
    module_name, _, class_name = target.partition(":")
    source: Source = getattr(importlib.import_module(module_name), class_name)(settings)
    return source
