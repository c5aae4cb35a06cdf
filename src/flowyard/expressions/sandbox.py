"""The sandbox under the expression engine: hooks that meter every operation, and prechecks
that size what an operation would build (or serialise) before it does. (What compiling adds,
the guards these hooks serve among them, is in :mod:`flowyard.expressions.compiling`.)

Every hook takes the running evaluation's :class:`~flowyard.expressions.meter.Meter`. At
compile time there is none: the hooks then refuse, so Jinja folds no constant through them
(it would run a filter or a method without any budget while compiling).
"""

from __future__ import annotations

import functools
import math
import re
import string
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence, Sized
from typing import Any

from jinja2.filters import make_attrgetter
from jinja2.nodes import EvalContext
from jinja2.runtime import Context, LoopContext, StrictUndefined, markup_join, str_join
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.utils import Namespace, pass_context

from .compiling import _CONCAT_GUARD, _ITER_GUARD, _SIZE_GUARD, _TokenLimit
from .limits import ExpressionLimits
from .meter import MAX_INT_BITS, MAX_INT_DIGITS, Meter, Refused, current_meter

# Compiling is linear in the source and bounded by the token limit; this caps the text.
_MAX_SOURCE_CHARS = 1_000_000
# ``tojson(indent=n)`` multiplies output by roughly ``n`` per nesting level.
_MAX_JSON_INDENT = 64

_EXPRESSION = "expression"
_RESULT = "result"
_TEMPLATE = "template"

# Non-deterministic output has no place in replayable workflows; pprint builds its text in
# one unmetered call (and ``tojson`` says the same).
_REMOVED_FILTERS = frozenset({"random", "pprint"})
# Filters that return (part of) their input or a number: nothing new to size, and a
# large input (a step's output) stays cheap to look into.
_PASSTHROUGH_FILTERS = frozenset(
    {"abs", "attr", "count", "d", "default", "first", "float", "int", "last", "length"}
    | {"max", "min", "round", "wordcount"}
)
# Filters that turn their input into text (str(), JSON, repr, URL quoting): the input is
# sized first, so a large value is refused before it is serialised.
_SERIALISING_FILTERS = frozenset(
    {"capitalize", "center", "e", "escape", "forceescape", "format", "indent", "lower"}
    | {"replace", "safe", "string", "striptags", "title", "tojson", "trim"}
    | {"truncate", "upper", "urlencode", "urlize", "wordcount", "wordwrap", "xmlattr"}
)
# Filters that work word by word in Python (no hook runs inside them, so the clock is read
# only after them): their input is capped at this fraction of the size limit, so one call
# ends well within the time limit (urlize of 1,000,000 characters takes ~1.4 s).
_WORD_FILTER_SHARE = {"urlize": 10, "wordwrap": 4}
# Filters that consume an iterator: it is turned into a list first so it can be sized.
_MATERIALISING_FILTERS = frozenset({"join", "sum"})
# Filters that turn a string into a list of its characters.
_CHARACTER_FILTERS = frozenset({"list", "sort", "unique"})
_PADDING_METHODS = frozenset({"center", "ljust", "rjust", "zfill"})
# Methods that return a part of their object or a view of it (``for k, v in x.items()``):
# nothing new to size.
_PASSTHROUGH_METHODS = frozenset({"get", "items", "keys", "values"})

