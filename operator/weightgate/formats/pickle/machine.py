"""A bounded pickle virtual machine: CPython's Unpickler, minus every call.

The machine decodes one pickle opcode at a time straight from a memoryview (zero copy
over an mmap) and applies it to an emulated stack, mark list and memo exactly as
``pickle._Unpickler`` / ``_pickle.c`` would, except that imports and calls are recorded
instead of performed (see :mod:`weightgate.formats.pickle.trace` for the stand-in
values). It is written for hostile input:

* every length read from the stream is compared with the bytes that remain *before*
  anything is sliced, so ``BINBYTES8 2**63`` is a precise error, not a MemoryError;
* opcodes, stack items and memo entries are bounded (:class:`WalkLimits`); the opcode
  bound is enforced by the loop itself, the others every few thousand opcodes;
* a failure stops the pickle where CPython's loader would stop, and everything recorded
  before it stays in the trace (a truncated stream is still judged by what it imports).

``pickletools.genops`` is not used because it reads through a file object one call at a
time, trusts declared lengths (``read(n)`` with ``n`` from the file), has no memo or
stack semantics, and stops without partial state on the first error.

Dispatch goes through a 256-entry table of closures (built by the ``ops_*``
modules) that share the machine's stack and memo as cell variables; the loop is
``pos = table[view[pos]](pos + 1)``, so the per-opcode cost stays close to that of a list
index and a call.
"""

from __future__ import annotations

import struct

from weightgate.formats.pickle import joblib as pickle_joblib
from weightgate.formats.pickle.kit import (
    HIGHEST_PROTOCOL,
    OPCODE_NAMES,
    Handler,
    Stopped,
    WalkLimits,
    WalkStop,
    make_kit,
)
from weightgate.formats.pickle.ops_calls import call_handlers
from weightgate.formats.pickle.ops_stack import stack_handlers
from weightgate.formats.pickle.ops_values import value_handlers
from weightgate.formats.pickle.trace import ErrorKind, Instance, PickleTrace, WalkError

__all__ = [
    "HIGHEST_PROTOCOL",
    "OPCODE_NAMES",
    "PickleMachine",
    "WalkBudget",
    "WalkLimits",
    "WalkStop",
]

_CHECK_EVERY = 4096  # opcodes between checks of the stack and memo bounds


class WalkBudget:
    """Counters shared by every machine that walks the same stream."""

    def __init__(self, limits: WalkLimits) -> None:
        self.opcodes_left = limits.max_opcodes
        self.fork_items_left = 4 * limits.max_stack_items

    def used(self, limits: WalkLimits) -> int:
        """Opcodes executed so far."""
        return limits.max_opcodes - self.opcodes_left


