"""Sandboxed expression and template engine built on Jinja2.

Every workflow condition and template goes through :class:`ExpressionEngine`.
Sources are checked statically when compiled, so a bad workflow definition is
rejected before any run, and then executed inside Jinja's immutable sandbox under one
budget per call (:class:`~flowyard.expressions.meter.Meter`): wall time, operations, the
deep size of every value an operation produces and of the result, and their total.
Compiling is bounded too: a token limit per source, no constant folding (it would run
filters without a budget), and an optional deadline from the caller.
"""

from __future__ import annotations

import asyncio
import functools
import operator
import threading
import time
from collections import OrderedDict
from collections.abc import ItemsView, Iterator, KeysView, Mapping, ValuesView
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from jinja2 import nodes
from jinja2.environment import Template
from jinja2.exceptions import SecurityError, TemplateSyntaxError, UndefinedError
from jinja2.lexer import describe_token
from jinja2.parser import Parser
from jinja2.runtime import Context, Undefined
from jinja2.utils import consume

from .compiling import _check_security, _GuardInjector, compile_deadline
from .errors import CompileBudgetExceeded, ExpressionError
from .limits import CacheInfo, ExpressionLimits
from .meter import Meter, Refused, active_meter, enter, leave
from .sandbox import (
    _EXPRESSION,
    _MAX_SOURCE_CHARS,
    _RESULT,
    _TEMPLATE,
    _metered,
    _SandboxEnvironment,
)

__all__ = ["CacheInfo", "ExpressionEngine", "ExpressionLimits"]


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


_VIEWS = (KeysView, ValuesView, ItemsView)