_PERCENT_SPEC = re.compile(r"%%|%(?:\([^)]*\))?[-#0 +]*(\*|\d+)?(?:\.(\*|\d+))?")
# One %-field: key, width, precision, conversion.
_PERCENT_FIELD = re.compile(r"%(?:\(([^)]*)\))?[-#0 +]*(\*|\d+)?(?:\.(\*|\d+))?[hlL]?(.?)", re.S)
_DIGITS = re.compile(r"\d+")
_FIELD_NAME_END = re.compile(r"[.\[]")
# What a %f or {:f} field of a float adds to its repr at most (1e308 has 309 digits).
_FIXED_POINT_EXTRA = 320
# What str() of an attribute reached by a format field may be (a bound method's repr).
_ATTRIBUTE_TEXT = 100
_CLOCK_EVERY_FIELDS = 1024
_CLOCK_EVERY_ITEMS = 4096
# What str.splitlines() breaks lines at.
_LINE_BREAKS = "\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"
# Characters markupsafe.escape replaces, and how many characters each adds.
_HTML_ESCAPES = (("&", 4), ("<", 3), (">", 3), ('"', 4), ("'", 4))
# What one link of urlize adds besides its text twice: <a href="https://"></a>, the
# rel="nofollow noopener" and target="" attribute names, a trimmed URL's "...".
_URLIZE_LINK = 64
# What one line of indented JSON adds besides its indentation: a newline, the quotes of a
# key and a string value, ": ".
_JSON_LINE_EXTRA = 8

_Precheck = Callable[[Meter, Any, tuple[Any, ...], dict[str, Any]], None]


def _arg(params: tuple[Any, ...], kwargs: Mapping[str, Any], index: int, name: str) -> Any:
    """Return a call argument given either positionally or by keyword, else None."""
    if len(params) > index:
        return params[index]
    return kwargs.get(name)


def _replace_size(text: Any, old: Any, new: Any, count: Any) -> int:
    """Length of ``text.replace(old, new, count)`` computed without building it (strings
    or bytes; 0 for arguments ``replace`` refuses)."""
    kind = str if isinstance(text, str) else (bytes, bytearray)
    if not (isinstance(old, kind) and isinstance(new, kind)):
        return 0
    hits = text.count(old) if old else len(text) + 1
    if isinstance(count, int) and count >= 0:
        hits = min(hits, count)
    return len(text) + hits * (len(new) - len(old))


def _line_breaks(text: str) -> int:
    """At least the number of line breaks ``str.splitlines`` finds (``\r\n`` counts 2)."""
    return sum(map(text.count, _LINE_BREAKS))


def _escaped_size(text: str) -> int:
    """Length of ``markupsafe.escape(text)`` computed without building it."""
    return len(text) + sum(text.count(char) * extra for char, extra in _HTML_ESCAPES)


def _json_lines(meter: Meter, value: Any, width: int) -> tuple[int, int]:
    """``(lines, sum of their depths)`` of ``value`` as JSON indented by ``width``: a
    container's lines and depths do not depend on where it sits, so each is walked once."""
    memo: dict[int, tuple[int, int]] = {}
    stack: list[tuple[Any, bool]] = [(value, False)]
    work = 0
    while stack:
        node, ready = stack.pop()
        if id(node) in memo:
            continue
        items = _json_children(node)
        if items is None:
            memo[id(node)] = (0, 0)
            continue
        if not ready:
            stack.append((node, True))
            stack.extend((item, False) for item in items if id(item) not in memo)
            continue
        lines = depths = 0
        for item in items:
            item_lines, item_depths = memo.get(id(item), (0, 0))
            lines += 1 + item_lines
            depths += 1 + item_depths + item_lines
        memo[id(node)] = (lines + 1 if items else 0, depths)
        work += len(items) + 1
        if work > _CLOCK_EVERY_ITEMS:
            work = 0
            meter.check_clock()
        if width * depths > meter.limit:
            break  # the caller refuses it
    # (A container that holds itself cannot be serialised: JSON raises.)
    return memo.get(id(value), (0, meter.limit + 1))


def _json_children(value: Any) -> list[Any] | None:
    if isinstance(value, list | tuple):
        return list(value)
    if isinstance(value, Mapping):
        return list(value.values())
    return None


def _repr_size(meter: Meter, value: Any) -> int:
    """An upper bound of ``len(repr(value))`` (or ``ascii()``) without building it: a
    printable ASCII string escapes to at most 2 characters per character, anything else to
    at most 10 (``\\U0001f600``)."""
    if isinstance(value, str):
        factor = 2 if value.isascii() and value.isprintable() else 10
        return factor * len(value) + 2
    return 10 * meter.text_size(value) + 2


