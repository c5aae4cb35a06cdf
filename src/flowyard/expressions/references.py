"""What a template reads from its scope, found statically from Jinja's syntax tree.

Used to protect run-start ``vars``: the keys of ``vars`` a template reads by a constant
name (``vars.target``, ``vars['target']``, ``vars.get('target')``) are known; any other use
of ``vars`` (iterating it, passing it to a filter, a computed key, assigning it, one of its
dict methods such as ``items()`` or ``values()``) could read any key.

The sandbox looks a constant name up as a key first and as an attribute second, so
``vars.items`` is the method unless a var is called ``items``: a name a dict has as an
attribute is treated as the attribute (it could read everything), never as a key.
"""

from __future__ import annotations

from collections.abc import Iterator

from jinja2 import Environment, nodes
from jinja2.exceptions import TemplateSyntaxError

#: A plain environment for parsing only (the sandbox's syntax is Jinja's default one).
_PARSER = Environment(autoescape=False)
#: Names that reach a dict's attributes (``items``, ``get``, ``__class__``...) rather than a
#: key, when no var has that name (the scope's ``vars`` is a plain dict).
_DICT_ATTRIBUTES = frozenset(dir(dict))


class _AnyKey(Exception):
    """The template uses the root in a way that could read any key."""


def keys_read(source: str, root: str) -> frozenset[str] | None:
    """The keys of the scope variable ``root`` that the template ``source`` reads by a
    constant name; None when it uses ``root`` in a way that could read any key (or does not
    parse)."""
    try:
        tree = _PARSER.parse(source)
    except (TemplateSyntaxError, RecursionError):
        return None
    found: set[str] = set()
    try:
        for node in _walk(tree, root, found):
            if _is_root(node, root):
                return None
    except _AnyKey:
        return None
    return frozenset(found)


def _is_root(node: nodes.Node, root: str) -> bool:
    return isinstance(node, nodes.Name) and node.name == root


def _constant_key(node: nodes.Node, root: str) -> str | None:
    """The key of ``root.key`` or ``root['key']``; None for anything else. Raises
    :class:`_AnyKey` for a computed key or a dict attribute name."""
    if isinstance(node, nodes.Getattr) and _is_root(node.node, root):
        key: object = node.attr
    elif isinstance(node, nodes.Getitem) and _is_root(node.node, root):
        if not isinstance(node.arg, nodes.Const):
            raise _AnyKey
        key = node.arg.value
    else:
        return None
    if not isinstance(key, str):
        raise _AnyKey
    return key


def _get_call(node: nodes.Node, root: str) -> tuple[str, list[nodes.Node]] | None:
    """For ``root.get('key')`` or ``root.get('key', default)``: the key and the nodes left
    to walk (the default); None when ``node`` is not such a call."""
    if not (isinstance(node, nodes.Call) and _constant_key(node.node, root) == "get"):
        return None
    if node.kwargs or node.dyn_args is not None or node.dyn_kwargs is not None:
        return None
    if not 1 <= len(node.args) <= 2:
        return None
    first = node.args[0]
    if not (isinstance(first, nodes.Const) and isinstance(first.value, str)):
        return None
    return first.value, list(node.args[1:])


def _walk(tree: nodes.Node, root: str, found: set[str]) -> Iterator[nodes.Node]:
    """Every node, parents first, recording constant keys of ``root`` in ``found``; the
    ``root`` name under a recognised ``root.x``, ``root['x']`` or ``root.get('x')`` is not
    visited again on its own."""
    stack: list[nodes.Node] = [tree]
    while stack:
        node = stack.pop()
        yield node
        get = _get_call(node, root)
        if get is not None:
            # ``get`` too: with a var of that name, ``root.get`` is that var (the call fails).
            found.update({"get", get[0]})
            stack.extend(get[1])
            continue
        key = _constant_key(node, root)
        if key is not None:
            if key in _DICT_ATTRIBUTES:
                raise _AnyKey
            found.add(key)
            continue
        stack.extend(node.iter_child_nodes())
