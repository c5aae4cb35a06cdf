"""Sandboxed expression and template engine built on Jinja2.

Every workflow condition and template goes through :class:`ExpressionEngine`.
Sources are checked statically when compiled, so a bad workflow definition is
rejected before any run, and then executed inside Jinja's immutable sandbox
with cooperative time and size budgets.
"""

from __future__ import annotations

import functools
import math
import re
import string
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from itertools import chain
from typing import Any, NamedTuple

from jinja2 import nodes
from jinja2.environment import Template
from jinja2.exceptions import SecurityError, TemplateSyntaxError, UndefinedError
from jinja2.lexer import describe_token
from jinja2.parser import Parser
from jinja2.runtime import Context, StrictUndefined, Undefined
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.utils import Namespace, consume, pass_context
from jinja2.visitor import NodeTransformer

from .errors import ExpressionError

__all__ = ["CacheInfo", "ExpressionEngine", "ExpressionLimits"]

# Integers this large are never needed by workflow logic and are costly to
# build and print, so producing one counts as exceeding the budget.
_MAX_INT_BITS = 100_000
# Compiling is not covered by the evaluation deadline, so bound its input.
_MAX_SOURCE_CHARS = 1_000_000
# ``tojson(indent=n)`` multiplies output by roughly ``n`` per nesting level.
_MAX_JSON_INDENT = 64

_EXPRESSION = "expression"
_RESULT = "result"
_TEMPLATE = "template"

# Internal filters injected after the security check; user sources cannot name
# them because filter names starting with "_" are refused.
_ITER_GUARD = "_flowyard_iter_guard"
_SIZE_GUARD = "_flowyard_size_guard"

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
# Non-deterministic output has no place in replayable workflows.
_REMOVED_FILTERS = frozenset({"random"})
_PADDING_METHODS = frozenset({"center", "ljust", "rjust", "zfill"})
_SIZED_TYPES = (str, bytes, list, tuple, dict)

_PERCENT_SPEC = re.compile(r"%%|%(?:\([^)]*\))?[-#0 +]*(\*|\d+)?(?:\.(\*|\d+))?")
_DIGITS = re.compile(r"\d+")


@dataclass(frozen=True)
class ExpressionLimits:
    """Resource limits applied to every evaluation and render.

    Attributes:
        timeout_s: Wall-clock budget of one evaluation, checked cooperatively
            on attribute access, calls, operators, loop steps and output chunks.
        max_output_chars: Cap on rendered output and on any string, sequence or
            mapping an expression produces.
        max_range: Longest sequence ``range()`` may build.
        cache_size: Number of compiled sources kept per engine (LRU).
    """

    timeout_s: float = 1.0
    max_output_chars: int = 1_000_000
    max_range: int = 10_000
    cache_size: int = 4096

    def __post_init__(self) -> None:
        """Reject limits that would disable the sandbox's budgets."""
        if self.timeout_s <= 0:
            raise ValueError("timeout_s must be positive")
        if self.max_output_chars <= 0 or self.max_range < 0 or self.cache_size < 0:
            raise ValueError("size limits must be non-negative (max_output_chars positive)")


class CacheInfo(NamedTuple):
    """Counters of the compiled-source cache."""

    hits: int
    misses: int
    size: int


@dataclass(frozen=True)
class _Budget:
    deadline: float
    timeout_s: float


# Module level on purpose: the Python docs advise against creating ContextVars
# per instance (contexts keep them alive). The variable holds no shared state;
# each evaluation sets its own value in its own context.
_BUDGET: ContextVar[_Budget | None] = ContextVar("flowyard_expression_budget", default=None)


