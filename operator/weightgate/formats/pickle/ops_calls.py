"""Opcode handlers that import and call: GLOBAL, STACK_GLOBAL, EXT, REDUCE, BUILD...

Nothing is imported or called. A global becomes a
:class:`~weightgate.formats.pickle.trace.GlobalRef` recorded in the trace, a call an
:class:`~weightgate.formats.pickle.trace.Instance` plus a call site. Names are decoded the
way CPython does (UTF-8 for GLOBAL, ASCII for INST, str operands for STACK_GLOBAL) and
must be dotted identifiers, or the import would fail there too. A STACK_GLOBAL whose
operands were computed at load time is recorded as a non-constant global.
"""

from __future__ import annotations

import copyreg
from typing import TYPE_CHECKING

from weightgate.formats.pickle import joblib as pickle_joblib
from weightgate.formats.pickle.kit import (
    I32,
    U16,
    Handler,
    Kit,
    WalkStop,
    describe,
    valid_dotted_name,
)
from weightgate.formats.pickle.trace import (
    ArrayFile,
    CallSite,
    DictValue,
    GlobalRef,
    Instance,
    Opaque,
    Persistent,
    WalkError,
)

if TYPE_CHECKING:
    from weightgate.formats.pickle.machine import PickleMachine


def call_handlers(kit: Kit, machine: PickleMachine) -> dict[str, Handler]:
    """The handlers of the import, call and persistent-id opcodes."""
    view, base, trace = kit.view, kit.base, kit.trace
    stack, push, pop = kit.stack, kit.stack.append, kit.stack.pop
    need, fail, underflow, fence = kit.need, kit.fail, kit.underflow, kit.fence
    pop_mark, readline, call, mutate = kit.pop_mark, kit.readline, kit.call, kit.mutate
    new_global, text_of = kit.new_global, kit.text_of
    calls = trace.calls.append

    def result(func: object, args: object, op: int, kind: str) -> object:
        # What the call leaves on the stack. numpy's scalar() with the object dtype hands
        # back its second argument: an imported global stays one (so a later BUILD on it
        # is still a mutation of the global).
        instance = call(func, args, op, kind)
        if (
            type(func) is GlobalRef
            and func.constant
            and func.dotted in pickle_joblib.SCALAR_FUNCTIONS
            and pickle_joblib.scalar_passes_through(args)
        ):
            return args[1]  # type: ignore[index]
        return instance

    def h_ext(width: int) -> Handler:
        def handler(p: int) -> int:
            need(p, width, p - 1)
            if width == 1:
                code = view[p]
            elif width == 2:
                code = U16(view, p)[0]
            else:
                code = I32(view, p)[0]
            if code <= 0:
                raise fail(p - 1, f"extension code {code} is not positive")
            how = f"EXT{width}"
            key = copyreg._inverted_registry.get(code)  # type: ignore[attr-defined]
            if key:
                push(new_global(p - 1, str(key[0]), str(key[1]), how))
            else:
                ref = new_global(p - 1, "", f"<extension code {code}>", how)
                ref.ext_code = code
                ref.resolved = False
                push(ref)
            return p + width

        return handler

    def read_names(p: int, encoding: str) -> tuple[str, str, int]:
        module_raw, q = readline(p)
        name_raw, q = readline(q)
        module = module_raw.decode(encoding)
        name = name_raw.decode(encoding)
        if not (valid_dotted_name(module) and valid_dotted_name(name)):
            raise fail(p - 1, f"{module[:60]!r} {name[:60]!r} is not an importable name")
        return module, name, q

    def h_global(p: int) -> int:
        module, name, q = read_names(p, "utf-8")
        push(new_global(p - 1, module, name, "GLOBAL"))
        return q

    def h_stack_global(p: int) -> int:
        if len(stack) - fence() < 2:
            raise underflow(p - 1)
        name_value = pop()
        module_value = pop()
        module, name = text_of(module_value), text_of(name_value)
        if module is not None and name is not None:
            if not (valid_dotted_name(module) and valid_dotted_name(name)):
                raise fail(p - 1, f"{module[:60]!r} {name[:60]!r} is not an importable name")
            push(new_global(p - 1, module, name, "STACK_GLOBAL"))
            return p
        computed = (GlobalRef, Instance, Persistent, Opaque)
        if (module is None and not isinstance(module_value, computed)) or (
            name is None and not isinstance(name_value, computed)
        ):
            raise fail(p - 1, "STACK_GLOBAL requires str operands")
        ref = new_global(p - 1, module or "<computed>", name or "<computed>", "STACK_GLOBAL")
        ref.constant = False
        ref.origin = f"module: {describe(module_value)}; name: {describe(name_value)}"
        push(ref)
        return p

    def h_inst(p: int) -> int:
        module, name, q = read_names(p, "ascii")
        ref = new_global(p - 1, module, name, "INST")
        push(result(ref, tuple(pop_mark(p - 1)), p - 1, "INST"))
        return q

    def h_obj(p: int) -> int:
        items = pop_mark(p - 1)
        if not items:
            raise underflow(p - 1)
        push(result(items[0], tuple(items[1:]), p - 1, "OBJ"))
        return p

    def h_reduce(p: int) -> int:
        if len(stack) - fence() < 2:
            raise underflow(p - 1)
        args = pop()
        func = pop()
        push(result(func, args, p - 1, "REDUCE"))
        return p

    def h_newobj(p: int) -> int:
        if len(stack) - fence() < 2:
            raise underflow(p - 1)
        args = pop()
        cls = pop()
        push(call(cls, args, p - 1, "NEWOBJ"))
        return p

    def h_newobj_ex(p: int) -> int:
        if len(stack) - fence() < 3:
            raise underflow(p - 1)
        kwargs = pop()
        args = pop()
        cls = pop()
        push(call(cls, (args, kwargs), p - 1, "NEWOBJ_EX"))
        return p

    def h_build(p: int) -> int:
        if len(stack) - fence() < 1 or len(stack) < 2:
            raise underflow(p - 1)
        state = pop()
        inst = stack[-1]
        if type(inst) is not Instance:
            mutate(inst, p - 1, "BUILD")
            return p
        # A dict state updates the instance's attributes; joblib reads the merged ones.
        inst.state = pickle_joblib.merged_state(inst.state, state)
        func = inst.func
        calls(CallSite("BUILD", func if type(func) is GlobalRef else None, base + p - 1))
        if not machine.joblib:
            return p
        kind = pickle_joblib.wrapper_kind(inst)
        if kind.problem is not None:
            raise WalkStop(WalkError(base + p - 1, f"BUILD: {kind.problem}", "joblib"))
        if kind.dotted == pickle_joblib.ARRAY_WRAPPER:
            return machine.skip_joblib_array(p, inst)
        if kind.dotted == pickle_joblib.FILE_WRAPPER:
            trace.array_files.append(ArrayFile(base + p - 1, wrapper_filename(kind, state)))
        return p

    def wrapper_filename(kind: pickle_joblib.WrapperKind, state: object) -> str | None:
        # NDArrayWrapper.__init__(filename, subclass, allow_mmap); BUILD then sets
        # __dict__ from a dict state and attributes from a (dict, slots) state.
        value: object = None
        if kind.init_args:
            value = kind.init_args[0]
        parts = state if type(state) is tuple and len(state) == 2 else (state,)
        for part in parts:
            if type(part) is DictValue:
                if part.has("filename"):
                    value = part.lookup("filename")
            elif part is not None:
                return None
        return text_of(value)

    def h_persid(p: int) -> int:
        line, q = readline(p)
        try:
            pid = line.decode("ascii")
        except UnicodeDecodeError:
            raise fail(p - 1, "persistent IDs in protocol 0 must be ASCII strings") from None
        trace.persistent_ids.append(base + p - 1)
        push(Persistent(pid, base + p - 1))
        return q

    def h_binpersid(p: int) -> int:
        if len(stack) - fence() < 1:
            raise underflow(p - 1)
        trace.persistent_ids.append(base + p - 1)
        stack[-1] = Persistent(stack[-1], base + p - 1)
        return p

    return {
        "EXT1": h_ext(1), "EXT2": h_ext(2), "EXT4": h_ext(4), "GLOBAL": h_global,
        "STACK_GLOBAL": h_stack_global, "INST": h_inst, "OBJ": h_obj,
        "REDUCE": h_reduce, "NEWOBJ": h_newobj, "NEWOBJ_EX": h_newobj_ex,
        "BUILD": h_build, "PERSID": h_persid, "BINPERSID": h_binpersid,
    }  # fmt: skip
