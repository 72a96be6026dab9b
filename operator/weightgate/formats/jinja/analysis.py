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
computed attribute names. Before checking, constant string expressions are folded
(:mod:`weightgate.formats.jinja.folding`) so that ``'__cla' ~ 'ss__'``,
``'%c%c'|format(95, 95)``, ``'ssalc'[::-1]``, ``'_'*2``, ``''.join([...])`` and ``'\x5f'``
escapes (decoded by the lexer) do not hide a name. Folding is bounded: results longer
than :data:`~weightgate.formats.jinja.folding.MAX_FOLDED_CHARS` are not folded.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

import jinja2
from jinja2 import nodes
from jinja2.ext import Extension
from jinja2.parser import Parser
from jinja2.sandbox import ImmutableSandboxedEnvironment

from weightgate.errors import FormatError, LimitExceeded
from weightgate.formats.jinja.folding import ConstantFolder
from weightgate.formats.jinja.taint import StringTaint

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
# Where each filter takes an attribute name (positional index, keyword); for map the
# first argument is a filter name ('attr' then takes the attribute second).
_ATTRIBUTE_ARGUMENTS = {
    "map": (0, "attribute"),
    "sort": (2, "attribute"),
    "groupby": (0, "attribute"),
    "sum": (0, "attribute"),
    "unique": (1, "attribute"),
    "min": (1, "attribute"),
    "max": (1, "attribute"),
    "selectattr": (0, ""),
    "rejectattr": (0, ""),
}
# str methods that read attributes and items named inside the format string.
_FIELD_FORMATTERS = frozenset({"format", "format_map"})


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
        self.taint = StringTaint(self.nodes)
        self.folder = ConstantFolder()
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
                elif (
                    key is None
                    and id(node.arg) not in self.folder.oversized
                    and self.taint.is_built(node.arg)
                ):
                    # Jinja's x[key] falls back to getattr(x, key) for strings.
                    self._add(HazardKind.COMPUTED_ATTRIBUTE, "item", "item key", node, False)
        elif isinstance(node, nodes.Call):
            callee = node.node
            if (
                isinstance(callee, nodes.Getattr)
                and callee.attr in _FIELD_FORMATTERS
                and not isinstance(self._fold(callee.node), str)
            ):
                # '{0.attr}'.format(x) reads attributes named in a string built at render
                # time ('{0.__init__.__globals__}' leaks secrets through the output).
                self._add(HazardKind.COMPUTED_ATTRIBUTE, callee.attr, "format string", node, False)
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
        for argument in self._attribute_arguments(node):
            if self._fold(argument) is None:
                how = f"{node.name} filter"
                self._add(HazardKind.COMPUTED_ATTRIBUTE, node.name, how, node, False)

    def _attribute_arguments(self, node: nodes.Filter | nodes.Test) -> list[nodes.Expr]:
        """The arguments a filter reads an attribute by (or, for map, picks a filter by)."""
        if node.name not in _ATTRIBUTE_ARGUMENTS or isinstance(node, nodes.Test):
            return []
        position, keyword = _ATTRIBUTE_ARGUMENTS[node.name]
        found = [kw.value for kw in node.kwargs if keyword and kw.key == keyword]
        if len(node.args) > position:
            found.append(node.args[position])
        if node.name == "map" and node.args and self._fold(node.args[0]) == "attr":
            found.extend(node.args[1:2])
        if node.dyn_args is not None or node.dyn_kwargs is not None:
            found.append(node.dyn_args or node.dyn_kwargs)  # type: ignore[arg-type]
        return found
