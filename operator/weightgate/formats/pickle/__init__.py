"""Reads pickle streams (protocols 0-5, joblib, dill, legacy PyTorch) without loading them.

Modules:

- ``stream``: the entry points: walk every pickle of a stream, read one, find embedded ones.
- ``machine``: the bounded pickle virtual machine (CPython's Unpickler, minus every call).
- ``kit``: state, limits and helpers shared by the opcode handlers of one machine.
- ``ops_values``: opcode handlers that push constants.
- ``ops_stack``: opcode handlers that shape the stack, the memo and the framing.
- ``ops_calls``: opcode handlers that import and call (GLOBAL, REDUCE, BUILD ...).
- ``trace``: what a walk produces: emulated values and the trace of one stream.
- ``joblib``: where joblib puts array bytes inside a pickle stream.
"""

from weightgate.formats.pickle.kit import WalkLimits, walk_limits
from weightgate.formats.pickle.stream import (
    TORCH_LEGACY_MAGIC,
    SinglePickle,
    embedded_pickle,
    read_single_pickle,
    walk_stream,
)

__all__ = [
    "TORCH_LEGACY_MAGIC",
    "SinglePickle",
    "WalkLimits",
    "embedded_pickle",
    "read_single_pickle",
    "walk_limits",
    "walk_stream",
]
