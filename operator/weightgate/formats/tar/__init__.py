"""Reads tar archives over a memoryview within bounds, and legacy PyTorch tar checkpoints.

Modules:

- ``listing``: :func:`read_tar`: the members, parsed by stdlib :mod:`tarfile` within bounds.

Whether tarfile would take a file for a tar at all (magic or not) is decided at detection,
by :func:`weightgate.formats.detect.is_tar_header`.
- ``legacy_torch``: where the pickles of a legacy (torch < 0.4) checkpoint's members lie.

7z archives are read by :mod:`weightgate.formats.sevenzip`; its entry points are
re-exported here too.
"""

from weightgate.formats.sevenzip import SevenZipMember, read_7z
from weightgate.formats.tar.legacy_torch import (
    LEGACY_TORCH_MEMBERS,
    LegacyRecords,
    legacy_torch_pickles,
)
from weightgate.formats.tar.listing import (
    MemberKind,
    TarListing,
    TarMember,
    read_tar,
)

__all__ = [
    "LEGACY_TORCH_MEMBERS",
    "LegacyRecords",
    "MemberKind",
    "SevenZipMember",
    "TarListing",
    "TarMember",
    "legacy_torch_pickles",
    "read_7z",
    "read_tar",
]