def _finish(meter: Meter, value: Any, done: dict[int, Any]) -> Any:
    """A returned value without Undefined (raised) or lazy values: iterators, ranges and
    dict views become lists, materialised under the meter (the caller stores the result,
    and would otherwise run what is left of a generator outside any budget)."""
    if isinstance(value, Undefined):
        value._fail_with_undefined_error()
    if not isinstance(value, (list, tuple, dict, Iterator, range, *_VIEWS)):
        return value
    key = id(value)
    if key in done:
        return done[key]
    result: Any
    if isinstance(value, dict):
        result = {_finish(meter, k, done): _finish(meter, v, done) for k, v in value.items()}
    elif isinstance(value, list | tuple):
        result = type(value)(_finish(meter, item, done) for item in value)
        if all(map(operator.is_, result, value)):
            result = value
    else:
        result = [_finish(meter, item, done) for item in _metered(meter, iter(value), 0)]
        meter.produce(result)
    done[key] = result
    return result


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
    if isinstance(exc, Refused):
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
        # One lock per source being compiled (see _build_once).
        self._building: dict[tuple[str, str], threading.Lock] = {}
        self._hits = 0
        self._misses = 0
        # Evaluation never runs on an event loop: the async entry points hand it to these
        # threads, so one costly expression cannot stall a server's requests or a worker's
        # claims and commits (the sandbox's budgets bound how long a thread stays busy).
        self._executor = ThreadPoolExecutor(
            max_workers=self._limits.threads, thread_name_prefix="flowyard-expr"
        )

    def close(self) -> None:
        """Stop the evaluation threads (pending evaluations finish first)."""
        self._executor.shutdown(wait=True, cancel_futures=True)

    @property
    def limits(self) -> ExpressionLimits:
        """The limits this engine enforces."""
        return self._limits

    # -- validation ------------------------------------------------------

    def check_condition(self, source: str, *, deadline: float | None = None) -> None:
        """Compile ``source`` as an expression; raise ExpressionError if it is invalid,
        CompileBudgetExceeded if compiling it runs past ``deadline`` (``time.monotonic``)."""
        self._compiled(_EXPRESSION, source, deadline)

    def check_template(self, source: str, *, deadline: float | None = None) -> None:
        """Compile ``source`` as a template (see :meth:`check_condition`)."""
        self._compiled(_TEMPLATE, source, deadline)

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
        strings and other values are returned as they are. All templates of ``value``
        share one budget (time, operations, total size): what one node renders is bounded
        as a whole.
        """
        try:
            with self._metered():
                return self._render_value(value, scope)
        except RecursionError:
            raise ExpressionError("value is nested too deeply", "", "limit") from None

    @contextmanager
    def _metered(self) -> Iterator[Meter]:
        """The running evaluation's meter, or a new one for the duration."""
        meter = active_meter()
        if meter is not None:
            yield meter
            return
        meter = Meter(self._limits)
        token = enter(meter)
        try:
            yield meter
        finally:
            leave(token)

    async def render_value_async(self, value: Any, scope: Mapping[str, Any]) -> Any:
        """:meth:`render_value` on the engine's threads (a value without templates is
        returned at once, without a thread hop)."""
        if not self._has_template(value):
            return value
        return await self._offload(self.render_value, value, scope)

    async def test_async(self, source: str, scope: Mapping[str, Any]) -> bool:
        """:meth:`test` on the engine's threads."""
        result: bool = await self._offload(self.test, source, scope)
        return result

    async def evaluate_async(self, source: str, scope: Mapping[str, Any]) -> Any:
        """:meth:`evaluate` on the engine's threads."""
        return await self._offload(self.evaluate, source, scope)

    async def _offload(self, fn: Any, *args: Any) -> Any:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, functools.partial(fn, *args))

    def _has_template(self, value: Any) -> bool:
        pending = [value]
        while pending:
            item = pending.pop()
            if isinstance(item, str):
                if self.is_template(item):
                    return True
            elif isinstance(item, Mapping):
                pending.extend(item.keys())
                pending.extend(item.values())
            elif isinstance(item, list | tuple):
                pending.extend(item)
        return False

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

    def _compiled(self, kind: str, source: str, deadline: float | None = None) -> _Compiled:
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
            entry = self._build_once(key, deadline)
        if isinstance(entry, ExpressionError):
            # A fresh instance each time, so tracebacks do not pile up on the cached one.
            raise ExpressionError(*entry.args)
        return entry

    def _build_once(self, key: tuple[str, str], deadline: float | None) -> _CacheEntry:
        """Compile ``key`` and cache it; concurrent callers of one key wait for one compile
        (N identical validations at once cost one compile, not N)."""
        with self._lock:
            key_lock = self._building.setdefault(key, threading.Lock())
        timeout = -1 if deadline is None else max(deadline - time.monotonic(), 0)
        if not key_lock.acquire(timeout=timeout):
            raise CompileBudgetExceeded("the compile budget ran out", key[1])
        try:
            with self._lock:
                entry = self._cache.get(key)
            if entry is None:
                entry = self._build(key[0], key[1], deadline)
                with self._lock:
                    self._cache[key] = entry
                    while len(self._cache) > self._limits.cache_size:
                        self._cache.popitem(last=False)
            return entry
        finally:
            with self._lock:
                if self._building.get(key) is key_lock:
                    del self._building[key]
            key_lock.release()

    def _build(self, kind: str, source: str, deadline: float | None) -> _CacheEntry:
        if len(source) > _MAX_SOURCE_CHARS:
            return ExpressionError(
                f"source is longer than {_MAX_SOURCE_CHARS} characters", "", "limit"
            )
        # No meter while compiling, even when a compile happens inside an evaluation (a
        # cache miss): the sandbox hooks then refuse, so Jinja folds no constant by running
        # a filter, operator or method outside any budget.
        meter_token = enter(None)
        deadline_token = compile_deadline().set(deadline)
        try:
            return self._build_unchecked(kind, source)
        except CompileBudgetExceeded as exc:
            # Not a property of the source: raised, never cached.
            raise CompileBudgetExceeded(exc.message, source) from None
        except ExpressionError as exc:
            if not exc.source:
                return ExpressionError(exc.message, source, exc.kind, exc.line)
            return exc
        except TemplateSyntaxError as exc:
            return ExpressionError(exc.message or "invalid syntax", source, "syntax", exc.lineno)
        except RecursionError:
            return ExpressionError("source is nested too deeply", source, "limit")
        except Exception as exc:
            # Anything else Jinja raises while compiling still means the source is unusable.
            return ExpressionError(f"{type(exc).__name__}: {exc}", source, "syntax")
        finally:
            compile_deadline().reset(deadline_token)
            leave(meter_token)

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
        deadline = compile_deadline().get()
        if deadline is not None and time.monotonic() > deadline:
            raise CompileBudgetExceeded("the compile budget ran out")
        _GuardInjector().visit(root)
        root.set_environment(self._env)
        template = self._env.from_string(root)
        # Generating and compiling Python code is most of the work: the deadline again.
        if deadline is not None and time.monotonic() > deadline:
            raise CompileBudgetExceeded("the compile budget ran out")
        return _Compiled(template, native=expr is not None)

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
        # (Not ``_metered()``: this runs for every template, and a generator-based context
        # manager costs as much as a small evaluation.)
        meter = active_meter()
        token = None
        if meter is None:
            meter = Meter(self._limits)
            token = enter(meter)
        try:
            context = compiled.template.new_context(dict(scope))
            if compiled.native:
                value = self._run_native(meter, compiled.template, context)
            else:
                value = self._run_text(meter, compiled.template, context)
            # The clock is read every few operations: the last ones may have run past it.
            meter.check_clock()
            return value
        except Exception as exc:
            raise _translate(exc, source, compiled.template) from exc
        finally:
            if token is not None:
                leave(token)

    @staticmethod
    def _run_native(meter: Meter, template: Template, context: Context) -> Any:
        consume(template.root_render_func(context))
        value = context.vars[_RESULT]
        # The result is what a run stores: sized deep (an input returned as it is too).
        meter.check_int(value)
        size, flagged, known = meter.size_of(value)
        if not known:
            meter.charge(size)
        if flagged:
            value = _finish(meter, value, {})
            meter.size_of(value)  # the materialised result within the size limit
        if isinstance(value, str) and type(value) is not str:
            # Filters like tojson return Markup; callers expect plain data.
            value = str(value)
        return value

    def _run_text(self, meter: Meter, template: Template, context: Context) -> str:
        limit = self._limits.max_output_chars
        pieces: list[str] = []
        size = 0
        for chunk in template.root_render_func(context):
            size += len(chunk)
            if size > limit:
                raise Refused("limit", f"rendered output exceeds the limit of {limit} characters")
            meter.tick()
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