class _Refused(Exception):
    """Raised inside sandbox hooks; the engine turns it into an ExpressionError."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message


def _tick() -> None:
    """Fail once the current evaluation has used up its time budget."""
    budget = _BUDGET.get()
    if budget is not None and time.monotonic() > budget.deadline:
        raise _Refused("limit", f"evaluation exceeded the time limit of {budget.timeout_s:g}s")


def _ticking(iterator: Iterator[Any]) -> Iterator[Any]:
    # Loops perform no attribute access or calls of their own, so without this
    # a nested loop over data could spin far past the deadline.
    for item in iterator:
        _tick()
        yield item


def _arg(params: tuple[Any, ...], kwargs: Mapping[str, Any], index: int, name: str) -> Any:
    """Return a call argument given either positionally or by keyword, else None."""
    if len(params) > index:
        return params[index]
    return kwargs.get(name)


def _replace_size(text: str, old: Any, new: Any, count: Any) -> int:
    """Length of ``text.replace(old, new, count)`` computed without building it."""
    if not (isinstance(old, str) and isinstance(new, str)):
        return 0
    hits = text.count(old) if old else len(text) + 1
    if isinstance(count, int) and count >= 0:
        hits = min(hits, count)
    return len(text) + hits * (len(new) - len(old))


def _large_ints(values: Any, limit: int) -> bool:
    """Whether a formatting argument list holds an int usable as a huge width."""
    if isinstance(values, Mapping):
        values = list(values.values())
    elif not isinstance(values, tuple | list):
        values = [values]
    return any(isinstance(v, int) and v > limit for v in values)


def _large_literal(digits: str, limit: int) -> bool:
    # Checking the length first avoids int() on a huge digit string.
    return len(digits) > len(str(limit)) or int(digits) > limit


class _SandboxEnvironment(ImmutableSandboxedEnvironment):
    """Jinja's immutable sandbox plus cooperative time and size budgets."""

    intercepted_binops = frozenset({"*", "**", "+", "%"})

    def __init__(self, limits: ExpressionLimits) -> None:
        super().__init__(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=True)
        self._limits = limits
        self._prechecks: dict[str, Callable[[Any, tuple[Any, ...], dict[str, Any]], None]] = {
            "center": self._precheck_center,
            "indent": self._precheck_indent,
            "batch": self._precheck_batch,
            "slice": self._precheck_slice,
            "tojson": self._precheck_tojson,
            "format": self._precheck_format_filter,
            "replace": self._precheck_replace_filter,
        }
        # Start from an empty namespace so helpers like lipsum/cycler/joiner,
        # whose internals expose module globals, are simply not reachable.
        self.globals.clear()
        self.globals["range"] = self._make_range()
        self.globals["namespace"] = Namespace
        guarded = {
            name: self._guard_filter(name, func)
            for name, func in self.filters.items()
            if name not in _REMOVED_FILTERS
        }
        self.filters.clear()
        self.filters.update(guarded)
        self.filters[_ITER_GUARD] = self._make_iter_guard()
        self.filters[_SIZE_GUARD] = self._make_size_guard()

    # -- sandbox hooks ---------------------------------------------------

    def getattr(self, obj: Any, attribute: str) -> Any:
        """Attribute access; mapping keys win over methods so JSON keys like ``items`` work."""
        _tick()
        if isinstance(obj, Mapping):
            try:
                return obj[attribute]
            except (LookupError, TypeError):
                pass
        return super().getattr(obj, attribute)

    def getitem(self, obj: Any, argument: Any) -> Any:
        """Subscription with a deadline check."""
        _tick()
        return super().getitem(obj, argument)

    def call(self, context: Context, obj: Any, /, *args: Any, **kwargs: Any) -> Any:
        """Call with a deadline check and size checks before and after."""
        _tick()
        self._precheck_call(obj, args, kwargs)
        return self.check_size(super().call(context, obj, *args, **kwargs))

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        """Binary operators that can blow up memory are sized before they run."""
        _tick()
        if operator == "*":
            self._precheck_multiply(left, right)
        elif operator == "**":
            self._precheck_power(left, right)
        elif operator == "%" and isinstance(left, str):
            self._check_percent(left, right)
        return self.check_size(super().call_binop(context, operator, left, right))

    # -- size accounting -------------------------------------------------

    def check_size(self, value: Any) -> Any:
        """Return ``value`` unless it is larger than the configured limits."""
        limit = self._limits.max_output_chars
        if isinstance(value, _SIZED_TYPES) and len(value) > limit:
            raise _Refused(
                "limit", f"produced a value of length {len(value)}, above the limit of {limit}"
            )
        if isinstance(value, int) and value.bit_length() > _MAX_INT_BITS:
            raise _Refused(
                "limit",
                f"produced an integer of {value.bit_length()} bits,"
                f" above the limit of {_MAX_INT_BITS}",
            )
        return value

    def _require_len(self, size: Any) -> None:
        limit = self._limits.max_output_chars
        if isinstance(size, int) and size > limit:
            raise _Refused("limit", f"result of size {size} would exceed the limit of {limit}")

    def _precheck_multiply(self, left: Any, right: Any) -> None:
        for seq, times in ((left, right), (right, left)):
            if isinstance(seq, str | bytes | list | tuple) and isinstance(times, int):
                self._require_len(len(seq) * times)
        if isinstance(left, int) and isinstance(right, int):
            bits = left.bit_length() + right.bit_length()
            if bits > _MAX_INT_BITS:
                raise _Refused(
                    "limit", f"product would have up to {bits} bits, above {_MAX_INT_BITS}"
                )

    def _precheck_power(self, left: Any, right: Any) -> None:
        if not (isinstance(left, int) and isinstance(right, int)) or right <= 0 or abs(left) <= 1:
            return
        # |left| >= 2, so the result has at least ``right`` bits.
        bits = right if right > _MAX_INT_BITS else math.log2(abs(left)) * right
        if bits > _MAX_INT_BITS:
            raise _Refused(
                "limit", f"power would have about {bits:.0f} bits, above the limit {_MAX_INT_BITS}"
            )

    def _check_percent(self, fmt: str, values: Any) -> None:
        limit = self._limits.max_output_chars
        for match in _PERCENT_SPEC.finditer(fmt):
            for group in match.groups():
                if group == "*" and _large_ints(values, limit):
                    raise _Refused("limit", f"format width above the limit of {limit}")
                if group and group != "*" and _large_literal(group, limit):
                    raise _Refused("limit", f"format width {group} above the limit of {limit}")

    def _check_format(self, fmt: str, args: Any, kwargs: Mapping[str, Any]) -> None:
        limit = self._limits.max_output_chars
        try:
            specs = [spec for _, _, spec, _ in string.Formatter().parse(fmt) if spec]
        except ValueError:
            return  # malformed: str.format itself will report it
        for spec in specs:
            if any(_large_literal(d, limit) for d in _DIGITS.findall(spec)) or (
                "{" in spec and (_large_ints(args, limit) or _large_ints(kwargs, limit))
            ):
                raise _Refused("limit", f"format spec {spec!r} exceeds the limit of {limit}")

    def _precheck_call(self, obj: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        # The sandbox hands out wrappers for str.format; look through them.
        target = getattr(obj, "__wrapped__", obj)
        owner = getattr(target, "__self__", None)
        if not isinstance(owner, str):
            return
        name = getattr(target, "__name__", "")
        if name in _PADDING_METHODS:
            self._require_len(_arg(args, kwargs, 0, "width"))
        elif name == "expandtabs":
            tabsize = _arg(args, kwargs, 0, "tabsize")
            if isinstance(tabsize, int):
                self._require_len(len(owner) + owner.count("\t") * tabsize)
        elif name == "replace":
            old, new = _arg(args, kwargs, 0, "old"), _arg(args, kwargs, 1, "new")
            self._require_len(_replace_size(owner, old, new, _arg(args, kwargs, 2, "count")))
        elif name == "format":
            self._check_format(owner, args, kwargs)
        elif name == "format_map" and args:
            self._check_format(owner, (), args[0] if isinstance(args[0], Mapping) else {})

    # -- filter prechecks (value, params after the value, kwargs) --------

    def _precheck_center(self, value: Any, params: tuple[Any, ...], kw: dict[str, Any]) -> None:
        self._require_len(_arg(params, kw, 0, "width"))

    def _precheck_indent(self, value: Any, params: tuple[Any, ...], kw: dict[str, Any]) -> None:
        width = _arg(params, kw, 0, "width")
        per_line = len(width) if isinstance(width, str) else width
        if isinstance(value, str) and isinstance(per_line, int):
            self._require_len(len(value) + per_line * (value.count("\n") + 1))

    def _precheck_batch(self, value: Any, params: tuple[Any, ...], kw: dict[str, Any]) -> None:
        self._require_len(_arg(params, kw, 0, "linecount"))

    def _precheck_slice(self, value: Any, params: tuple[Any, ...], kw: dict[str, Any]) -> None:
        self._require_len(_arg(params, kw, 0, "slices"))

    def _precheck_tojson(self, value: Any, params: tuple[Any, ...], kw: dict[str, Any]) -> None:
        indent = _arg(params, kw, 0, "indent")
        if isinstance(indent, int) and indent > _MAX_JSON_INDENT:
            raise _Refused("limit", f"tojson indent above the limit of {_MAX_JSON_INDENT}")

    def _precheck_format_filter(
        self, value: Any, params: tuple[Any, ...], kw: dict[str, Any]
    ) -> None:
        if isinstance(value, str):
            self._check_percent(value, kw or params)

    def _precheck_replace_filter(
        self, value: Any, params: tuple[Any, ...], kw: dict[str, Any]
    ) -> None:
        if isinstance(value, str):
            old, new = _arg(params, kw, 0, "old"), _arg(params, kw, 1, "new")
            self._require_len(_replace_size(value, old, new, _arg(params, kw, 2, "count")))

    # -- helpers installed into the environment --------------------------

    def _make_range(self) -> Callable[..., range]:
        max_range = self._limits.max_range

        def bounded_range(*args: int) -> range:
            """Built-in ``range`` that refuses sequences longer than the configured cap."""
            result = range(*args)
            try:
                size = len(result)
            except OverflowError:
                size = max_range + 1
            if size > max_range:
                raise _Refused("limit", f"range() of {size} items exceeds the limit of {max_range}")
            return result

        return bounded_range

    def _guard_filter(self, name: str, func: Callable[..., Any]) -> Callable[..., Any]:
        # Filters marked pass_context/environment/eval_context take one extra
        # leading argument before the filtered value.
        offset = 0 if getattr(func, "jinja_pass_arg", None) is None else 1
        precheck = self._prechecks.get(name)
        check_size = self.check_size

        # functools.wraps also copies ``jinja_pass_arg``, which Jinja relies on.
        @functools.wraps(func)
        def guarded(*args: Any, **kwargs: Any) -> Any:
            _tick()
            if precheck is not None and len(args) > offset:
                precheck(args[offset], args[offset + 1 :], kwargs)
            return check_size(func(*args, **kwargs))

        return guarded

    @staticmethod
    def _make_iter_guard() -> Callable[..., Iterator[Any]]:
        # pass_context keeps the optimizer from running the guard at compile time.
        @pass_context
        def iter_guard(context: Context, value: Any) -> Iterator[Any]:
            _tick()
            return _ticking(iter(value))

        return iter_guard

    def _make_size_guard(self) -> Callable[..., Any]:
        check_size = self.check_size

        @pass_context
        def size_guard(context: Context, value: Any) -> Any:
            _tick()
            return check_size(value)

        return size_guard


class _GuardInjector(NodeTransformer):
    """Rewrites a checked AST so loops, ``~`` and ``{% set %}`` blocks obey the budget."""

    def visit_For(self, node: nodes.For, *args: Any, **kwargs: Any) -> nodes.Node:
        self.generic_visit(node, *args, **kwargs)
        node.iter = _guard(node.iter, _ITER_GUARD, node.lineno)
        return node

    def visit_Concat(self, node: nodes.Concat, *args: Any, **kwargs: Any) -> nodes.Node:
        self.generic_visit(node, *args, **kwargs)
        return _guard(node, _SIZE_GUARD, node.lineno)

    def visit_AssignBlock(self, node: nodes.AssignBlock, *args: Any, **kwargs: Any) -> nodes.Node:
        self.generic_visit(node, *args, **kwargs)
        # A filter with no operand applies to the captured block content.
        node.filter = _guard(node.filter, _SIZE_GUARD, node.lineno)
        return node


def _guard(node: nodes.Node | None, name: str, lineno: int) -> nodes.Filter:
    return nodes.Filter(node, name, [], [], None, None, lineno=lineno)


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
    """Refuse private-name access and template-loading tags before anything runs."""
    for node in chain([root], root.find_all(nodes.Node)):
        message = _security_violation(node)
        if message is not None:
            raise ExpressionError(message, source, "security", node.lineno)


def _lone_expression(root: nodes.Template) -> nodes.Expr | None:
    """The expression of a template that is exactly one ``{{ expr }}`` plus whitespace."""
    if len(root.body) != 1 or not isinstance(root.body[0], nodes.Output):
        return None
    parts = [
        part
        for part in root.body[0].nodes
        if not (isinstance(part, nodes.TemplateData) and not part.data.strip())
    ]
    if len(parts) == 1 and not isinstance(parts[0], nodes.TemplateData):
        return parts[0]
    return None


def _reject_undefined(value: Any) -> None:
    """Raise for an Undefined anywhere inside a natively returned value."""
    pending: list[Any] = [value]
    seen: set[int] = set()
    while pending:
        item = pending.pop()
        if isinstance(item, Undefined):
            item._fail_with_undefined_error()
        if isinstance(item, list | tuple | dict) and id(item) not in seen:
            seen.add(id(item))
            pending.extend(chain(item.keys(), item.values()) if isinstance(item, dict) else item)


_ERROR_KINDS: tuple[tuple[type[BaseException], str], ...] = (
    (SecurityError, "security"),
    (UndefinedError, "undefined"),
    (TypeError, "type"),
    (RecursionError, "limit"),
    (MemoryError, "limit"),
)


def _template_line(exc: BaseException, template: Template | None) -> int | None:
    """Template line of the innermost generated-code frame in ``exc``'s traceback."""
    line = None
    tb = exc.__traceback__
    while tb is not None and template is not None:
        if tb.tb_frame.f_code.co_filename == "<template>":
            line = template.get_corresponding_lineno(tb.tb_lineno)
        tb = tb.tb_next
    return line


def _translate(exc: Exception, source: str, template: Template | None) -> ExpressionError:
    """Map any exception raised while running user code to an ExpressionError."""
    if isinstance(exc, ExpressionError):
        return exc
    line = _template_line(exc, template)
    if isinstance(exc, _Refused):
        return ExpressionError(exc.message, source, exc.kind, line)
    kind = next((k for exc_type, k in _ERROR_KINDS if isinstance(exc, exc_type)), "runtime")
    if isinstance(exc, SecurityError | UndefinedError):
        message = str(exc)
    else:
        message = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return ExpressionError(message, source, kind, line)


@dataclass(frozen=True)
class _Compiled:
    template: Template
    # True: the template assigns one expression's value to "result".
    native: bool


_CacheEntry = _Compiled | ExpressionError


class ExpressionEngine:
    """Compiles, validates and evaluates workflow conditions and templates.

    Evaluation scopes are mappings such as ``{"input": ..., "vars": ...,
    "steps": {node_id: {"output": ..., "error": ...}}, "run": {...}}``; mapping
    keys are reachable with attribute syntax (``steps.fetch.output.id``).
    Instances are thread-safe and meant to be shared.
    """

    def __init__(self, limits: ExpressionLimits | None = None) -> None:
        """Create an engine with its own sandbox environment and compile cache."""
        self._limits = limits if limits is not None else ExpressionLimits()
        self._env = _SandboxEnvironment(self._limits)
        self._cache: OrderedDict[tuple[str, str], _CacheEntry] = OrderedDict()
        self._lock = threading.Lock()
        self._hits = 0
        self._misses = 0

    @property
    def limits(self) -> ExpressionLimits:
        """The limits this engine enforces."""
        return self._limits

    # -- validation ------------------------------------------------------

    def check_condition(self, source: str) -> None:
        """Compile ``source`` as an expression; raise ExpressionError if it is invalid."""
        self._compiled(_EXPRESSION, source)

    def check_template(self, source: str) -> None:
        """Compile ``source`` as a template; raise ExpressionError if it is invalid."""
        self._compiled(_TEMPLATE, source)

    # -- evaluation ------------------------------------------------------

    def evaluate(self, source: str, scope: Mapping[str, Any]) -> Any:
        """Evaluate an expression such as ``steps.a.output.id > 3`` to a native value."""
        return self._execute(self._compiled(_EXPRESSION, source), source, scope)

    def test(self, source: str, scope: Mapping[str, Any]) -> bool:
        """Evaluate a condition and return its truthiness.

        Undefined names raise ExpressionError(kind='undefined') rather than
        counting as false, so a typo cannot silently skip a branch.
        """
        value = self.evaluate(source, scope)
        try:
            return bool(value)
        except Exception as exc:
            raise _translate(exc, source, None) from exc

    def render(self, source: str, scope: Mapping[str, Any]) -> Any:
        """Render a template string.

        A template that is exactly one ``{{ expr }}`` (whitespace around it
        allowed) returns the expression's native value; anything else renders
        to ``str``. Strings without ``{{`` or ``{%`` are returned unchanged.
        """
        if not isinstance(source, str):
            raise _not_a_string(source)
        if not self.is_template(source):
            return source
        return self._execute(self._compiled(_TEMPLATE, source), source, scope)

    def render_value(self, value: Any, scope: Mapping[str, Any]) -> Any:
        """Render every template string inside nested dicts, lists and tuples.

        Dict keys are rendered only when they are templates; non-template
        strings and other values are returned as they are.
        """
        try:
            return self._render_value(value, scope)
        except RecursionError:
            raise ExpressionError("value is nested too deeply", "", "limit") from None

    @staticmethod
    def is_template(value: str) -> bool:
        """Whether ``value`` is a string containing ``{{`` or ``{%``."""
        return isinstance(value, str) and ("{{" in value or "{%" in value)

    def find_templates(self, value: Any, pointer: str = "") -> list[tuple[str, str]]:
        """List ``(json_pointer, source)`` for every template string inside ``value``.

        Pointers follow RFC 6901 (``~`` as ``~0``, ``/`` as ``~1``). A dict key
        that is itself a template is reported with the pointer of its entry.
        """
        found: list[tuple[str, str]] = []
        try:
            self._collect_templates(value, pointer, found)
        except RecursionError:
            raise ExpressionError("value is nested too deeply", "", "limit") from None
        return found

    def cache_info(self) -> CacheInfo:
        """Return ``(hits, misses, size)`` of the compiled-source cache."""
        with self._lock:
            return CacheInfo(self._hits, self._misses, len(self._cache))

    # -- internals -------------------------------------------------------

    def _render_value(self, value: Any, scope: Mapping[str, Any]) -> Any:
        if isinstance(value, str):
            return self.render(value, scope) if self.is_template(value) else value
        if isinstance(value, Mapping):
            return {
                self._render_key(key, scope): self._render_value(item, scope)
                for key, item in value.items()
            }
        if isinstance(value, list):
            return [self._render_value(item, scope) for item in value]
        if isinstance(value, tuple):
            return tuple(self._render_value(item, scope) for item in value)
        return value

    def _render_key(self, key: Any, scope: Mapping[str, Any]) -> Any:
        if not (isinstance(key, str) and self.is_template(key)):
            return key
        rendered = self.render(key, scope)
        try:
            hash(rendered)
        except TypeError:
            raise ExpressionError(
                f"dict key rendered to unhashable {type(rendered).__name__}", key, "type"
            ) from None
        return rendered

    def _collect_templates(self, value: Any, pointer: str, found: list[tuple[str, str]]) -> None:
        if isinstance(value, str):
            if self.is_template(value):
                found.append((pointer, value))
        elif isinstance(value, Mapping):
            for key, item in value.items():
                child = f"{pointer}/{_escape_pointer(str(key))}"
                if isinstance(key, str) and self.is_template(key):
                    found.append((child, key))
                self._collect_templates(item, child, found)
        elif isinstance(value, list | tuple):
            for index, item in enumerate(value):
                self._collect_templates(item, f"{pointer}/{index}", found)

    def _compiled(self, kind: str, source: str) -> _Compiled:
        if not isinstance(source, str):
            raise _not_a_string(source)
        key = (kind, source)
        with self._lock:
            entry = self._cache.get(key)
            if entry is not None:
                self._cache.move_to_end(key)
                self._hits += 1
            else:
                self._misses += 1
        if entry is None:
            entry = self._build(kind, source)
            with self._lock:
                self._cache[key] = entry
                while len(self._cache) > self._limits.cache_size:
                    self._cache.popitem(last=False)
        if isinstance(entry, ExpressionError):
            # A fresh instance each time, so tracebacks do not pile up on the cached one.
            raise ExpressionError(*entry.args)
        return entry

    def _build(self, kind: str, source: str) -> _CacheEntry:
        if len(source) > _MAX_SOURCE_CHARS:
            return ExpressionError(
                f"source is longer than {_MAX_SOURCE_CHARS} characters", "", "limit"
            )
        try:
            return self._build_unchecked(kind, source)
        except ExpressionError as exc:
            return exc
        except TemplateSyntaxError as exc:
            return ExpressionError(exc.message or "invalid syntax", source, "syntax", exc.lineno)
        except RecursionError:
            return ExpressionError("source is nested too deeply", source, "limit")
        except Exception as exc:
            # Anything else Jinja raises while compiling still means the source is unusable.
            return ExpressionError(f"{type(exc).__name__}: {exc}", source, "syntax")

    def _build_unchecked(self, kind: str, source: str) -> _Compiled:
        expr: nodes.Expr | None
        if kind == _EXPRESSION:
            expr = self._parse_expression(source)
            _check_security(expr, source)
            root = _expression_template(expr)
        else:
            root = self._env.parse(source)
            _check_security(root, source)
            expr = _lone_expression(root)
            if expr is not None:
                root = _expression_template(expr)
        _GuardInjector().visit(root)
        root.set_environment(self._env)
        return _Compiled(self._env.from_string(root), native=expr is not None)

    def _parse_expression(self, source: str) -> nodes.Expr:
        parser = Parser(self._env, source, state="variable")
        expr = parser.parse_expression()
        if not parser.stream.eos:
            token = parser.stream.current
            raise TemplateSyntaxError(
                f"unexpected {describe_token(token)} after the expression", token.lineno
            )
        return expr

    def _execute(self, compiled: _Compiled, source: str, scope: Mapping[str, Any]) -> Any:
        if not isinstance(scope, Mapping):
            raise ExpressionError(
                f"scope must be a mapping, not {type(scope).__name__}", source, "type"
            )
        timeout = self._limits.timeout_s
        token = _BUDGET.set(_Budget(time.monotonic() + timeout, timeout))
        try:
            context = compiled.template.new_context(dict(scope))
            if compiled.native:
                return self._run_native(compiled.template, context)
            return self._run_text(compiled.template, context)
        except Exception as exc:
            raise _translate(exc, source, compiled.template) from exc
        finally:
            _BUDGET.reset(token)

    def _run_native(self, template: Template, context: Context) -> Any:
        consume(template.root_render_func(context))
        value = context.vars[_RESULT]
        _reject_undefined(value)
        if isinstance(value, str) and type(value) is not str:
            # Filters like tojson return Markup; callers expect plain data.
            value = str(value)
        return self._env.check_size(value)

    def _run_text(self, template: Template, context: Context) -> str:
        limit = self._limits.max_output_chars
        pieces: list[str] = []
        size = 0
        for chunk in template.root_render_func(context):
            size += len(chunk)
            if size > limit:
                raise _Refused("limit", f"rendered output exceeds the limit of {limit} characters")
            _tick()
            pieces.append(chunk)
        return "".join(pieces)


def _expression_template(expr: nodes.Expr) -> nodes.Template:
    """Template that stores the value of ``expr`` in the context variable ``result``."""
    assign = nodes.Assign(nodes.Name(_RESULT, "store"), expr, lineno=1)
    return nodes.Template([assign], lineno=1)


def _not_a_string(source: object) -> ExpressionError:
    return ExpressionError(
        f"expression source must be a string, not {type(source).__name__}", repr(source), "type"
    )


def _escape_pointer(token: str) -> str:
    """Escape one JSON-pointer reference token (RFC 6901)."""
    return token.replace("~", "~0").replace("/", "~1")
