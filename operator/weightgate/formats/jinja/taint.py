"""Which Jinja2 expressions build strings at render time, so names built unseen are caught.

Constant folding (:mod:`weightgate.formats.jinja.folding`) sees every name spelled with
constants, but a template can make ``'_'`` from render-time data (``'%c'|format(range(96)
|last)``, ``(lipsum|string)[18]``) and then use the name where Jinja reads an attribute:
``x[name]`` (Jinja's item access falls back to ``getattr`` for strings), ``|map('attr',
name)``, ``|map(attribute=name)``, ``|selectattr(name)`` ... :class:`StringTaint` marks the
expressions whose value is a string assembled at render time, and the variables (``{% set
%}``, ``{% for %}`` targets, namespace attributes) assigned from one, so the analysis can
flag such names where they are used as attribute names. Item keys in real chat templates
are constants or plain variables (``message['content']``, ``messages[loop.index0 + 1]``),
never assembled strings.
"""

from __future__ import annotations

from collections.abc import Iterable

from jinja2 import nodes

# Filters and string methods whose result is a string built from their input.
_STRING_BUILDERS = frozenset({
    "format", "format_map", "join", "replace", "string", "reverse", "list", "first", "last",
    "lower", "upper", "title", "capitalize", "swapcase", "trim", "strip", "lstrip", "rstrip",
    "center", "ljust", "rjust", "zfill", "translate", "urlencode", "truncate", "wordwrap",
    "striptags", "indent", "safe", "escape", "e", "forceescape", "tojson", "pprint", "min",
    "max", "random", "sum", "batch", "slice", "map", "select", "reject", "unique", "sort",
    "removeprefix", "removesuffix", "expandtabs", "casefold", "partition", "rpartition",
    "split", "rsplit", "splitlines", "__add__", "__mod__", "__mul__", "chr",
})  # fmt: skip


class StringTaint:
    """Marks render-time string expressions and the variables assigned from them."""

    def __init__(self, tree_nodes: Iterable[nodes.Node]) -> None:
        """Find the tainted variables (a fixpoint over every assignment in the template)."""
        node_list = list(tree_nodes)
        self.names: set[str] = set()
        self.namespace_attributes: set[str] = set()
        self.macros = {node.name for node in node_list if isinstance(node, nodes.Macro)}
        assignments: list[tuple[nodes.Node, nodes.Node | None]] = []
        for node in node_list:
            if isinstance(node, nodes.Assign | nodes.For):
                value = node.node if isinstance(node, nodes.Assign) else node.iter
                assignments.append((node.target, value))
            elif isinstance(node, nodes.AssignBlock):
                assignments.append((node.target, None))  # the block renders to a string
        # Variables holding any string constant: adding them builds strings too.
        self.stringy: set[str] = set()
        for target, source in assignments:
            if source is not None and any(
                isinstance(n, nodes.Const) and isinstance(n.value, str)
                for n in source.find_all(nodes.Const)
            ):
                self.stringy.update(_store_names(target))
        changed = True
        while changed:
            changed = False
            for target, source in assignments:
                if source is not None and not self.is_built(source):
                    continue
                for store in _stores(target):
                    changed |= self._mark(store)

    def _mark(self, store: nodes.Node) -> bool:
        if isinstance(store, nodes.Name) and store.name not in self.names:
            self.names.add(store.name)
            return True
        if isinstance(store, nodes.NSRef) and store.attr not in self.namespace_attributes:
            self.namespace_attributes.add(store.attr)
            return True
        return False

    def _stringy(self, side: nodes.Node) -> bool:
        if isinstance(side, nodes.Const):
            return isinstance(side.value, str)
        if isinstance(side, nodes.Name):
            return side.name in self.stringy or side.name in self.names
        if isinstance(side, nodes.Getattr):
            return "." + side.attr in self.stringy or side.attr in self.namespace_attributes
        return False

    def is_built(self, node: nodes.Node) -> bool:
        """True when ``node`` may evaluate to a string assembled at render time."""
        stack = [node]
        while stack:
            current = stack.pop()
            if self._builds(current):
                return True
            stack.extend(current.iter_child_nodes())
        return False

    def _builds(self, node: nodes.Node) -> bool:
        if isinstance(node, nodes.Concat):
            return True
        if isinstance(node, nodes.Add | nodes.Mul | nodes.Mod):
            return any(self._stringy(side) for side in (node.left, node.right))
        if isinstance(node, nodes.Filter):
            return node.name in _STRING_BUILDERS
        if isinstance(node, nodes.Call):
            callee = node.node
            if isinstance(callee, nodes.Name):
                return callee.name in self.macros or callee.name in ("chr", "caller")
            return isinstance(callee, nodes.Getattr) and callee.attr in _STRING_BUILDERS
        if isinstance(node, nodes.Name):
            return node.ctx == "load" and node.name in self.names
        if isinstance(node, nodes.Getattr):
            return node.attr in self.namespace_attributes
        return False


def _store_names(target: nodes.Node) -> set[str]:
    names = set()
    for store in _stores(target):
        if isinstance(store, nodes.Name):
            names.add(store.name)
        elif isinstance(store, nodes.NSRef):
            names.add("." + store.attr)
    return names


def _stores(target: nodes.Node) -> list[nodes.Node]:
    if isinstance(target, nodes.Tuple | nodes.List):
        return [store for item in target.items for store in _stores(item)]
    return [target]
