"""Scanner for ``keras_metadata.pb``, the Keras layer configs of a TensorFlow SavedModel.

A Keras model saved in the SavedModel format keeps each layer's config as JSON in this
file, and ``tf.keras.models.load_model`` rebuilds the layers from it: a ``Lambda`` layer's
marshalled bytecode travels here just as in an ``.h5`` file. Each node's JSON goes through
the same checks as ``config.json`` and ``.h5`` configs (:func:`scan_keras_config`).

Field numbers, from tensorflow/python/keras/protobuf/saved_metadata.proto::

    SavedMetadata.nodes = 1
    SavedObject.node_path = 3, SavedObject.identifier = 4, SavedObject.metadata = 5
"""

from __future__ import annotations

import json

from weightgate.formats.protobuf import ProtoField, ProtoReader
from weightgate.scan.context import ScanContext
from weightgate.scan.keras import CONFIG_UNREADABLE, scan_keras_config

_METADATA_NODES = 1
_OBJECT_NODE_PATH = 3
_OBJECT_METADATA = 5


def scan_keras_metadata(ctx: ScanContext, data: memoryview) -> None:
    """Check the Keras config of every node of a ``keras_metadata.pb``.

    Raises:
        FormatError: The bytes are not a valid protobuf message.
        LimitExceeded: A bound was reached.
    """
    reader = ProtoReader.within(data, ctx.limits)
    for node in reader.fields(0, len(data)):
        if node.number == _METADATA_NODES:
            reader.expect_len(node, "SavedMetadata.nodes")
            _scan_node(ctx, reader, node)


def _scan_node(ctx: ScanContext, reader: ProtoReader, node: ProtoField) -> None:
    path = "<unnamed node>"
    metadata: ProtoField | None = None
    for item in reader.submessage(node, 1, "SavedObject"):
        if item.number == _OBJECT_NODE_PATH:
            path = reader.text(item, "SavedObject.node_path")
        elif item.number == _OBJECT_METADATA:
            metadata = item
    if metadata is None:
        return
    text = reader.text(metadata, "SavedObject.metadata")
    if not text:
        return
    try:
        config = json.loads(text)
    except (ValueError, RecursionError) as exc:
        reason = str(exc) if isinstance(exc, ValueError) else "nested too deeply"
        ctx.report(
            CONFIG_UNREADABLE,
            f"metadata of {path} is not JSON ({reason}); its layers were not checked",
            offset=metadata.start,
            evidence=path,
        )
        return
    scan_keras_config(ctx, config, offset=metadata.start)
