"""Constant folding of Jinja2 expressions, so that a template cannot build a name unseen.

Templates hide ``__class__`` as ``'__cla' ~ 'ss__'``, ``'%c%c'|format(95, 95)``,
``'ssalc'[::-1]``, ``'_'*2`` or ``''.join([...])``; :class:`ConstantFolder` computes the
value of such expressions from the parsed tree (never by rendering), for the few
operators, filters and string methods that can build a name. Folding is bounded:
results longer than :data:`MAX_FOLDED_CHARS` are not folded, nor are integers past
2**63, and ``%``/``format`` are reimplemented so that widths like ``%999999999d`` are
refused instead of honoured.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from jinja2 import nodes

MAX_FOLDED_CHARS = 4096
"""Longest string a constant expression may fold to (bounds ``'a' * 10**9``)."""

_MAX_FOLD_DEPTH = 64

# Values are str, int, float or lists of them; None means "not constant".
Folded = str | int | float | list["Folded"]


class ConstantFolder:
    """Folds constant expressions, remembering each node's value.

    The walker folds every node bottom-up first, so each node is folded once from its
    children's cached values (linear time however long a ``'a' + 'b' + ...`` chain is).
    """

    def __init__(self) -> None:
        self.cache: dict[int, Folded | None] = {}
        self.oversized: set[int] = set()
        """Nodes that are constant but too long to fold (so they cannot spell a name)."""

    def fold(self, node: nodes.Node, depth: int = 0) -> Folded | None:
        """The constant value of ``node``, or None when it is not a (bounded) constant."""
        key = id(node)
        if key in self.cache:
            return self.cache[key]
        if depth > _MAX_FOLD_DEPTH:
            return None  # not cached: the bottom-up pass folds this node on its own
        try:
            unbounded = self._fold(node, depth + 1)
        except _OversizedError:
            unbounded = None
            self.oversized.add(key)
        value = _bounded(unbounded)
        if (value is None and unbounded is not None) or self._grows_oversized(node):
            self.oversized.add(key)
        self.cache[key] = value
        return value

    def _grows_oversized(self, node: nodes.Node) -> bool:
        # Only operations whose result is at least as long as an operand: a slice of a
        # too-long constant can be short (and spell a name), a sum of one cannot.
        if isinstance(node, nodes.Concat):
            parts = node.nodes
        elif isinstance(node, nodes.Add):
            parts = [node.left, node.right]
        elif isinstance(node, nodes.Mul):
            factors = {id(node.left): node.right, id(node.right): node.left}
            parts = [
                side
                for side in (node.left, node.right)
                if isinstance(other := factors[id(side)], nodes.Const)
                and isinstance(other.value, int)
                and other.value > 0
            ]
        else:
            return False
        return any(id(part) in self.oversized for part in parts)

    def _fold(self, node: nodes.Node, depth: int) -> Folded | None:
        fold = self.fold
        if isinstance(node, nodes.Const):
            constant = node.value
            if isinstance(constant, str | int | float) and not isinstance(constant, bool):
                return constant
        elif isinstance(node, nodes.List | nodes.Tuple):
            items = [fold(item, depth) for item in node.items]
            if all(item is not None for item in items):
                return [item for item in items if item is not None]
        elif isinstance(node, nodes.Concat):
            parts = [fold(part, depth) for part in node.nodes]
            if all(isinstance(part, str | int | float) for part in parts):
                return "".join(str(part) for part in parts)
        elif isinstance(node, nodes.Neg):
            operand = fold(node.node, depth)
            if _is_number(operand):
                return -operand  # type: ignore[operator]
        elif isinstance(node, nodes.BinExpr):
            return _binary(node, fold(node.left, depth), fold(node.right, depth))
        elif isinstance(node, nodes.Getitem):
            return self._subscript(node, depth)
        elif isinstance(node, nodes.Filter) and node.node is not None:
            if not (node.kwargs or node.dyn_args or node.dyn_kwargs):
                args = [fold(arg, depth) for arg in node.args]
                if all(arg is not None for arg in args):
                    return _apply(node.name, fold(node.node, depth), args)  # type: ignore[arg-type]
        elif isinstance(node, nodes.Call):
            return self._call(node, depth)
        return None

    def _subscript(self, node: nodes.Getitem, depth: int) -> Folded | None:
        base = self.fold(node.node, depth)
        if not isinstance(base, str | list):
            return None
        if isinstance(node.arg, nodes.Slice):
            bounds: list[int | None] = []
            for part in (node.arg.start, node.arg.stop, node.arg.step):
                bound = None if part is None else self.fold(part, depth)
                if part is not None and not isinstance(bound, int):
                    return None
                bounds.append(bound)  # type: ignore[arg-type]
            return None if bounds[2] == 0 else base[slice(*bounds)]
        index = self.fold(node.arg, depth)
        if isinstance(index, int) and -len(base) <= index < len(base):
            return base[index]
        return None

    def _call(self, node: nodes.Call, depth: int) -> Folded | None:
        if node.kwargs or node.dyn_args or node.dyn_kwargs:
            return None
        args = [self.fold(arg, depth) for arg in node.args]
        if any(arg is None for arg in args):
            return None
        callee = node.node
        if isinstance(callee, nodes.Name) and callee.name == "chr" and len(args) == 1:
            code = args[0]
            return chr(code) if isinstance(code, int) and 0 <= code < 0x110000 else None
        if isinstance(callee, nodes.Getattr):
            return _apply(callee.attr, self.fold(callee.node, depth), args)  # type: ignore[arg-type]
        return None


class _OversizedError(Exception):
    """A constant expression whose value would be longer than MAX_FOLDED_CHARS."""


def _bounded(value: Folded | None) -> Folded | None:
    if isinstance(value, str | list) and len(value) > MAX_FOLDED_CHARS:
        return None
    if isinstance(value, int) and abs(value) > 2**63:
        return None
    return value


def _binary(node: nodes.BinExpr, left: Folded | None, right: Folded | None) -> Folded | None:
    if isinstance(node, nodes.Add):
        if isinstance(left, str) and isinstance(right, str):
            return left + right
        if _is_number(left) and _is_number(right):
            return left + right  # type: ignore[operator]
    elif isinstance(node, nodes.Mul):
        if isinstance(left, int) and isinstance(right, str):
            left, right = right, left
        if isinstance(left, str) and isinstance(right, int):
            return left * right if len(left) * max(right, 0) <= MAX_FOLDED_CHARS else None
        if isinstance(left, int) and isinstance(right, int):
            return left * right if abs(left) <= 2**32 and abs(right) <= 2**32 else None
    elif isinstance(node, nodes.Mod) and isinstance(left, str) and right is not None:
        return _percent_format(left, right if isinstance(right, list) else [right])
    return None


def _apply(name: str, value: Folded | None, args: Sequence[Folded]) -> Folded | None:
    """A filter or string method applied to constants (the few that can build a name)."""
    if isinstance(value, list):
        return _apply_to_list(name, value, args)
    if isinstance(value, str):
        return _apply_to_text(name, value, args)
    return None


def _apply_to_list(name: str, value: list[Folded], args: Sequence[Folded]) -> Folded | None:
    if name == "join":
        separator = args[0] if args else ""
        if isinstance(separator, str) and all(isinstance(v, str | int) for v in value):
            return separator.join(str(v) for v in value)
    elif name == "reverse":
        return value[::-1]
    elif name in ("first", "last") and value:
        return value[0] if name == "first" else value[-1]
    elif name == "list":
        return value
    return None


_CASE_METHODS = frozenset({
    "lower", "upper", "title", "capitalize", "swapcase", "strip", "lstrip", "rstrip",
})  # fmt: skip


def _apply_to_text(name: str, value: str, args: Sequence[Folded]) -> Folded | None:
    if name in _CASE_METHODS and not args:
        return str(getattr(value, name)())
    if name in ("string", "safe"):
        return value
    if name == "trim":
        return value.strip()
    if name == "reverse":
        return value[::-1]
    if name == "list":
        return list(value)
    if name in ("first", "last") and value:
        return value[0] if name == "first" else value[-1]
    if name == "replace" and len(args) == 2:
        old, new = args
        if isinstance(old, str) and isinstance(new, str):
            growth = value.count(old) * len(new)
            return value.replace(old, new) if len(value) + growth <= MAX_FOLDED_CHARS else None
    if name == "join" and len(args) == 1 and isinstance(args[0], list):
        parts = args[0]
        joinable = all(isinstance(part, str | int) for part in parts)
        return value.join(str(part) for part in parts) if joinable else None
    if name == "format":
        # The filter is printf-style, the str method brace-style; accept either.
        return _percent_format(value, args) if "%" in value else _brace_format(value, args)
    return None


_PERCENT = re.compile(r"%([#0 +-]*\d*(?:\.\d+)?)?([a-zA-Z%])")


def _percent_format(template: str, args: Sequence[Folded]) -> str | None:
    # Own implementation: Python's % would honour widths like %999999999d.
    out: list[str] = []
    remaining = list(args)
    position = 0
    for match in _PERCENT.finditer(template):
        out.append(template[position : match.start()])
        position = match.end()
        flags, conversion = match.group(1), match.group(2)
        if conversion == "%":
            out.append("%")
            continue
        widths = [int(number) for number in re.findall(r"\d+", flags or "")]
        if any(width > MAX_FOLDED_CHARS for width in widths):
            raise _OversizedError  # '%999999999d' is refused, not honoured
        if flags or not remaining:
            return None
        arg = remaining.pop(0)
        if conversion == "c":
            if isinstance(arg, int) and 0 <= arg < 0x110000:
                out.append(chr(arg))
            elif isinstance(arg, str) and len(arg) == 1:
                out.append(arg)
            else:
                return None
        elif (conversion in "sr" and isinstance(arg, str | int | float)) or (
            conversion in "di" and isinstance(arg, int)
        ):
            out.append(str(arg))
        else:
            return None
    out.append(template[position:])
    return "".join(out)


_BRACE = re.compile(r"\{\{|\}\}|\{(\d*)\}|[{}]")


def _brace_format(template: str, args: Sequence[Folded]) -> str | None:
    out: list[str] = []
    auto = 0
    position = 0
    for match in _BRACE.finditer(template):
        out.append(template[position : match.start()])
        position = match.end()
        token = match.group()
        if token in ("{{", "}}"):
            out.append(token[0])
            continue
        if token in ("{", "}"):
            return None
        index = int(match.group(1)) if match.group(1) else auto
        auto += 1
        if index >= len(args) or not isinstance(args[index], str | int | float):
            return None
        out.append(str(args[index]))
    out.append(template[position:])
    return "".join(out)


def _is_number(value: Folded | None) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
