"""The sandbox under the expression engine: limits, cooperative time budgets, size checks
on every produced value, and the AST pass that makes loops and concatenations obey them."""

from __future__ import annotations

import functools
import math
import re
import string
import time
from collections.abc import Callable, Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, NamedTuple

from jinja2 import nodes
from jinja2.runtime import Context, StrictUndefined
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.utils import Namespace, pass_context
from jinja2.visitor import NodeTransformer

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
        threads: Threads that evaluate for the async entry points (never the event loop).
    """

    timeout_s: float = 1.0
    max_output_chars: int = 1_000_000
    max_range: int = 10_000
    cache_size: int = 4096
    threads: int = 4

    def __post_init__(self) -> None:
        """Reject limits that would disable the sandbox's budgets."""
        if self.timeout_s <= 0:
            raise ValueError("timeout_s must be positive")
        if self.threads < 1:
            raise ValueError("threads must be at least 1")
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