def _percent_size(meter: Meter, fmt: str, values: Any) -> int:
    """An upper bound of the length of ``fmt % values``, each field sized by the argument
    it formats (a ``%(key)s`` repeated n times counts n times)."""
    positional = list(values) if isinstance(values, tuple) else [values]
    mapping = values if isinstance(values, Mapping) else {}
    position = 0
    total = len(fmt)

    def next_arg() -> Any:
        nonlocal position
        position += 1
        return positional[position - 1] if position <= len(positional) else None

    for count, match in enumerate(_PERCENT_FIELD.finditer(fmt), 1):
        key, width, precision, conversion = match.groups()
        if conversion == "%":
            continue
        if count % _CLOCK_EVERY_FIELDS == 0:
            meter.check_clock()
        widths = 0
        for part in (width, precision):
            if part == "*":
                star = next_arg()
                widths += abs(star) if isinstance(star, int) else 0
            elif part:
                widths += int(part) if len(part) <= 7 else meter.limit + 1
        arg = mapping.get(key) if key is not None else next_arg()
        size = _repr_size(meter, arg) if conversion in ("r", "a") else meter.text_size(arg)
        if conversion in ("f", "F"):
            size += _FIXED_POINT_EXTRA
        total += size + widths
        if total > meter.limit:
            break
    return total


def _format_size(meter: Meter, fmt: str, args: Sequence[Any], kwargs: Mapping[str, Any]) -> int:
    """An upper bound of the length of ``fmt.format(*args, **kwargs)``: every field is
    sized by the argument it names, so ``'{0}' * n`` counts its argument n times."""
    try:
        fields = list(string.Formatter().parse(fmt))
    except ValueError:
        return 0  # malformed: str.format itself will report it
    nested = max((v for v in (*args, *kwargs.values()) if type(v) is int), default=0)
    auto = 0
    total = 0
    for count, (literal, name, spec, conversion) in enumerate(fields, 1):
        total += len(literal)
        if name is None:
            continue
        if count % _CLOCK_EVERY_FIELDS == 0:
            meter.check_clock()
        end = _FIELD_NAME_END.search(name)
        first = name if end is None else name[: end.start()]
        if not first:
            first, auto = str(auto), auto + 1
        if first.isdigit():
            index = int(first)
            arg = args[index] if index < len(args) else None
        else:
            arg = kwargs.get(first)
        size = _repr_size(meter, arg) if conversion in ("r", "a") else meter.text_size(arg)
        if end is not None:
            size += _ATTRIBUTE_TEXT  # an item or attribute of the argument
        if spec:
            digits = _DIGITS.findall(spec)
            size += sum(int(d) if len(d) <= 7 else meter.limit + 1 for d in digits)
            size += spec.count("{") * abs(nested)
            if spec[-1] in "fF%":
                size += _FIXED_POINT_EXTRA
            if "," in spec or "_" in spec:
                size += size // 2  # digit grouping
        total += size
        if total > meter.limit:
            break
    return total


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


def _method(obj: Any) -> tuple[Any, str]:
    """``(bound object, method name)`` of a callable (the sandbox wraps str.format)."""
    target = getattr(obj, "__wrapped__", obj)
    return getattr(target, "__self__", None), getattr(target, "__name__", "")


def _check_name(name: Any, what: str) -> None:
    # The guards the compiler injects are filters named "_flowyard_...": a template naming
    # one (or any private name) in a string could skip the meter or charge a negative size.
    if not isinstance(name, str) or name.startswith("_"):
        raise Refused("security", f"the {what} name {name!r} is not allowed")


def _guard_test(func: Any) -> Callable[..., Any]:
    # functools.wraps also copies ``jinja_pass_arg``, which Jinja relies on.
    @functools.wraps(func)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        current_meter().tick()
        return func(*args, **kwargs)

    return guarded


def _metered(meter: Meter, iterator: Iterator[Any], text: int) -> Iterator[Any]:
    # Loops perform no attribute access or calls of their own, so without this a nested
    # loop over data could spin far past the deadline; ``text`` is the template text each
    # pass outputs.
    step = meter.step
    for item in iterator:
        step(text)
        yield item


