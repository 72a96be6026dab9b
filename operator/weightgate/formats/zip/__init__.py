"""Reads zip archives leniently and within bounds: every member any loader could see.

Modules:

- ``central_directory``: :func:`read_zip`: the central directory, cross-checked with the
  local headers.
- ``walk``: the local-header walk and the search of the gaps between known entries.
- ``records``: the data model: signatures, flag bits, headers, entries and issues.
"""

from weightgate.formats.zip.central_directory import read_zip
from weightgate.formats.zip.records import (
    CENTRAL_SIG,
    DESCRIPTOR_SIG,
    EOCD_SIG,
    FLAG_DATA_DESCRIPTOR,
    FLAG_ENCRYPTED,
    FLAG_LZMA_EOS,
    FLAG_STRONG_ENCRYPTION,
    FLAG_UTF8,
    LOCAL_SIG,
    ODD_FLAGS,
    ZIP64_EOCD_SIG,
    ZIP64_LOCATOR_SIG,
    CentralRecord,
    HeaderFields,
    IssueKind,
    LocalHeader,
    Method,
    ZipEntry,
    ZipIssue,
    ZipListing,
)

__all__ = [
    "CENTRAL_SIG",
    "DESCRIPTOR_SIG",
    "EOCD_SIG",
    "FLAG_DATA_DESCRIPTOR",
    "FLAG_ENCRYPTED",
    "FLAG_LZMA_EOS",
    "FLAG_STRONG_ENCRYPTION",
    "FLAG_UTF8",
    "LOCAL_SIG",
    "ODD_FLAGS",
    "ZIP64_EOCD_SIG",
    "ZIP64_LOCATOR_SIG",
    "CentralRecord",
    "HeaderFields",
    "IssueKind",
    "LocalHeader",
    "Method",
    "ZipEntry",
    "ZipIssue",
    "ZipListing",
    "read_zip",
]
