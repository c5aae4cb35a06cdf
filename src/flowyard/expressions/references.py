"""What a template reads from its scope, found statically from Jinja's syntax tree.

Used to protect run-start ``vars``: the keys of ``vars`` a template reads by a constant
name (``vars.target``, ``vars['target']``) are known; any other use of ``vars`` (iterating
it, passing it to a filter, a computed key, assigning it) could read any key.
"""

from __future__ import annotations

from collections.abc import Iterator

from jinja2 import Environment, nodes
from jinja2.exceptions import TemplateSyntaxError

#: A plain environment for parsing only (the sandbox's syntax is Jinja's default one).
_PARSER = Environment(autoescape=False)


def keys_read(source: str, root: str) -> frozenset[str] | None:
    """The keys of the scope variable ``root`` that the template ``source`` reads by a
    constant name; None when it uses ``root`` in a way that could read any key (or does not
    parse)."""
    try:
        tree = _PARSER.parse(source)
    except (TemplateSyntaxError, RecursionError):
        return None
    found: set[str] = set()
    for node in _walk(tree):
        if isinstance(node, nodes.Getattr) and _is_root(node.node, root):
            found.add(node.attr)
        elif isinstance(node, nodes.Getitem) and _is_root(node.node, root):
            if not (isinstance(node.arg, nodes.Const) and isinstance(node.arg.value, str)):
                return None
            found.add(node.arg.value)
        elif _is_root(node, root):
            return None
    return frozenset(found)


def _is_root(node: nodes.Node, root: str) -> bool:
    return isinstance(node, nodes.Name) and node.name == root


def _walk(tree: nodes.Node) -> Iterator[nodes.Node]:
    """Every node, parents first; the ``vars`` name under a recognised ``vars.x`` or
    ``vars['x']`` is not visited again on its own."""
    stack: list[nodes.Node] = [tree]
    while stack:
        node = stack.pop()
        yield node
        children = list(node.iter_child_nodes())
        if isinstance(node, nodes.Getattr | nodes.Getitem) and isinstance(node.node, nodes.Name):
            children = [c for c in children if c is not node.node]
        stack.extend(children)
