"""What compiling does to a source beyond Jinja's own work: a token limit, the caller's
deadline (a definition's compile budget), and the AST pass that routes loops, ``~``, loop
text and ``{% set %}`` blocks through the sandbox's meter."""

from __future__ import annotations

import time
from collections.abc import Iterable
from contextvars import ContextVar
from itertools import chain
from typing import TYPE_CHECKING, Any, cast

from jinja2 import nodes
from jinja2.ext import Extension
from jinja2.lexer import Token, TokenStream
from jinja2.visitor import NodeTransformer

from .errors import CompileBudgetExceeded, ExpressionError
from .meter import MAX_INT_BITS

if TYPE_CHECKING:
    from .sandbox import _SandboxEnvironment

# Internal filters injected after the security check; user sources cannot name
# them because filter names starting with "_" are refused.
_ITER_GUARD = "_flowyard_iter_guard"
_SIZE_GUARD = "_flowyard_size_guard"
_CONCAT_GUARD = "_flowyard_concat"

_FORBIDDEN_TAGS: tuple[tuple[type[nodes.Node], str], ...] = (
    (nodes.Extends, "extends"),
    (nodes.Include, "include"),
    (nodes.Import, "import"),
    (nodes.FromImport, "from"),
    (nodes.Macro, "macro"),
    (nodes.CallBlock, "call"),
)
# Filters whose first positional argument is an attribute name or dotted path.
_ATTRIBUTE_FILTERS = frozenset({"attr", "selectattr", "rejectattr", "groupby"})
# Filters that call another filter or a test named by a positional argument (at this index).
_NAMING_FILTERS = {"map": 0, "select": 0, "reject": 0, "selectattr": 1, "rejectattr": 1}
# The deadline of the compilation running in this context (a definition's compile budget),
# None without one. Module level for the same reason as the meter's variable.
_COMPILE_DEADLINE: ContextVar[float | None] = ContextVar("flowyard_compile_deadline", default=None)


def compile_deadline() -> ContextVar[float | None]:
    """The context variable holding the running compilation's deadline."""
    return _COMPILE_DEADLINE


def _is_private(name: Any) -> bool:
    return isinstance(name, str) and name.startswith("_")


def _const_str(node: nodes.Node | None) -> str | None:
    if isinstance(node, nodes.Const) and isinstance(node.value, str):
        return node.value
    return None


def _filter_references(node: nodes.Filter | nodes.Test) -> list[str]:
    """Names a filter call refers to: its own name and constant attribute paths."""
    paths: list[str | None] = []
    first = _const_str(node.args[0]) if node.args else None
    if node.name in _ATTRIBUTE_FILTERS:
        paths.append(first)
    elif node.name == "map" and first == "attr" and len(node.args) > 1:
        paths.append(_const_str(node.args[1]))
    paths.extend(_const_str(kw.value) for kw in node.kwargs if kw.key == "attribute")
    parts = [part for path in paths if path is not None for part in path.split(".")]
    # map('upper'), select('odd'), selectattr('a', 'odd'): the filter or test named (a
    # name given at run time is checked then, by the environment).
    index = _NAMING_FILTERS.get(node.name)
    named = _const_str(node.args[index]) if index is not None and len(node.args) > index else None
    if named is not None:
        parts.append(named)
    return [node.name, *parts]


def _references(node: nodes.Node) -> list[str]:
    """Identifiers ``node`` uses to reach into objects or the context."""
    if isinstance(node, nodes.Getattr | nodes.NSRef):
        return [node.attr]
    if isinstance(node, nodes.Getitem):
        key = _const_str(node.arg)
        return [] if key is None else [key]
    if isinstance(node, nodes.Name):
        # A lone "_" is the conventional throwaway loop variable.
        return [] if node.name == "_" else [node.name]
    if isinstance(node, nodes.Filter | nodes.Test):
        return _filter_references(node)
    return []


def _security_violation(node: nodes.Node) -> str | None:
    for tag_type, tag in _FORBIDDEN_TAGS:
        if isinstance(node, tag_type):
            return f"the '{{% {tag} %}}' tag is not allowed"
    private = next((name for name in _references(node) if _is_private(name)), None)
    if private is not None:
        return f"access to {private!r} is not allowed"
    return None


