"""NumPy ``.npy`` rules: object arrays are pickles, plain arrays must be the right size.

``.npz`` archives are zips; their ``.npy`` members come back here by content.
"""

from __future__ import annotations

from weightgate.errors import FormatError, LimitExceeded
from weightgate.formats import numpy as numpy_format
from weightgate.scan import pickle as pickle_scan
from weightgate.scan.context import ScanContext
from weightgate.scan.findings import Severity, rule

MALFORMED_HEADER = rule(
    "numpy.malformed-header",
    Severity.MEDIUM,
    "NumPy array header is invalid",
    "np.load rejects or misreads this header, and the scan cannot tell where the data "
    "is, so the file fails closed. Re-save the array with NumPy.",
)
OBJECT_ARRAY = rule(
    "numpy.object-array",
    Severity.INFO,
    "NumPy array of Python objects: its data is a pickle",
    "Loading it needs np.load(allow_pickle=True), which unpickles the data. The pickle "
    "was scanned like any other; prefer a numeric dtype where possible.",
)
TRUNCATED = rule(
    "numpy.truncated",
    Severity.MEDIUM,
    "NumPy array data is shorter than its header says",
    "The file is truncated or the header lies about the shape or dtype; loaders fail or "
    "misread it. Re-save the array.",
)
TRAILING_DATA = rule(
    "numpy.trailing-data",
    Severity.LOW,
    "Bytes after the NumPy array data",
    "np.load ignores them, but nothing should be there. Check how the file was written.",
)


def scan_npy(ctx: ScanContext, data: memoryview) -> None:
    """Scan a ``.npy`` file: header, then either the pickle or the data size."""
    try:
        header = numpy_format.read_npy_header(data, ctx.limits.max_header_bytes)
    except LimitExceeded:
        raise  # the context reports it under format.limit-exceeded
    except FormatError as exc:
        ctx.report(MALFORMED_HEADER, str(exc), offset=exc.offset)
        return
    start = header.data_offset
    available = len(data) - start
    if header.has_object:
        ctx.report(
            OBJECT_ARRAY,
            f"dtype {header.descr!r} holds Python objects; the pickle at offset {start:#x} "
            "was scanned",
            offset=start,
            evidence=str(header.descr),
        )
        with data[start:] as payload:
            pickle_scan.scan_pickle_stream(ctx, payload, base_offset=start, reroute=False)
        return
    expected = header.data_bytes
    if available < expected:
        ctx.report(
            TRUNCATED,
            f"shape {header.shape} of {header.dtype.str} needs {expected} bytes of data "
            f"from offset {start:#x}, but only {available} remain",
            offset=start,
        )
    elif available > expected:
        ctx.report(
            TRAILING_DATA,
            f"{available - expected} bytes follow the array data (ends at {start + expected:#x})",
            offset=start + expected,
        )