class _SandboxEnvironment(ImmutableSandboxedEnvironment):
    """Jinja's immutable sandbox metered by the evaluation's budget."""

    # "-" and "//" build nothing large from small operands, but every integer an operator
    # returns is checked against MAX_INT_BITS (``a - (0 - a)`` doubles ``a``).
    intercepted_binops = frozenset({"*", "**", "+", "-", "//", "%"})

    def __init__(self, limits: ExpressionLimits) -> None:
        self.limits = limits
        super().__init__(
            undefined=StrictUndefined,
            autoescape=False,
            keep_trailing_newline=True,
            finalize=self._finalize,
            extensions=[_TokenLimit],
            # Jinja's optimizer tries to fold every sub-expression of every node it visits,
            # cubic in a chain (200 filters took 3 s); the sandbox's hooks refuse to fold
            # anything anyway (no budget runs while compiling).
            optimized=False,
        )
        self._prechecks: dict[str, _Precheck] = {
            "center": self._precheck_center,
            "indent": self._precheck_indent,
            "batch": self._precheck_count,
            "slice": self._precheck_count,
            "tojson": self._precheck_tojson,
            "format": self._precheck_format_filter,
            "replace": self._precheck_replace_filter,
            "join": self._precheck_join,
            "sum": self._precheck_sum,
            "round": self._precheck_round,
            "wordwrap": self._word_precheck("wordwrap", self._precheck_wordwrap),
            "urlize": self._word_precheck("urlize", self._precheck_urlize),
            **dict.fromkeys(_CHARACTER_FILTERS, self._precheck_characters),
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
        # Tests are operations too (``x is divisibleby 3``, ``select('odd')``).
        tests = {name: _guard_test(func) for name, func in self.tests.items()}
        self.tests.clear()
        self.tests.update(tests)
        self.filters[_ITER_GUARD] = self._iter_guard
        self.filters[_SIZE_GUARD] = self._size_guard
        self.filters[_CONCAT_GUARD] = self._concat_guard

    # -- sandbox hooks ---------------------------------------------------

    def getattr(self, obj: Any, attribute: str) -> Any:
        """Attribute access; mapping keys win over methods so JSON keys like ``items`` work."""
        current_meter().tick()
        if isinstance(obj, Mapping):
            try:
                return obj[attribute]
            except (LookupError, TypeError):
                pass
        return super().getattr(obj, attribute)

    def getitem(self, obj: Any, argument: Any) -> Any:
        """Subscription; a slice builds a copy, which is sized."""
        meter = current_meter()
        meter.tick()
        value = super().getitem(obj, argument)
        return meter.produce(value) if isinstance(argument, slice) else value

    def call(self, context: Context, obj: Any, /, *args: Any, **kwargs: Any) -> Any:
        """Call with what it would build sized before, and what it built sized after."""
        meter = current_meter()
        meter.tick()
        if isinstance(obj, LoopContext) and args:
            # ``loop(children)`` of a recursive loop iterates like the loop itself.
            args = (_metered(meter, iter(args[0]), 0), *args[1:])
        args = self._precheck_call(meter, obj, args, kwargs)
        value = super().call(context, obj, *args, **kwargs)
        if isinstance(value, Namespace) or _method(obj)[1] in _PASSTHROUGH_METHODS:
            return value
        return meter.produce(value)

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        """Binary operators that can blow up memory are sized before they run."""
        meter = current_meter()
        meter.tick()
        if operator == "*":
            return self._multiply(meter, context, left, right)
        if operator == "+":
            return self._add(meter, context, left, right)
        if operator == "**":
            self._precheck_power(left, right)
        elif operator == "%" and isinstance(left, str | bytes):
            fmt = left if isinstance(left, str) else left.decode("latin-1")
            self._check_percent(fmt, right)
            meter.require(_percent_size(meter, fmt, right), "%-formatting")
        return meter.produce(super().call_binop(context, operator, left, right))

    def call_filter(
        self,
        name: str,
        value: Any,
        args: Sequence[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        context: Context | None = None,
        eval_ctx: EvalContext | None = None,
    ) -> Any:
        """A filter called by name at run time (``map(name)``): never an internal one."""
        _check_name(name, "filter")
        return super().call_filter(name, value, args, kwargs, context, eval_ctx)

    def call_test(
        self,
        name: str,
        value: Any,
        args: Sequence[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        context: Context | None = None,
        eval_ctx: EvalContext | None = None,
    ) -> Any:
        """A test called by name at run time (``select(name)``): never an internal one."""
        _check_name(name, "test")
        return super().call_test(name, value, args, kwargs, context, eval_ctx)

    @pass_context
    def _finalize(self, context: Context, value: Any) -> Any:
        """``{{ x }}`` in text: ``x`` is sized before Jinja turns it into text."""
        current_meter().output(value)
        return value

    # -- operators -------------------------------------------------------

    def _multiply(self, meter: Meter, context: Context, left: Any, right: Any) -> Any:
        for seq, times in ((left, right), (right, left)):
            if not isinstance(times, int):
                continue
            if isinstance(seq, str | bytes):
                meter.require(len(seq) * max(times, 0), "the repetition")
                break
            if isinstance(seq, list | tuple):
                size, undefined, _ = meter.size_of(seq)
                total = size * max(times, 0)
                meter.require(total, "the repetition")
                value = super().call_binop(context, "*", left, right)
                meter.adopt(value, total, undefined)
                return value
        if isinstance(left, int) and isinstance(right, int):
            bits = left.bit_length() + right.bit_length()
            if bits > MAX_INT_BITS:
                raise Refused(
                    "limit", f"product would have up to {bits} bits, above {MAX_INT_BITS}"
                )
        return meter.produce(super().call_binop(context, "*", left, right))

    def _add(self, meter: Meter, context: Context, left: Any, right: Any) -> Any:
        if isinstance(left, str) and isinstance(right, str):
            meter.require(len(left) + len(right), "the concatenation")
        elif (isinstance(left, list) and isinstance(right, list)) or (
            isinstance(left, tuple) and isinstance(right, tuple)
        ):
            size_left, undefined_left, _ = meter.size_of(left)
            size_right, undefined_right, _ = meter.size_of(right)
            total = size_left + size_right
            meter.require(total, "the concatenation")
            value = super().call_binop(context, "+", left, right)
            meter.adopt(value, total, undefined_left or undefined_right)
            return value
        return meter.produce(super().call_binop(context, "+", left, right))

    @staticmethod
    def _precheck_power(left: Any, right: Any) -> None:
        if not (isinstance(left, int) and isinstance(right, int)) or right <= 0 or abs(left) <= 1:
            return
        # |left| >= 2, so the result has at least ``right`` bits.
        bits = right if right > MAX_INT_BITS else math.log2(abs(left)) * right
        if bits > MAX_INT_BITS:
            raise Refused(
                "limit", f"power would have about {bits:.0f} bits, above the limit {MAX_INT_BITS}"
            )

    def _check_percent(self, fmt: str, values: Any) -> None:
        limit = self.limits.max_output_chars
        for match in _PERCENT_SPEC.finditer(fmt):
            for group in match.groups():
                if group == "*" and _large_ints(values, limit):
                    raise Refused("limit", f"format width above the limit of {limit}")
                if group and group != "*" and _large_literal(group, limit):
                    raise Refused("limit", f"format width {group} above the limit of {limit}")

    def _check_format(self, fmt: str, args: Any, kwargs: Mapping[str, Any]) -> None:
        limit = self.limits.max_output_chars
        try:
            specs = [spec for _, _, spec, _ in string.Formatter().parse(fmt) if spec]
        except ValueError:
            return  # malformed: str.format itself will report it
        for spec in specs:
            if any(_large_literal(d, limit) for d in _DIGITS.findall(spec)) or (
                "{" in spec and (_large_ints(args, limit) or _large_ints(kwargs, limit))
            ):
                raise Refused("limit", f"format spec {spec!r} exceeds the limit of {limit}")

    # -- method calls ----------------------------------------------------

    def _precheck_call(
        self, meter: Meter, obj: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[Any, ...]:
        """Size what a method of a string or number would build; returns the arguments
        (an iterator given to ``str.join`` becomes a list, to be sized)."""
        owner, name = _method(obj)
        if isinstance(owner, int) and name == "to_bytes":
            meter.require(_arg(args, kwargs, 0, "length"), "to_bytes")
        if not isinstance(owner, str | bytes):
            return args
        if name in _PADDING_METHODS:
            meter.require(_arg(args, kwargs, 0, "width"), name)
        elif name == "expandtabs":
            tabsize = _arg(args, kwargs, 0, "tabsize")
            if isinstance(tabsize, int):
                tabs = owner.count("\t") if isinstance(owner, str) else owner.count(b"\t")
                meter.require(len(owner) + tabs * tabsize, name)
        elif name == "replace":
            old, new = _arg(args, kwargs, 0, "old"), _arg(args, kwargs, 1, "new")
            meter.require(_replace_size(owner, old, new, _arg(args, kwargs, 2, "count")), name)
        elif isinstance(owner, str):
            args = self._precheck_str_method(meter, owner, name, args, kwargs)
        elif name == "join" and args:
            args = self._precheck_join_method(meter, owner, args)
        return args

    def _precheck_str_method(
        self, meter: Meter, owner: str, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[Any, ...]:
        if name == "format":
            self._check_format(owner, args, kwargs)
            meter.require(_format_size(meter, owner, args, kwargs), "str.format")
        elif name == "format_map" and args:
            mapping = args[0] if isinstance(args[0], Mapping) else {}
            self._check_format(owner, (), mapping)
            meter.require(_format_size(meter, owner, (), mapping), "str.format_map")
        elif name == "join" and args:
            args = self._precheck_join_method(meter, owner, args)
        elif name == "translate" and args and isinstance(args[0], Mapping):
            longest = max((len(v) for v in args[0].values() if isinstance(v, str)), default=1)
            meter.require(len(owner) * max(longest, 1), "str.translate")
        return args

    @staticmethod
    def _precheck_join_method(
        meter: Meter, owner: str | bytes, args: tuple[Any, ...]
    ) -> tuple[Any, ...]:
        items = args[0] if isinstance(args[0], Sized) else list(args[0])
        size = meter.text_size(items) + len(owner) * len(items)
        meter.require(size, "join")
        return (items, *args[1:])

    # -- filter prechecks (meter, value, params after the value, kwargs) --

    def _precheck_center(
        self, meter: Meter, value: Any, params: tuple[Any, ...], kw: dict[str, Any]
    ) -> None:
        meter.require(_arg(params, kw, 0, "width"), "center")

    def _precheck_indent(
        self, meter: Meter, value: Any, params: tuple[Any, ...], kw: dict[str, Any]
    ) -> None:
        width = _arg(params, kw, 0, "width")
        per_line = len(width) if isinstance(width, str) else width
        if isinstance(value, str) and isinstance(per_line, int):
            # Every line splitlines() finds gets a newline and the indentation.
            lines = _line_breaks(value) + 2
            meter.require(len(value) + lines * (max(per_line, 0) + 1), "indent")

    def _precheck_count(
        self, meter: Meter, value: Any, params: tuple[Any, ...], kw: dict[str, Any]
    ) -> None:
        # batch(linecount) / slice(slices): the size of what each produces
        meter.require(_arg(params, kw, 0, "linecount") or _arg(params, kw, 0, "slices"))

    def _precheck_tojson(
        self, meter: Meter, value: Any, params: tuple[Any, ...], kw: dict[str, Any]
    ) -> None:
        indent = _arg(params, kw, 0, "indent")
        if isinstance(indent, int) and indent > _MAX_JSON_INDENT:
            raise Refused("limit", f"tojson indent above the limit of {_MAX_JSON_INDENT}")
        width = len(indent) if isinstance(indent, str) else indent
        if isinstance(width, int) and width >= 0:
            # Every element on its own line, indented by its depth; quotes and ": " too.
            lines, depths = _json_lines(meter, value, width)
            size = meter.text_size(value) + _JSON_LINE_EXTRA * lines + width * depths
            meter.require(size, "tojson")

    def _precheck_format_filter(
        self, meter: Meter, value: Any, params: tuple[Any, ...], kw: dict[str, Any]
    ) -> None:
        if isinstance(value, str):
            self._check_percent(value, kw or params)
            meter.require(_percent_size(meter, value, kw or params), "format")
        else:
            meter.require(meter.text_size(value) + meter.text_size([params, kw]), "format")

    def _precheck_replace_filter(
        self, meter: Meter, value: Any, params: tuple[Any, ...], kw: dict[str, Any]
    ) -> None:
        if isinstance(value, str):
            old, new = _arg(params, kw, 0, "old"), _arg(params, kw, 1, "new")
            size = _replace_size(value, old, new, _arg(params, kw, 2, "count"))
            meter.require(size, "replace")

    def _precheck_join(
        self, meter: Meter, value: Any, params: tuple[Any, ...], kw: dict[str, Any]
    ) -> None:
        separator = _arg(params, kw, 0, "d")
        sep = len(separator) if isinstance(separator, str) else 0
        count = len(value) if isinstance(value, Sized) else 0
        attribute = _arg(params, kw, 1, "attribute")
        if attribute is not None and isinstance(value, Iterable):
            # Joins a part of each item: size the parts (through the sandbox's getitem).
            getter = make_attrgetter(self, attribute)
            size = 0
            for item in value:
                size += meter.text_size(getter(item)) + sep
                meter.require(size, "join")
            return
        meter.require(meter.text_size(value) + sep * count, "join")

    def _precheck_sum(
        self, meter: Meter, value: Any, params: tuple[Any, ...], kw: dict[str, Any]
    ) -> None:
        start = _arg(params, kw, 1, "start")
        if not isinstance(start, list | tuple) or not isinstance(value, Iterable):
            return
        # Summing sequences copies the running total at every step: charge every copy.
        length = len(start)
        for item in value:
            length += len(item) if isinstance(item, Sized) else 0
            meter.charge(length)

    def _precheck_round(
        self, meter: Meter, value: Any, params: tuple[Any, ...], kw: dict[str, Any]
    ) -> None:
        # round(5, -n) computes 10 ** n first.
        precision = _arg(params, kw, 0, "precision")
        if isinstance(precision, int) and abs(precision) > MAX_INT_DIGITS:
            raise Refused(
                "limit", f"round() precision {precision} is beyond {MAX_INT_DIGITS} digits"
            )

    def _word_precheck(self, name: str, estimate: _Precheck) -> _Precheck:
        cap = self.limits.max_output_chars // _WORD_FILTER_SHARE[name]

        def precheck(meter: Meter, value: Any, params: tuple[Any, ...], kw: dict[str, Any]) -> None:
            size = meter.text_size(value)
            if size > cap:
                raise Refused(
                    "limit", f"{name} of a text of size {size}: the limit for {name} is {cap}"
                )
            if isinstance(value, str):
                estimate(meter, value, params, kw)

        return precheck

    @staticmethod
    def _precheck_wordwrap(
        meter: Meter, value: str, params: tuple[Any, ...], kw: dict[str, Any]
    ) -> None:
        width = _arg(params, kw, 0, "width")
        wrapstring = _arg(params, kw, 2, "wrapstring")
        if not isinstance(width, int) or width <= 0 or not isinstance(wrapstring, str):
            return  # the default "\n" replaces a space or a line break; a bad width fails
        # Two consecutive lines of a paragraph hold at least ``width`` characters between
        # them (else the next word would have fit), so a paragraph of n characters has at
        # most 2n/width + 2 lines; each break is a wrapstring.
        paragraphs = _line_breaks(value) + 1
        lines = 2 * len(value) // width + 2 * paragraphs
        meter.require(len(value) + lines * len(wrapstring), "wordwrap")

    @staticmethod
    def _precheck_urlize(
        meter: Meter, value: str, params: tuple[Any, ...], kw: dict[str, Any]
    ) -> None:
        target = _arg(params, kw, 2, "target")
        rel = _arg(params, kw, 3, "rel")
        schemes = _arg(params, kw, 4, "extra_schemes")
        # The text is HTML-escaped; a link repeats its text in its href and adds the rel
        # and target attributes. A word is a link only if it holds '.', ':' or '@' (or
        # starts with an extra scheme).
        words = len(value.split())
        links = words if schemes else min(words, sum(map(value.count, ".:@")))
        attributes = _URLIZE_LINK + sum(_escaped_size(str(a)) for a in (rel, target) if a)
        meter.require(2 * _escaped_size(value) + links * attributes, "urlize")

    def _precheck_characters(
        self, meter: Meter, value: Any, params: tuple[Any, ...], kw: dict[str, Any]
    ) -> None:
        if isinstance(value, str):
            meter.require(2 * len(value), "a list of characters")

    # -- helpers installed into the environment --------------------------

    def _make_range(self) -> Callable[..., range]:
        max_range = self.limits.max_range

        def bounded_range(*args: int) -> range:
            """Built-in ``range`` that refuses sequences longer than the configured cap."""
            result = range(*args)
            try:
                size = len(result)
            except OverflowError:
                size = max_range + 1
            if size > max_range:
                raise Refused("limit", f"range() of {size} items exceeds the limit of {max_range}")
            return result

        return bounded_range

    def _guard_filter(self, name: str, func: Callable[..., Any]) -> Callable[..., Any]:
        # Filters marked pass_context/environment/eval_context take one extra
        # leading argument before the filtered value.
        offset = 0 if getattr(func, "jinja_pass_arg", None) is None else 1
        precheck = self._prechecks.get(name)
        serialising = name in _SERIALISING_FILTERS
        materialising = name in _MATERIALISING_FILTERS
        passthrough = name in _PASSTHROUGH_FILTERS

        # functools.wraps also copies ``jinja_pass_arg``, which Jinja relies on.
        @functools.wraps(func)
        def guarded(*args: Any, **kwargs: Any) -> Any:
            meter = current_meter()
            meter.tick()
            if len(args) > offset:
                value = args[offset]
                if materialising and not isinstance(value, Sized) and isinstance(value, Iterable):
                    value = list(value)
                    args = (*args[:offset], value, *args[offset + 1 :])
                if serialising:
                    meter.text_size(value)
                if precheck is not None:
                    precheck(meter, value, args[offset + 1 :], kwargs)
            result = func(*args, **kwargs)
            if passthrough:
                # Nothing new to size, but an integer may be new: int('f' * n, 16).
                if isinstance(result, int):
                    meter.check_int(result)
                return result
            return meter.produce(result)

        return guarded

    @pass_context
    def _iter_guard(self, context: Context, value: Any, text: int = 0) -> Iterator[Any]:
        # pass_context keeps the optimizer from running the guard at compile time.
        meter = current_meter()
        meter.tick()
        if type(text) is not int or text < 0:
            raise Refused("security", "invalid loop guard")
        return _metered(meter, iter(value), text)

    @pass_context
    def _size_guard(self, context: Context, value: Any) -> Any:
        """A ``{% set %}`` block's captured text."""
        meter = current_meter()
        meter.tick()
        meter.text_size(value)
        return value

    @pass_context
    def _concat_guard(self, context: Context, parts: list[Any]) -> str:
        """``a ~ b ~ c``: the parts are sized before they are turned into text."""
        meter = current_meter()
        meter.tick()
        meter.require(sum(meter.text_size(part) for part in parts), "the concatenation (~)")
        joined: str = (markup_join if context.eval_ctx.autoescape else str_join)(parts)
        meter.charge(len(joined))
        return joined
