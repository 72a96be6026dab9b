"""The pickled torch module inside a Keras 3 ``TorchModuleWrapper`` layer config.

``TorchModuleWrapper.get_config`` stores ``torch.save(module)`` base64-encoded in the
layer config, and ``from_config`` hands the decoded bytes to ``torch.load`` with
``weights_only=False`` (Keras before 3.11 does so even in safe mode). The bytes are decoded
exactly as Keras decodes them and scanned as an embedded member, so the pickle scanner
judges the module like any other checkpoint (a pickle of torch.nn classes passes, one that
names os.system fails).
"""

from __future__ import annotations

import base64
import binascii

from weightgate.formats.detect import FileFormat
from weightgate.scan.context import ScanContext

TORCH_LOADABLE = frozenset({FileFormat.ZIP, FileFormat.PICKLE, FileFormat.TAR})
"""What torch.load reads: the zip format, a bare pickle, the legacy tar format."""


def scan_torch_module(ctx: ScanContext, value: object, name: str) -> str | None:
    """Scan a TorchModuleWrapper's ``module`` config value as an embedded member.

    Args:
        ctx: The context of the config (findings of the module go to a member of it).
        value: The ``module`` entry of the layer config.
        name: The layer's name, used for the member path.

    Returns:
        Why the module could not be checked (the caller fails closed), or None.
    """
    raw = _decode(value)
    if raw is None:
        return (
            f"the embedded torch module could not be decoded ({type(value).__name__}); "
            "torch.load would read whatever it holds"
        )
    ctx.budget.uncompressed_bytes += len(raw)
    fmt = ctx.member(f"{name}.module").scan(raw, "module.pt")
    if fmt not in TORCH_LOADABLE:
        return (
            f"the embedded torch module is {fmt.value}, not a format weightgate can check; "
            "torch.load would still try it"
        )
    return None


def _decode(value: object) -> bytes | None:
    if isinstance(value, dict) and value.get("class_name") == "__bytes__":
        # Keras 3 before base64: serialize_keras_object's {"value": raw.decode("utf-8")}.
        inner = value.get("config")
        text = inner.get("value") if isinstance(inner, dict) else None
        return text.encode("utf-8", "surrogateescape") if isinstance(text, str) else None
    if not isinstance(value, str):
        return None
    try:
        # Non-validating, as Keras decodes it: characters outside the alphabet are
        # dropped, so they cannot hide the pickle from this decoder either.
        return base64.b64decode(value.encode("ascii"))
    except (UnicodeEncodeError, binascii.Error, ValueError):
        return None
