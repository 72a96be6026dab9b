"""The four ways a weightgate operation can go wrong, kept apart on purpose.

* :class:`FormatError`: the bytes are not what their format requires. A reader raises it,
  a scanner turns it into a finding (the model is bad: deny).
* :class:`InputError`: the caller asked for something that cannot be done (a path that
  does not exist, an unreadable file, bad arguments). The CLI exits 1.
* :class:`VerificationFailed`: bytes, a signature or a record are not what was pinned or
  signed. The gate fails: the CLI exits 2, admission is denied.
* Any other exception is a bug in weightgate; callers fail closed with its message.
"""


class WeightgateError(Exception):
    """Base class of every error weightgate raises on purpose."""


class FormatError(WeightgateError):
    """Bytes that break the rules of their format.

    Attributes:
        offset: Byte offset in the file (or archive member) where the problem was found,
            when known.
    """

    def __init__(self, message: str, offset: int | None = None) -> None:
        super().__init__(message)
        self.offset = offset


class LimitExceeded(FormatError):
    """A size or count read from the file exceeds a configured limit.

    Kept as a subclass of FormatError so readers can raise it anywhere they would raise a
    FormatError, while scanners can still report it under its own rule.
    """


class InputError(WeightgateError):
    """The operation could not start or complete (missing path, I/O error, bad usage)."""


class VerificationFailed(WeightgateError):
    """Bytes, a signature or a record are not the ones that were pinned or signed (exit 2)."""
