r"""Static analysis of Jinja2 chat templates: parse to an AST, walk it, never render.

Chat templates ship inside tokenizer_config.json, GGUF metadata and standalone files, and
are rendered by ``transformers`` and ``llama-cpp-python`` on every request. Rendering a
hostile one outside a sandbox runs code (CVE-2024-34359: ``[].__class__.__base__.
__subclasses__()`` ... ``os.system``). Sandboxes have had escapes too, so the template is
judged by what it reaches for, whatever engine later renders it.

jinja2's own parser builds the tree (it tokenizes and parses; it compiles and runs
nothing). The walk flags attribute, item and ``attr``-filter access to dunder names and
interpreter internals, names that give a way out of the template (``os``, ``eval``,
``getattr`` ...), globals of Jinja and Flask used as objects (``cycler.__init__`` ...), and
computed attribute names. Before checking, constant string expressions are folded so that
``'__cla' ~ 'ss__'``, ``'%c%c'|format(95, 95)``, ``'ssalc'[::-1]``, ``'_'*2``,
``''.join([...])`` and ``'\x5f'`` escapes (decoded by the lexer) do not hide a name.
Folding is bounded: results longer than :data:`MAX_FOLDED_CHARS` are not folded.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Sequence
from dataclasses import dataclass

import jinja2
from jinja2 import nodes
from jinja2.ext import Extension
from jinja2.parser import Parser
from jinja2.sandbox import ImmutableSandboxedEnvironment

from weightgate.errors import FormatError, LimitExceeded

MAX_FOLDED_CHARS = 4096
"""Longest string a constant expression may fold to (bounds ``'a' * 10**9``)."""

_MAX_FOLD_DEPTH = 64

JINJA_DELIMITERS = re.compile(r"\{[{%]")
"""Text containing this may be a template."""

_DUNDER = re.compile(r"^__\w+__$")
_DANGEROUS_DUNDER_TEXT = re.compile(
    r"__(?:class|mro|base|bases|subclasses|init|globals|builtins|import|dict|getattribute|"
    r"getattr|setattr|delattr|reduce|reduce_ex|code|func|self|closure|loader|spec|call|new|"
    r"getitem|init_subclass|name|module|qualname|defaults|kwdefaults|traceback|frame)__"
)
# fmt: off
_INTERNAL_ATTRIBUTES = frozenset({
    "func_globals", "func_code", "func_closure", "f_globals", "f_locals", "f_builtins",
    "f_back", "f_code", "gi_frame", "gi_code", "cr_frame", "cr_code", "ag_frame", "ag_code",
    "tb_frame", "tb_next", "co_code", "co_consts", "im_func", "im_class", "im_self", "mro",
})
# Attribute or item names that lead to modules and processes. "system" is left out on
# purpose: ns.system and roles["system"] are everyday template code (and x.os.system is
# caught by "os").
_ESCAPE_ATTRIBUTES = frozenset({
    "os", "sys", "subprocess", "popen", "eval", "exec", "builtins", "globals", "environ",
    "modules", "import_module", "importlib", "load_module", "check_output", "getoutput",
    "spawn",
})
# Bare names of Python modules and builtins: no chat template has a use for them. Plain
# words a caller may pass as variables ("system", "file") are left out.
_ESCAPE_GLOBALS = frozenset({
    "os", "sys", "subprocess", "builtins", "importlib", "eval", "exec", "execfile", "compile",
    "open", "getattr", "setattr", "delattr", "globals", "locals", "popen", "environ",
    "breakpoint",
})
_OBJECT_GLOBALS = frozenset({
    "cycler", "joiner", "lipsum", "namespace", "self", "config", "request", "session",
    "url_for", "get_flashed_messages", "application",
})
"""Globals that are harmless when called but lead out when used as objects."""

_ATTRIBUTE_FILTERS = frozenset({
    "attr", "map", "sort", "groupby", "sum", "unique", "min", "max", "selectattr",
    "rejectattr", "dictsort",
})
# fmt: on


class HazardKind(enum.Enum):
    """What a template reaches for, one member per scanner rule."""

    DUNDER_ACCESS = "dunder-access"
    PRIVATE_ATTRIBUTE = "private-attribute"
    ESCAPE_NAME = "escape-name"
    COMPUTED_ATTRIBUTE = "computed-attribute"


@dataclass(frozen=True)
class TemplateHazard:
    """One dangerous construct.

    Attributes:
        kind: Which rule it falls under.
        name: The name reached for (``__class__``, ``os``) or the expression kind.
        how: How it is reached ("attribute", "item", "attr filter", "name", "string").
        lineno: Line in the template.
        obfuscated: True when the name was built from a constant expression.
    """

    kind: HazardKind
    name: str
    how: str
    lineno: int
    obfuscated: bool = False


class _GenerationTag(Extension):
    """``{% generation %}``: the tag transformers adds for assistant masks."""

    tags = {"generation"}  # noqa: RUF012 - the Extension API defines it as a class attribute

    def parse(self, parser: Parser) -> nodes.Node:
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        return nodes.Scope(body, lineno=lineno)


# The environment transformers uses (loop controls, the generation tag), plus ``do`` so
# that llama.cpp-style templates parse. It is only ever asked to parse.
_ENVIRONMENT = ImmutableSandboxedEnvironment(
    trim_blocks=True,
    lstrip_blocks=True,
    extensions=[_GenerationTag, "jinja2.ext.loopcontrols", "jinja2.ext.do"],
)


def analyse_template(source: str, max_bytes: int) -> tuple[TemplateHazard, ...]:
    """Parse a template and list the dangerous constructs in it, without rendering it.

    Args:
        source: The template text.
        max_bytes: Templates larger than this (UTF-8 bytes) are refused.

    Raises:
        LimitExceeded: The template is larger than ``max_bytes``.
        FormatError: jinja2 cannot parse the template (offset None; the line is in the
            message).
    """
    size = len(source) if source.isascii() else len(source.encode("utf-8", "surrogatepass"))
    if size > max_bytes:
        raise LimitExceeded(f"template is {size} bytes, over the limit of {max_bytes}")
    # The error is raised after the except blocks, unchained: a chained cause (or a local
    # naming the exception) forms a reference cycle through the stack frames up to the
    # caller's memoryview over the mmap, which then cannot be closed until a GC pass.
    # For the same reason the Parser is called directly: Environment.parse rewrites
    # syntax-error tracebacks through a fake frame whose globals hold the exception.
    failure: str | None = None
    try:
        tree = Parser(_ENVIRONMENT, source).parse()
    except jinja2.TemplateSyntaxError as exc:
        failure = f"line {exc.lineno}: {exc.message}"
    except RecursionError:
        failure = "template nested too deeply to parse"
    except Exception as exc:  # the parser faces hostile text; any failure fails closed
        failure = f"template could not be parsed: {type(exc).__name__}: {exc}"
    if failure is not None:
        raise FormatError(failure)
    return _Walker(tree).hazards()


class _Walker:
    def __init__(self, tree: nodes.Template) -> None:
        # Iterative walk (deep trees must not exhaust the Python stack), then reversed into
        # post-order: children before parents, siblings left to right, i.e. reading order.
        self.nodes: list[nodes.Node] = []
        stack: list[nodes.Node] = [tree]
        while stack:
            node = stack.pop()
            self.nodes.append(node)
            stack.extend(node.iter_child_nodes())
        self.nodes.reverse()
        self.bound = {
            node.name
            for node in self.nodes
            if isinstance(node, nodes.Name) and node.ctx in ("store", "param")
        }
        self.found: dict[tuple[HazardKind, str], TemplateHazard] = {}
        self.folder = _Folder()
        # Children before parents, so that each fold reuses its children's values.
        for node in self.nodes:
            if isinstance(node, nodes.Expr):
                self.folder.fold(node)
        self._fold = self.folder.fold

    def hazards(self) -> tuple[TemplateHazard, ...]:
        for node in self.nodes:
            self._visit(node)
        return tuple(self.found.values())

    def _add(self, kind: HazardKind, name: str, how: str, node: nodes.Node, hidden: bool) -> None:
        # One hazard per name; how it is used ("item") says more than the string it was
        # built from, which is seen first because children come before parents.
        known = self.found.get((kind, name))
        if known is None or (known.how == "string" and how != "string"):
            self.found[(kind, name)] = TemplateHazard(kind, name, how, node.lineno, hidden)

    def _visit(self, node: nodes.Node) -> None:
        if isinstance(node, nodes.Name):
            if node.ctx == "load":
                self._check_name(node)
        elif isinstance(node, nodes.Getattr | nodes.NSRef):
            self._check_attribute(node.attr, "attribute", node, hidden=False)
            if isinstance(node, nodes.Getattr):
                self._check_object(node.node)
        elif isinstance(node, nodes.Getitem):
            self._check_object(node.node)
            if not isinstance(node.arg, nodes.Slice):
                key = self._fold(node.arg)
                if isinstance(key, str):
                    self._check_item(key, node, hidden=not isinstance(node.arg, nodes.Const))
        elif isinstance(node, nodes.Filter | nodes.Test):
            self._check_filter(node)
        elif isinstance(node, nodes.Const):
            if isinstance(node.value, str):
                self._check_text(node.value, node, hidden=False)
            return
        elif isinstance(node, nodes.Keyword) and _DUNDER.match(node.key):
            # dict(__class__=1)|first builds the name from a keyword argument.
            self._add(HazardKind.DUNDER_ACCESS, node.key, "keyword", node, hidden=True)
        if isinstance(node, nodes.Expr) and not isinstance(node, nodes.Name | nodes.Const):
            folded = self._fold(node)
            if isinstance(folded, str):
                self._check_text(folded, node, hidden=True)

    def _check_name(self, node: nodes.Name) -> None:
        if _DUNDER.match(node.name):
            self._add(HazardKind.DUNDER_ACCESS, node.name, "name", node, hidden=False)
        elif node.name in _ESCAPE_GLOBALS and node.name not in self.bound:
            self._add(HazardKind.ESCAPE_NAME, node.name, "name", node, hidden=False)

    def _check_object(self, base: nodes.Node) -> None:
        if (
            isinstance(base, nodes.Name)
            and base.name in _OBJECT_GLOBALS
            and base.name not in self.bound
        ):
            self._add(HazardKind.ESCAPE_NAME, base.name, "global used as an object", base, False)

    def _check_attribute(self, name: str, how: str, node: nodes.Node, hidden: bool) -> None:
        for part in name.split("."):
            if _DUNDER.match(part) or part in _INTERNAL_ATTRIBUTES:
                self._add(HazardKind.DUNDER_ACCESS, part, how, node, hidden)
            elif part.startswith("_"):
                self._add(HazardKind.PRIVATE_ATTRIBUTE, part, how, node, hidden)
            elif part in _ESCAPE_ATTRIBUTES:
                self._add(HazardKind.ESCAPE_NAME, part, how, node, hidden)

    def _check_item(self, key: str, node: nodes.Node, hidden: bool) -> None:
        if _DUNDER.match(key) or key in _INTERNAL_ATTRIBUTES:
            self._add(HazardKind.DUNDER_ACCESS, key, "item", node, hidden)
        elif key in _ESCAPE_ATTRIBUTES:
            self._add(HazardKind.ESCAPE_NAME, key, "item", node, hidden)

    def _check_text(self, text: str, node: nodes.Node, hidden: bool) -> None:
        match = _DANGEROUS_DUNDER_TEXT.search(text)
        if match:
            self._add(HazardKind.DUNDER_ACCESS, match.group(), "string", node, hidden)

    def _check_filter(self, node: nodes.Filter | nodes.Test) -> None:
        if node.node is not None:
            self._check_object(node.node)
        if node.name not in _ATTRIBUTE_FILTERS:
            return
        arguments = list(node.args) + [kw.value for kw in node.kwargs]
        if node.name == "attr":
            if not node.args:
                return
            arguments = [node.args[0]]
            if self._fold(node.args[0]) is None:
                self._add(HazardKind.COMPUTED_ATTRIBUTE, "attr", "attr filter", node, False)
                return
        for argument in arguments:
            value = self._fold(argument)
            if isinstance(value, str):
                hidden = not isinstance(argument, nodes.Const)
                self._check_attribute(value, f"{node.name} filter", node, hidden)


# ---------------------------------------------------------------------------------------
# Constant folding. Values are str, int, float or lists of them; None means "not constant".

Folded = str | int | float | list["Folded"]


class _Folder:
    """Folds constant expressions, remembering each node's value.

    The walker folds every node bottom-up first, so each node is folded once from its
    children's cached values (linear time however long a ``'a' + 'b' + ...`` chain is).
    """

    def __init__(self) -> None:
        self.cache: dict[int, Folded | None] = {}

    def fold(self, node: nodes.Node, depth: int = 0) -> Folded | None:
        key = id(node)
        if key in self.cache:
            return self.cache[key]
        if depth > _MAX_FOLD_DEPTH:
            return None  # not cached: the bottom-up pass folds this node on its own
        value = _bounded(self._fold(node, depth + 1))
        self.cache[key] = value
        return value

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