def _check_security(root: nodes.Node, source: str) -> None:
    """Refuse private-name access and template-loading tags before anything runs, and
    integer literals above the limit (``0xfff...`` is linear to parse, but costly to use)."""
    for node in chain([root], root.find_all(nodes.Node)):
        message = _security_violation(node)
        if message is not None:
            raise ExpressionError(message, source, "security", node.lineno)
        if isinstance(node, nodes.Const) and type(node.value) is int:
            bits = node.value.bit_length()
            if bits > MAX_INT_BITS:
                raise ExpressionError(
                    f"an integer literal of {bits} bits is above the limit of {MAX_INT_BITS}",
                    source,
                    "limit",
                    node.lineno,
                )


class _TokenLimit(Extension):
    """Counts the tokens of every source compiled, refusing one past the limit, and stops a
    compilation that runs past its caller's deadline (a definition's compile budget)."""

    def filter_stream(self, stream: TokenStream) -> Iterable[Token]:
        """The tokens, counted."""
        limits = cast("_SandboxEnvironment", self.environment).limits
        cap = limits.max_template_tokens
        deadline = _COMPILE_DEADLINE.get()
        for count, token in enumerate(stream, 1):
            if count > cap:
                raise ExpressionError(
                    f"source has more than {cap} tokens (the limit); split it", "", "limit"
                )
            if deadline is not None and count % 256 == 0 and time.monotonic() > deadline:
                raise CompileBudgetExceeded("the compile budget ran out")
            yield token


class _GuardInjector(NodeTransformer):
    """Rewrites a checked AST so loops, ``~`` and ``{% set %}`` blocks obey the budget."""

    def visit_For(self, node: nodes.For, *args: Any, **kwargs: Any) -> nodes.Node:
        self.generic_visit(node, *args, **kwargs)
        # Template text a loop outputs counts like ``{{ x }}`` (a ``{% set %}`` block may
        # capture it): the text output on every pass is counted per pass by the guard
        # (cheap), text under a condition when it is output (through ``finalize``).
        every_pass = 0
        for statement in node.body:
            if isinstance(statement, nodes.Output):
                every_pass += sum(
                    len(part.data)
                    for part in statement.nodes
                    if isinstance(part, nodes.TemplateData)
                )
            else:
                _count_when_output(statement)
        literal = nodes.Const(every_pass, lineno=node.lineno)
        node.iter = nodes.Filter(
            node.iter, _ITER_GUARD, [literal], [], None, None, lineno=node.lineno
        )
        return node

    def visit_Concat(self, node: nodes.Concat, *args: Any, **kwargs: Any) -> nodes.Node:
        self.generic_visit(node, *args, **kwargs)
        parts = nodes.List(list(node.nodes), lineno=node.lineno)
        return _guard(parts, _CONCAT_GUARD, node.lineno)

    def visit_AssignBlock(self, node: nodes.AssignBlock, *args: Any, **kwargs: Any) -> nodes.Node:
        self.generic_visit(node, *args, **kwargs)
        # A filter with no operand applies to the captured block content.
        node.filter = _guard(node.filter, _SIZE_GUARD, node.lineno)
        return node


def _guard(node: nodes.Node | None, name: str, lineno: int) -> nodes.Filter:
    return nodes.Filter(node, name, [], [], None, None, lineno=lineno)


def _count_when_output(statement: nodes.Node) -> None:
    """Turn the template text under ``statement`` into expressions counted when they are
    output. A nested loop's body is its own guard's (its ``else`` is not)."""
    pending = [statement]
    while pending:
        node = pending.pop()
        if isinstance(node, nodes.For):
            pending.extend(node.else_)
        elif isinstance(node, nodes.Output):
            node.nodes = [_counted_text(part) for part in node.nodes]
        else:
            pending.extend(node.iter_child_nodes())


def _counted_text(part: nodes.Expr) -> nodes.Expr:
    if not isinstance(part, nodes.TemplateData):
        return part
    # Marked safe as TemplateData is, so an {% autoescape %} block does not escape it.
    return nodes.MarkSafeIfAutoescape(nodes.Const(part.data), lineno=part.lineno)
