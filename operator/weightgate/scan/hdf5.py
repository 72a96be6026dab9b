"""Scanner for HDF5 files: the Keras model config of a legacy ``.h5`` model.

The ``model_config`` and ``training_config`` root attributes are read with the bounded
reader in :mod:`weightgate.formats.hdf5` (never libhdf5, which has crashed on hostile
files) and checked by :func:`weightgate.scan.keras.scan_keras_config`. An HDF5 file
without them declares no model code.
"""

from __future__ import annotations

import json

from weightgate.formats.hdf5 import (
    Hdf5Attribute,
    Hdf5Bounds,
    UnsupportedHdf5,
    read_root_attributes,
)
from weightgate.scan.context import ScanContext
from weightgate.scan.findings import Severity, rule
from weightgate.scan.keras import CONFIG_UNREADABLE, scan_keras_config

NO_MODEL_CONFIG = rule(
    "hdf5.no-model-config",
    Severity.INFO,
    "HDF5 file without a Keras model config",
    "Plain HDF5 data (or Keras weights saved without the architecture) declares no layers, "
    "so there is no model code to check.",
)

H5_CONFIG_ATTRIBUTES = ("model_config", "training_config")
H5_KERAS_ATTRIBUTES = frozenset({*H5_CONFIG_ATTRIBUTES, "keras_version", "backend"})


def scan_hdf5(ctx: ScanContext, data: memoryview) -> None:
    """Scan an HDF5 file: the Keras model config in its root attributes, if any.

    Raises:
        FormatError: The HDF5 structures read are malformed.
        LimitExceeded: A size or count exceeds the limits.
    """
    limits = ctx.limits
    bounds = Hdf5Bounds(
        max_header_bytes=limits.max_header_bytes,
        max_string_bytes=min(limits.max_string_bytes, limits.max_json_bytes),
        max_messages=limits.max_metadata_entries,
    )
    try:
        root = read_root_attributes(data, bounds, H5_KERAS_ATTRIBUTES)
    except UnsupportedHdf5 as exc:
        ctx.report(
            CONFIG_UNREADABLE,
            f"root attributes not read: unsupported HDF5 feature ({exc})",
            offset=exc.offset,
        )
        return
    if root.unreadable:
        more = f" (and {len(root.unreadable) - 1} more)" if len(root.unreadable) > 1 else ""
        ctx.report(
            CONFIG_UNREADABLE,
            f"root attributes not read: {root.unreadable[0]}{more}; libhdf5 would read a "
            "model_config from there",
        )
    found = False
    for name in H5_CONFIG_ATTRIBUTES:
        attribute = root.attributes.get(name)
        if attribute is not None:
            found = True
            config = _attribute_json(ctx, attribute)
            if config is not None:
                scan_keras_config(ctx, config, offset=attribute.offset)
    if not found and not root.unreadable:
        keras = "keras_version" in root.attributes or "backend" in root.attributes
        ctx.report(
            NO_MODEL_CONFIG,
            "Keras weights without a model config: no layers or code declared"
            if keras
            else "no model_config root attribute (plain HDF5 data or weights): no model "
            "code to check",
        )


def _attribute_json(ctx: ScanContext, attribute: Hdf5Attribute) -> object | None:
    problem = attribute.problem
    config: object = None
    if attribute.values is None:
        problem = problem or "no value"
    elif len(attribute.values) != 1:
        problem = f"{len(attribute.values)} strings where Keras stores one"
    else:
        try:
            config = json.loads(attribute.values[0])
        except (ValueError, RecursionError) as exc:
            problem = f"not JSON ({str(exc)[:100]})"
    if problem is not None:
        ctx.report(
            CONFIG_UNREADABLE,
            f"root attribute {attribute.name!r} could not be read: {problem}",
            offset=attribute.offset,
            evidence=attribute.name,
        )
        return None
    return config
