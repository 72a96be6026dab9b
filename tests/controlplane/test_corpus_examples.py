"""Every KServe and Seldon example manifest in the corpus is accepted by a real kube-apiserver
against the installed CRDs, and stored with its spec intact but for fields the schema lacks,
which must be exactly the known upstream defects below."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import CORPUS
from tests.controlplane.cluster import ControlPlane

EXAMPLES_DIR = CORPUS / "examples"
# An absent corpus yields one parameter that fails, never an empty (skipped) parametrization.
EXAMPLES = sorted(EXAMPLES_DIR.rglob("*.yaml")) or [EXAMPLES_DIR / "(no examples found)"]


# Fields the upstream examples set but their CRD's schema does not have: kubectl's default
# (--validate=strict) rejects these files, so they are applied with --validate=warn and the
# server prunes exactly these fields, with a warning.
UNKNOWN_FIELDS = {
    # `nodeName` belongs in the predictor (a PodSpec field), not at the top of the spec
    "kserve/v1beta1/torchserve/v1/bloom/bloom-560m.yaml": {"spec.nodeName"},
}
UNKNOWN_FIELD_WARNING = re.compile(r'unknown field "([^"]+)"')


def documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def is_subset(expected: Any, actual: Any) -> bool:
    """Every value in `expected` is in `actual`: the server may add defaults, and drops nulls
    (a schema without `nullable` stores `key: null` as an absent key), but changes nothing."""
    if isinstance(expected, dict):
        return isinstance(actual, dict) and all(
            is_subset(value, actual[key]) if key in actual else value is None
            for key, value in expected.items()
        )
    if isinstance(expected, list):
        return (
            isinstance(actual, list)
            and len(expected) == len(actual)
            and all(is_subset(e, a) for e, a in zip(expected, actual, strict=True))
        )
    return bool(expected == actual)


def without(doc: dict[str, Any], dotted_paths: set[str]) -> dict[str, Any]:
    trimmed = copy.deepcopy(doc)
    for dotted in dotted_paths:
        *parents, leaf = dotted.split(".")
        node = trimmed
        for key in parents:
            node = node[key]
        del node[leaf]
    return trimmed


def test_the_corpus_has_examples_of_both_projects() -> None:
    kinds = {doc["kind"] for path in EXAMPLES for doc in documents(path)}
    assert {"InferenceService", "SeldonDeployment", "Model"} <= kinds


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: str(p.relative_to(EXAMPLES_DIR)))
def test_example_is_accepted(control_plane: ControlPlane, namespace: str, example: Path) -> None:
    name = str(example.relative_to(EXAMPLES_DIR))
    docs = documents(example)
    # Manifests that name their namespace (kserve-test) go there; the rest into a fresh one.
    target = next((d["metadata"]["namespace"] for d in docs if "namespace" in d["metadata"]), None)
    if target is None:
        target = namespace
    else:
        control_plane.kubectl(
            "apply",
            "-f",
            "-",
            input=json.dumps(
                {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": target}}
            ),
        )

    try:
        applied = control_plane.kubectl(
            "apply", "--validate=warn", "-n", target, "-f", str(example), check=False
        )
        assert applied.returncode == 0, applied.stderr
        unknown = set(UNKNOWN_FIELD_WARNING.findall(applied.stderr))
        assert unknown == UNKNOWN_FIELDS.get(name, set()), applied.stderr

        for doc in docs:
            group = doc["apiVersion"].split("/")[0]
            stored = json.loads(
                control_plane.kubectl(
                    "get", f"{doc['kind'].lower()}.{group}", doc["metadata"]["name"],
                    "-n", target, "-o", "json",
                ).stdout
            )  # fmt: skip
            expected = without(doc, unknown)
            assert stored["apiVersion"] == doc["apiVersion"]
            assert is_subset(expected["spec"], stored["spec"]), (
                f"the server changed or pruned the spec of {name}:\n"
                f"applied {json.dumps(expected['spec'])}\nstored  {json.dumps(stored['spec'])}"
            )
    finally:
        control_plane.kubectl("delete", "-n", target, "-f", str(example), "--ignore-not-found")
