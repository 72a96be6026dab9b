"""Which source a reference's scheme goes to, and the schemes refused with what to do instead."""

from __future__ import annotations

from pathlib import Path

import pytest

from weightgate.sources import UnsupportedReference
from weightgate.sources.base import SourceSettings
from weightgate.sources.https import HttpsSource
from weightgate.sources.huggingface import HuggingFaceSource
from weightgate.sources.local import LocalSource
from weightgate.sources.mlflow import MlflowSource
from weightgate.sources.oci import OciSource
from weightgate.sources.registry import SOURCES, source_for
from weightgate.sources.s3 import S3Source

ROUTES = {
    "hf://org/name": HuggingFaceSource,
    "s3://bucket/prefix": S3Source,
    "models:/fraud/1": MlflowSource,
    "oci://r.io/m:v1": OciSource,
    "oci+fetch://r.io/m:v1": OciSource,
    "OCI+Native://r.io/m:v1": OciSource,
    "https://example.org/w.bin": HttpsSource,
    "file:///models/bert": LocalSource,
    "pvc://claim/bert": LocalSource,
}


@pytest.mark.parametrize(("reference", "expected"), ROUTES.items())
def test_each_scheme_goes_to_its_source(
    reference: str, expected: type[object], tmp_path: Path
) -> None:
    source = source_for(reference, SourceSettings(cache_dir=tmp_path))
    assert type(source) is expected
    assert reference.partition(":")[0].lower() in type(source).schemes


def test_every_registered_scheme_is_routed_here() -> None:
    assert {reference.partition(":")[0].lower() for reference in ROUTES} == set(SOURCES)


@pytest.mark.parametrize(
    ("reference", "advice"),
    [
        ("http://example.org/w.bin", "use https://"),
        ("gs://bucket/m", "S3-compatible endpoint"),
        ("ftp://example.org/w.bin", "unknown scheme 'ftp'"),
        ("no-scheme", "not a URI"),
    ],
)
def test_other_schemes_are_refused_saying_what_to_do(reference: str, advice: str) -> None:
    with pytest.raises(UnsupportedReference, match=advice):
        source_for(reference, SourceSettings())
