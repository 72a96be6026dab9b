"""The KServe and Seldon CRDs of the shared corpus, as their projects install them.

KServe's `config/crd/full/` files install as they are. Seldon Core v1's
`operator/config/crd/bases/` file is controller-gen's raw output: the recursive inference graph
(`graph.children` holds more graph nodes) comes out as `items: {}`, which kube-apiserver rejects
("must not be empty for specified array items") because a structural schema cannot recurse.
Seldon's own kustomization patches those items before release (`patches/graph_children.yaml`);
here they become objects that keep unknown fields, so children are stored as given. Nothing else
is changed, and the patch insists on finding exactly what it expects.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

SELDON_DEPLOYMENTS = "seldondeployments.machinelearning.seldon.io"
GRAPH_CHILD_NODE = {"type": "object", "x-kubernetes-preserve-unknown-fields": True}


def load_crds(crds_dir: Path) -> list[dict[str, Any]]:
    """Every CustomResourceDefinition under `crds_dir`, patched where noted above."""
    crds = [
        doc
        for path in sorted(crds_dir.rglob("*.yaml"))
        # libyaml's loader: the pure-Python one takes ~10 s for these 7 MB
        for doc in yaml.load_all(path.read_text(), Loader=yaml.CSafeLoader)
        if doc and doc.get("kind") == "CustomResourceDefinition"
    ]
    if not crds:
        raise FileNotFoundError(f"no CustomResourceDefinitions under {crds_dir}")
    for crd in crds:
        if crd["metadata"]["name"] == SELDON_DEPLOYMENTS:
            _give_graph_children_a_schema(crd)
    return crds


def _give_graph_children_a_schema(crd: dict[str, Any]) -> None:
    for version in crd["spec"]["versions"]:
        schema = version["schema"]["openAPIV3Schema"]
        predictor = schema["properties"]["spec"]["properties"]["predictors"]["items"]
        children = predictor["properties"]["graph"]["properties"]["children"]
        if children.get("items") != {}:
            raise ValueError(
                f"{SELDON_DEPLOYMENTS} {version['name']}: graph.children.items is "
                f"{children.get('items')!r}, not the empty schema this patch expects"
            )
        children["items"] = dict(GRAPH_CHILD_NODE)
