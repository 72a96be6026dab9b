"""Problems a reader finds in a file it could still read to the end.

Readers that keep going past a recoverable fault (an overlapping tensor, a duplicate key)
collect one :class:`Problem` per fault; each format's ``Fault`` enum names its rules, and
the scanner maps faults to rules with :meth:`weightgate.scan.context.ScanContext.report_problems`.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Generic, TypeVar

FaultT = TypeVar("FaultT", bound=enum.Enum)


@dataclass(frozen=True)
class Problem(Generic[FaultT]):
    """A problem found in a file that could still be read.

    Attributes:
        fault: Which rule it breaks.
        message: What was found.
        offset: Absolute file offset where it applies.
        evidence: The key, tensor or name concerned.
    """

    fault: FaultT
    message: str
    offset: int
    evidence: str | None = None
