"""What can go wrong with keys, signatures and records.

Inputs that cannot be read (a key file that is not a key, a signature file that is not a
bundle, a store that cannot be written) are :class:`~weightgate.errors.InputError`: the check
could not run (exit 1). A signature, model or record that does not match what was signed is
:class:`~weightgate.errors.VerificationFailed` (exit 2, admission denied).
"""

from __future__ import annotations

from weightgate.errors import InputError, VerificationFailed


class KeyFileError(InputError):
    """A key file is missing, unreadable, encrypted without a password, or not a usable key."""


class MalformedBundle(InputError):
    """A signature or record file is not a Sigstore bundle of a DSSE envelope we can read."""


class UnsupportedSignature(InputError):
    """A readable signature in a form weightgate does not verify (e.g. shard serialization)."""


class StoreError(InputError):
    """The record store cannot be read or written."""


class SignatureInvalid(VerificationFailed):
    """The envelope's signature does not verify with the given key (or names another key)."""


class ModelMismatch(VerificationFailed):
    """The model's files differ from the signed manifest.

    Attributes:
        differences: One line per extra, missing or changed file.
    """

    def __init__(self, message: str, differences: list[str]) -> None:
        super().__init__(message)
        self.differences = differences


class MalformedPayload(VerificationFailed):
    """A signed payload is not the in-toto Statement it must be (signed, yet wrong)."""
