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
    describe,
    valid_dotted_name,
)
from weightgate.formats.pickle.trace import CallSite, GlobalRef, Instance, Opaque, Persistent

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
        push(call(ref, tuple(pop_mark(p - 1)), p - 1, "INST"))
        return q

    def h_obj(p: int) -> int:
        items = pop_mark(p - 1)
        if not items:
            raise underflow(p - 1)
        push(call(items[0], tuple(items[1:]), p - 1, "OBJ"))
        return p

    def h_reduce(p: int) -> int:
        if len(stack) - fence() < 2:
            raise underflow(p - 1)
        args = pop()
        func = pop()
        push(call(func, args, p - 1, "REDUCE"))
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
        if type(inst) is Instance:
            inst.state = state
            func = inst.func
            target = func if type(func) is GlobalRef else None
            calls(CallSite("BUILD", target, base + p - 1))
            if (
                machine.joblib
                and target is not None
                and pickle_joblib.is_array_wrapper(target.module, target.name)
            ):
                return machine.skip_joblib_array(p, inst)
        else:
            mutate(inst, p - 1, "BUILD")
        return p

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
