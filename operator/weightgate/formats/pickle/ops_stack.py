"""Opcode handlers that shape the stack: containers, MARK/POP, the memo, framing, STOP.

Stack semantics follow ``pickle._Unpickler``: MARK fences the stack, and an opcode that
pops below the innermost MARK fails with a stack underflow. Where the C unpickler is more
lenient than the Python one (the target of APPEND/SETITEM may sit below the fence, a
memo store only needs a non-empty stack), the walk takes the lenient reading so that it
never stops earlier than some loader would.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from weightgate.formats.pickle.kit import (
    HIGHEST_PROTOCOL,
    U32,
    U64,
    Handler,
    Kit,
    Stopped,
)
from weightgate.formats.pickle.trace import DictValue, Instance, SetValue, WalkError

if TYPE_CHECKING:
    from weightgate.formats.pickle.machine import PickleMachine


def stack_handlers(kit: Kit, machine: PickleMachine) -> dict[str, Handler]:
    """The handlers of the container, stack, memo and control opcodes."""
    view, end, base, trace = kit.view, kit.end, kit.base, kit.trace
    stack, marks, memo, missing = kit.stack, kit.marks, kit.memo, kit.missing
    push, pop = stack.append, stack.pop
    need, fail, underflow, fence = kit.need, kit.fail, kit.underflow, kit.fence
    pop_mark, readline, mutate, memo_get = kit.pop_mark, kit.readline, kit.mutate, kit.memo_get

    def instance_items(target: Instance) -> DictValue:
        # Kept like a dict's pairs (an OrderedDict is a call result filled by SETITEMS);
        # a call result is no global, so nothing is recorded as a mutation either way.
        if target.items is None:
            target.items = DictValue()
        return target.items

    def h_empty_list(p: int) -> int:
        push([])
        return p

    def h_append(p: int) -> int:
        if len(stack) - fence() < 1 or len(stack) < 2:
            raise underflow(p - 1)
        value = pop()
        target = stack[-1]
        if type(target) is list:
            target.append(value)
        else:
            mutate(target, p - 1, "APPEND")
        return p

    def h_appends(p: int) -> int:
        items = pop_mark(p - 1)
        if not stack:
            raise underflow(p - 1)
        target = stack[-1]
        if type(target) is list:
            target.extend(items)
        elif items:
            mutate(target, p - 1, "APPENDS")
        return p

    def h_list(p: int) -> int:
        push(pop_mark(p - 1))
        return p

    def h_empty_tuple(p: int) -> int:
        push(())
        return p

    def h_tuple(p: int) -> int:
        push(tuple(pop_mark(p - 1)))
        return p

    def h_tuple1(p: int) -> int:
        if len(stack) - fence() < 1:
            raise underflow(p - 1)
        stack[-1] = (stack[-1],)
        return p

    def h_tuple2(p: int) -> int:
        if len(stack) - fence() < 2:
            raise underflow(p - 1)
        second = pop()
        stack[-1] = (stack[-1], second)
        return p

    def h_tuple3(p: int) -> int:
        if len(stack) - fence() < 3:
            raise underflow(p - 1)
        third = pop()
        second = pop()
        stack[-1] = (stack[-1], second, third)
        return p

    def h_empty_dict(p: int) -> int:
        push(DictValue())
        return p

    def h_dict(p: int) -> int:
        items = pop_mark(p - 1)
        if len(items) % 2:
            raise fail(p - 1, "odd number of items")
        push(DictValue(zip(items[::2], items[1::2], strict=True)))
        return p

    def h_setitem(p: int) -> int:
        if len(stack) - fence() < 2 or len(stack) < 3:
            raise underflow(p - 1)
        value = pop()
        key = pop()
        target = stack[-1]
        if type(target) is DictValue:
            target.append((key, value))
        elif type(target) is Instance:
            instance_items(target).append((key, value))
        else:
            mutate(target, p - 1, "SETITEM")
        return p

    def h_setitems(p: int) -> int:
        items = pop_mark(p - 1)
        if len(items) % 2:
            raise fail(p - 1, "odd number of items")
        if not stack:
            raise underflow(p - 1)
        target = stack[-1]
        if type(target) is DictValue:
            target.extend(zip(items[::2], items[1::2], strict=True))
        elif type(target) is Instance:
            instance_items(target).extend(zip(items[::2], items[1::2], strict=True))
        elif items:
            mutate(target, p - 1, "SETITEMS")
        return p

    def h_empty_set(p: int) -> int:
        push(SetValue())
        return p

    def h_additems(p: int) -> int:
        items = pop_mark(p - 1)
        if not stack:
            raise underflow(p - 1)
        target = stack[-1]
        if type(target) is SetValue:
            target.extend(items)
        elif items:
            mutate(target, p - 1, "ADDITEMS")
        return p

    def h_frozenset(p: int) -> int:
        push(SetValue(pop_mark(p - 1)))
        return p

    def h_pop(p: int) -> int:
        if len(stack) > fence():
            pop()
        elif marks:
            marks.pop()
        else:
            raise underflow(p - 1)
        return p

    def h_dup(p: int) -> int:
        if len(stack) - fence() < 1:
            raise underflow(p - 1)
        push(stack[-1])
        return p

    def h_mark(p: int) -> int:
        marks.append(len(stack))
        return p

    def h_pop_mark(p: int) -> int:
        pop_mark(p - 1)
        return p

    def h_get(p: int) -> int:
        line, q = readline(p)
        memo_get(p - 1, int(line))
        return q

    def h_binget(p: int) -> int:
        value = memo.get(view[p], missing)
        if value is missing:
            memo_get(p - 1, view[p])
        else:
            push(value)
        return p + 1

    def h_long_binget(p: int) -> int:
        need(p, 4, p - 1)
        memo_get(p - 1, U32(view, p)[0])
        return p + 4

    def memo_put(op: int, i: int) -> None:
        if not stack:
            raise underflow(op)
        memo[i] = stack[-1]

    def h_put(p: int) -> int:
        line, q = readline(p)
        i = int(line)
        if i < 0:
            raise fail(p - 1, "negative PUT argument")
        memo_put(p - 1, i)
        return q

    def h_binput(p: int) -> int:
        if not stack:
            raise underflow(p - 1)
        memo[view[p]] = stack[-1]
        return p + 1

    def h_long_binput(p: int) -> int:
        need(p, 4, p - 1)
        memo_put(p - 1, U32(view, p)[0])
        return p + 4

    def h_memoize(p: int) -> int:
        if not stack:
            raise underflow(p - 1)
        memo[len(memo)] = stack[-1]
        return p

    def h_stop(p: int) -> int:
        if len(stack) - fence() < 1:
            raise underflow(p - 1)
        raise Stopped(pop(), p)

    def h_proto(p: int) -> int:
        version = view[p]
        if version > HIGHEST_PROTOCOL:
            raise fail(p - 1, f"unsupported pickle protocol: {version}")
        machine.proto = version
        return p + 1

    def h_frame(p: int) -> int:
        need(p, 8, p - 1)
        size = U64(view, p)[0]
        if size > end - p - 8:
            # _pickle.c stops here ("pickle data was truncated"); pickle.py reads the
            # short frame and goes on, so the walk goes on too.
            trace.anomalies.append(
                WalkError(
                    base + p - 1,
                    f"FRAME declares {size} bytes but only {end - p - 8} remain",
                )
            )
            size = end - p - 8
        machine.frame_end = p + 8 + size
        return p + 8

    return {
        "EMPTY_LIST": h_empty_list, "APPEND": h_append, "APPENDS": h_appends,
        "LIST": h_list, "EMPTY_TUPLE": h_empty_tuple, "TUPLE": h_tuple,
        "TUPLE1": h_tuple1, "TUPLE2": h_tuple2, "TUPLE3": h_tuple3,
        "EMPTY_DICT": h_empty_dict, "DICT": h_dict, "SETITEM": h_setitem,
        "SETITEMS": h_setitems, "EMPTY_SET": h_empty_set, "ADDITEMS": h_additems,
        "FROZENSET": h_frozenset, "POP": h_pop, "DUP": h_dup, "MARK": h_mark,
        "POP_MARK": h_pop_mark, "GET": h_get, "BINGET": h_binget,
        "LONG_BINGET": h_long_binget, "PUT": h_put, "BINPUT": h_binput,
        "LONG_BINPUT": h_long_binput, "MEMOIZE": h_memoize, "STOP": h_stop,
        "PROTO": h_proto, "FRAME": h_frame,
    }  # fmt: skip
