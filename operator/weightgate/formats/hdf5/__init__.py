"""Reads the root-group attributes of an HDF5 file (Keras ``.h5``) without libhdf5.

Modules:

- ``root_attributes``: :func:`read_root_attributes`: superblock, root group, attributes.
- ``object_header``: the messages of an object header, with continuation blocks.
- ``heap``: objects of global heap collections, where variable-length strings live.
- ``reader``: bounded little-endian reads and the limits the reader obeys.
"""

from weightgate.formats.hdf5.reader import Hdf5Bounds, UnsupportedHdf5
from weightgate.formats.hdf5.root_attributes import (
    CLASS_STRING,
    CLASS_VLEN,
    MAX_RANK,
    SIGNATURE,
    VLEN_TYPE_STRING,
    Hdf5Attribute,
    RootAttributes,
    read_root_attributes,
)

__all__ = [
    "CLASS_STRING",
    "CLASS_VLEN",
    "MAX_RANK",
    "SIGNATURE",
    "VLEN_TYPE_STRING",
    "Hdf5Attribute",
    "Hdf5Bounds",
    "RootAttributes",
    "UnsupportedHdf5",
    "read_root_attributes",
]