class PickleMachine:
    """Executes one pickle at a time over ``view``; records into ``trace``.

    Args:
        view: The stream (a 1-D unsigned-byte memoryview).
        base: Added to every offset recorded (where ``view`` starts in the file).
        trace: Where imports, calls and candidate strings are recorded.
        limits: Walk bounds.
        budget: Counters shared with the other machines of the stream.
        joblib: Emulate ``joblib.load`` (array bytes inline after NumpyArrayWrapper).
        inherited: Memo of earlier pickles in the stream (an ``Unpickler`` reused for
            several ``load()`` calls keeps its memo), consulted on a memo miss.
    """

    def __init__(
        self,
        view: memoryview,
        base: int,
        trace: PickleTrace,
        limits: WalkLimits,
        budget: WalkBudget,
        *,
        joblib: bool = True,
        inherited: dict[int, object] | None = None,
    ) -> None:
        self.view = view
        self.end = len(view)
        self.base = base
        self.trace = trace
        self.limits = limits
        self.budget = budget
        self.joblib = joblib
        self.inherited: dict[int, object] = inherited if inherited is not None else {}
        self.stack: list[object] = []
        self.marks: list[int] = []
        self.memo: dict[int, object] = {}
        self.proto = 0
        self.frame_end = -1
        self._table = self._build_table()

    def run(self, pos: int) -> tuple[int, object]:
        """Execute the pickle starting at ``pos``.

        Returns:
            The offset just after STOP, and the value STOP popped.

        Raises:
            WalkStop: The pickle cannot be executed to its STOP.
        """
        table, view, stack, memo = self._table, self.view, self.stack, self.memo
        budget, limits = self.budget, self.limits
        start = pos
        while True:
            chunk = min(_CHECK_EVERY, budget.opcodes_left)
            if chunk <= 0:
                raise WalkStop(
                    self._error(
                        pos,
                        f"more than {limits.max_opcodes} opcodes "
                        "(limits.max_pickle_opcodes); the rest was not examined",
                        "limit",
                    )
                )
            done = 0
            try:
                for done in range(1, chunk + 1):  # noqa: B007 - done counts opcodes
                    pos = table[view[pos]](pos + 1)
            except Stopped as stop:
                budget.opcodes_left -= done
                return stop.end, stop.value
            except WalkStop:
                budget.opcodes_left -= done
                raise
            except IndexError:
                budget.opcodes_left -= done
                raise WalkStop(self._truncated(pos, start)) from None
            except (ValueError, OverflowError, struct.error) as exc:
                budget.opcodes_left -= done
                name = OPCODE_NAMES.get(view[pos], "opcode")
                raise WalkStop(self._error(pos, f"{name}: {exc}")) from None
            budget.opcodes_left -= done
            if len(stack) > limits.max_stack_items:
                raise WalkStop(
                    self._error(
                        pos,
                        f"more than {limits.max_stack_items} stack items "
                        "(limits.max_pickle_stack_items)",
                        "limit",
                    )
                )
            if len(memo) > limits.max_memo_entries:
                raise WalkStop(
                    self._error(
                        pos,
                        f"more than {limits.max_memo_entries} memo entries "
                        "(limits.max_pickle_memo_entries)",
                        "limit",
                    )
                )

    def _error(self, pos: int, message: str, kind: ErrorKind = "malformed") -> WalkError:
        return WalkError(self.base + pos, message, kind)

    def _truncated(self, pos: int, start: int) -> WalkError:
        if pos >= self.end:
            return self._error(
                pos, f"the stream ends without a STOP opcode (pickle at {self.base + start:#x})"
            )
        name = OPCODE_NAMES.get(self.view[pos], "opcode")
        return self._error(pos, f"{name}: the stream ends inside the opcode")

    def fork(self, pos: int, joblib: bool) -> PickleMachine:
        """A machine that continues from this one's state along another reading."""
        other = PickleMachine(
            self.view, self.base, self.trace, self.limits, self.budget,
            joblib=joblib, inherited={**self.inherited, **self.memo},
        )  # fmt: skip
        self.budget.fork_items_left -= len(self.stack)
        if self.budget.fork_items_left < 0:
            raise WalkStop(
                self._error(pos, "too many alternative readings of joblib array data", "limit")
            )
        other.stack[:] = self.stack
        other.marks[:] = self.marks
        other.proto = self.proto
        return other

    def _build_table(self) -> list[Handler]:
        kit = make_kit(
            self.view,
            base=self.base,
            trace=self.trace,
            limits=self.limits,
            stack=self.stack,
            marks=self.marks,
            memo=self.memo,
            inherited=self.inherited,
        )
        view, fail = self.view, kit.fail

        def h_unknown(p: int) -> int:
            raise fail(p - 1, f"unknown opcode {view[p - 1]:#04x}")

        handlers = {
            **value_handlers(kit),
            **stack_handlers(kit, self),
            **call_handlers(kit, self),
        }
        table: list[Handler] = [h_unknown] * 256
        for code, name in OPCODE_NAMES.items():
            table[code] = handlers[name]
        return table

    def skip_joblib_array(self, p: int, wrapper: Instance) -> int:
        """Step over the array bytes ``joblib.dump`` writes right after a wrapper's BUILD.

        ``joblib.load`` reads them from the file with ``file.read`` (see joblib's
        ``NumpyArrayWrapper.read_array``), while ``pickle.load`` would execute them as
        opcodes. Both readings are walked: a plain pickle machine continues here, and this
        one resumes after the array.

        Returns:
            The offset where the joblib reading resumes.
        """
        op = p - 1
        # With alignment (joblib >= 1.2) the next byte is a padding length of 1..16, which
        # is no opcode, so pickle.load would stop there; older files go straight to data.
        if p < self.end and self.view[p] in OPCODE_NAMES:
            plain = self.fork(op, joblib=False)
            try:
                plain.run(p)
            except WalkStop as stop:
                if stop.error.kind == "limit":
                    raise
        layout = pickle_joblib.array_layout(wrapper.state)
        if layout.error is not None:
            raise WalkStop(self._error(op, f"joblib array after BUILD: {layout.error}", "joblib"))
        if 0 <= p < self.frame_end:
            raise WalkStop(
                self._error(op, "joblib array data starts inside a pickle frame", "joblib")
            )
        if layout.nbytes is None:
            # Object arrays are a complete nested pickle, read by a fresh Unpickler.
            nested = PickleMachine(
                self.view, self.base, self.trace, self.limits, self.budget, joblib=True
            )
            end, _ = nested.run(p)
            return end
        start = p
        if layout.aligned:
            if p >= self.end:
                raise WalkStop(self._error(op, "joblib array padding is missing", "joblib"))
            start = p + 1 + self.view[p]
        if layout.nbytes > self.end - start:
            raise WalkStop(
                self._error(
                    op,
                    f"joblib array declares {layout.nbytes} bytes at {self.base + start:#x} "
                    f"but only {max(0, self.end - start)} remain",
                    "joblib",
                )
            )
        return start + layout.nbytes
