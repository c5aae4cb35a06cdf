"""The budget of one evaluation: wall time, operations, and the deep size of every value an
operation produces, counted while the evaluation runs.

Sizes approximate a value's compact JSON text without brackets and quotes: a string counts
its length, a number its digits, ``true``/``false``/``null`` four, and every element of a
sequence or entry of a mapping one more plus its own size, so nested containers count their
contents and a container referenced twenty times counts twenty times (``[x] * 20``).

Sizing is memoised per evaluation by object identity: a container is walked once, and every
later reference to it costs one dictionary lookup, so ``[x] * 20`` and ``[[x] * 20] * 20``
cost O(unique objects), and a walk stops as soon as it passes the limit. The memo keeps the
objects it sized alive until the evaluation ends (their ids stay unique); what it can hold
is bounded by the evaluation's total budget.
"""

from __future__ import annotations

import time
from collections.abc import ItemsView, Iterator, KeysView, Mapping, Sequence, ValuesView
from contextvars import ContextVar, Token
from typing import Any

from jinja2.runtime import Undefined
from jinja2.utils import Namespace

from .limits import ExpressionLimits

#: Integers this large are never needed by workflow logic and are costly to build and print,
#: so producing one counts as exceeding the budget. Below what ``str()`` accepts (4,300
#: digits, about 14,284 bits), so every integer an expression holds can be printed, and
#: small enough that arithmetic on two of them is quick (a division is quadratic).
MAX_INT_BITS = 14_000
#: Decimal digits of the largest integer allowed (a bound for ``round``'s precision).
MAX_INT_DIGITS = MAX_INT_BITS * 30103 // 100_000 + 1
#: Digits of an integer of ``n`` bits: ``n * _LOG2_NUM // _LOG2_DEN + 1`` (log10 2).
_LOG2_NUM, _LOG2_DEN = 30103, 100_000
#: Sequences are sized this many items per C-level pass when their items are flat scalars.
_CHUNK = 1024
#: Shorter runs are sized item by item (a pass costs more than it saves).
_FLAT_MIN = 32
#: The clock is read after this many items while sizing a large value.
_CLOCK_EVERY = 4096
#: ... and every this many operations (a power of two minus one, as a mask): an operation
#: that builds much is charged, and a large charge reads the clock at once.
_TICK_CLOCK_MASK = 15
_LARGE_CHARGE = 4096
#: An evaluation gives up the GIL this often (seconds of its own running), see check_clock.
_YIELD_EVERY_S = 0.002
#: What an object that is neither a scalar nor a container (an iterator, a range, a loop
#: object) counts: its ``str()`` is a short description, counted again as output.
_OPAQUE = 1
#: A reference to a container that is being sized (only a namespace can hold itself).
_CYCLE = 5
_STR_ONLY = frozenset({str})
_INT_ONLY = frozenset({int, bool})
_FLOAT_ONLY = frozenset({float})


class Refused(Exception):
    """Raised inside sandbox hooks; the engine turns it into an ExpressionError."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message


class NotEvaluating(Exception):
    """A sandbox hook was called while no evaluation runs: Jinja folding constants at
    compile time. Jinja then leaves the node for run time, where the budget applies."""


def _int_digits(value: int) -> int:
    bits = value.bit_length()
    # Exact for the integers workflows use; estimated (never low) for huge ones, whose
    # str() is costly (and refused past 4,300 digits).
    return len(str(value)) if bits <= 64 else bits * _LOG2_NUM // _LOG2_DEN + 2


def _scalar_size(value: Any) -> int | None:
    """Size of a scalar; None for a container; -1 for an Undefined."""
    cls = type(value)
    if cls is str:
        return len(value)
    if cls is int:
        return _int_digits(value)
    if cls is float:
        return len(repr(value))
    if cls is bool or value is None:
        return 4
    if cls is list or cls is tuple or cls is dict:
        return None
    return _other_size(value)


def _other_size(value: Any) -> int | None:
    if isinstance(value, Undefined | Iterator | range):
        # Flagged like an Undefined: a lazy value is materialised if it is returned.
        return -1
    if isinstance(value, str | bytes | bytearray):
        return len(value)
    if isinstance(value, int):
        return _int_digits(value)
    if isinstance(value, float):
        return 24
    if isinstance(value, list | tuple | Mapping | Namespace | KeysView | ValuesView | ItemsView):
        return None
    return _OPAQUE


def _small_flat_size(value: Any) -> int | None:
    """Size of a short list, tuple or dict of scalars (tags, a row, a record) sized in one
    loop, without a frame; None when it is long or holds a container or an Undefined."""
    cls = type(value)
    if (cls is not dict and cls is not list and cls is not tuple) or len(value) > _FLAT_MIN:
        return None
    total = 0
    if cls is dict:
        for key, item in value.items():
            # (Records are string keys and mostly string values: those checks inline.)
            key_size = len(key) if type(key) is str else _scalar_size(key)
            item_size = len(item) if type(item) is str else _scalar_size(item)
            if key_size is None or item_size is None or key_size < 0 or item_size < 0:
                return None
            total += key_size + item_size + 2
        return total
    if cls is list or cls is tuple:
        for item in value:
            size = _scalar_size(item)
            if size is None or size < 0:
                return None
            total += size + 1
    return total


def _flat_size(chunk: Sequence[Any]) -> int | None:
    """Size of a run of items when they are all strings, all integers or all floats
    (computed in C-level passes); None otherwise."""
    kinds = set(map(type, chunk))
    if kinds <= _STR_ONLY:
        return sum(map(len, chunk)) + len(chunk)
    if kinds <= _INT_ONLY:
        # An n-bit integer has between (n - 1) * log10(2) + 1 and n * log10(2) + 1 digits.
        bits = sum(map(int.bit_length, chunk))
        return bits * _LOG2_NUM // _LOG2_DEN + 2 * len(chunk)
    if kinds <= _FLOAT_ONLY:
        return sum(map(len, map(repr, chunk))) + len(chunk)
    return None


class Meter:
    """Counts one evaluation's operations, time and produced sizes; raises
    :class:`Refused` (kind ``limit``) the moment one passes its limit."""

    __slots__ = (
        "_memo",
        "_since_clock",
        "_yielded_at",
        "deadline",
        "limit",
        "max_operations",
        "max_total",
        "operations",
        "timeout_s",
        "total",
    )

    def __init__(self, limits: ExpressionLimits) -> None:
        """Start the budget now."""
        self.limit = limits.max_output_chars
        self.max_total = limits.max_total_chars
        self.max_operations = limits.max_operations
        self.timeout_s = limits.timeout_s
        now = time.monotonic()
        self.deadline = now + limits.timeout_s
        self._yielded_at = now
        self.operations = 0
        self.total = 0
        self._since_clock = 0
        self._memo: dict[int, tuple[Any, int, bool]] = {}

    # -- time and operations ----------------------------------------------------------------

    def tick(self) -> None:
        """Count one operation; fail past the operation or time limit."""
        self.operations += 1
        if self.operations > self.max_operations:
            raise Refused(
                "limit", f"evaluation exceeded the limit of {self.max_operations} operations"
            )
        if not self.operations & _TICK_CLOCK_MASK:
            self.check_clock()

    def check_clock(self) -> None:
        """Fail once the evaluation has used up its time; give up the GIL now and then."""
        now = time.monotonic()
        if now > self.deadline:
            raise Refused("limit", f"evaluation exceeded the time limit of {self.timeout_s:g}s")
        if now - self._yielded_at > _YIELD_EVERY_S:
            # Evaluations run on threads, but a thread that keeps running Python holds the
            # GIL until the interpreter forces a switch (every 5 ms), and with several
            # such threads an event loop may wait several switches for its turn: sleep(0)
            # releases the GIL, so the loop (answering requests, claiming steps) waits at
            # most ~2 ms for an evaluation. Measured: worst loop stall 33-97 ms -> 5-17 ms.
            self._yielded_at = now
            time.sleep(0)

    # -- sizes ------------------------------------------------------------------------------

    def require(self, size: Any, what: str = "the result") -> None:
        """Refuse an operation whose result would have ``size`` (computed before it runs)."""
        if isinstance(size, int) and size > self.limit:
            raise Refused(
                "limit", f"{what} would have size {size}, above the limit of {self.limit}"
            )

    def charge(self, size: int) -> None:
        """Count ``size`` against the evaluation's total of produced values."""
        if size < 0:
            raise Refused("limit", f"invalid charge of {size}")
        self.total += size
        if self.total > self.max_total:
            raise Refused(
                "limit",
                f"evaluation produced more than {self.max_total} characters of values in total",
            )
        if size >= _LARGE_CHARGE:
            self.check_clock()

    def output(self, value: Any) -> None:
        """``{{ value }}`` in text: one operation, sized as text before it is built, and
        counted in the total (a ``{% set %}`` block may capture it)."""
        # tick() and charge() inlined: this runs for every output of every template.
        self.operations += 1
        if self.operations > self.max_operations:
            self.tick()  # raises
        if type(value) is str:
            size = len(value)
            if size > self.limit:
                self._too_large(size)
        else:
            size = self.text_size(value)
        self.total += size
        if self.total > self.max_total:
            self.charge(0)  # raises
        if size >= _LARGE_CHARGE or not self.operations & _TICK_CLOCK_MASK:
            self.check_clock()

    def step(self, text: int) -> None:
        """One pass of a loop that outputs ``text`` characters of template text."""
        self.operations += 1
        self.total += text
        if self.operations > self.max_operations:
            self.tick()  # raises
        if self.total > self.max_total:
            self.charge(0)  # raises
        if not self.operations & _TICK_CLOCK_MASK:
            self.check_clock()

    def text_size(self, value: Any) -> int:
        """Size of ``value`` as text (what ``str()`` or JSON would build), refused above
        the limit before anything is built."""
        if isinstance(value, str):
            if len(value) > self.limit:
                self._too_large(len(value))
            return len(value)
        return self.size_of(value)[0]

    def produce(self, value: Any) -> Any:
        """Size a value an operation produced and count it once (a value sized before in
        this evaluation, such as an input returned as it is, is not counted again)."""
        self.check_int(value)
        size, _, known = self.size_of(value)
        if not known:
            self.charge(size)
        return value

    def adopt(self, value: Any, size: int, undefined: bool) -> None:
        """Record the size of a container computed without walking it (``xs * n``)."""
        if id(value) not in self._memo:
            self._memo[id(value)] = (value, size, undefined)
            self.charge(size)

    def check_int(self, value: Any) -> None:
        """Refuse an integer above :data:`MAX_INT_BITS`."""
        if isinstance(value, int) and value.bit_length() > MAX_INT_BITS:
            raise Refused(
                "limit",
                f"produced an integer of {value.bit_length()} bits, above the limit of"
                f" {MAX_INT_BITS}",
            )

    def size_of(self, value: Any) -> tuple[int, bool, bool]:
        """``(size, holds an Undefined or a lazy value (an iterator, a range, a dict view),
        was sized before in this evaluation)``; refused
        (without finishing the walk) above the limit."""
        size = _scalar_size(value)
        if size is not None:
            if size < 0:
                return 0, True, False
            if size > self.limit:
                self._too_large(size)
            return size, False, False
        hit = self._memo.get(id(value))
        if hit is not None:
            return hit[1], hit[2], True
        flat = _small_flat_size(value)
        if flat is not None:
            if flat > self.limit:
                self._too_large(flat)
            return flat, False, False
        size, undefined = self._walk(value)
        return size, undefined, False

    def _too_large(self, size: int) -> None:
        raise Refused(
            "limit",
            f"produced a value of size over {min(size, self.limit)}, above the limit of"
            f" {self.limit} (nested values count in full)",
        )

    def _children(self, value: Any) -> tuple[Sequence[Any], int]:
        """The items to size inside a container, and the size of its keys."""
        if type(value) is dict:
            keys = list(value)
            return list(value.values()), self._keys_size(keys) + len(keys)
        if isinstance(value, list | tuple):
            return value, 0
        if isinstance(value, Namespace):
            # Namespace hides its storage behind __getattribute__; its repr shows it.
            value = object.__getattribute__(value, "__dict__")["_Namespace__attrs"]
        if isinstance(value, Mapping):
            keys = list(value)
            return list(value.values()), self._keys_size(keys) + len(keys)
        return list(value), 0  # a dict view

    def _keys_size(self, keys: list[Any]) -> int:
        if set(map(type, keys)) <= _STR_ONLY:
            return sum(map(len, keys))
        return sum(self.size_of(key)[0] for key in keys)

    def _walk(self, root: Any) -> tuple[int, bool]:
        """Size a container depth first without recursion; memoise every container."""
        limit, memo = self.limit, self._memo
        stack = [self._frame(root)]
        open_ids = {id(root)}
        while True:
            frame = stack[-1]
            child = self._advance(frame, open_ids)
            if child is not None:
                stack.append(self._frame(child))
                open_ids.add(id(child))
                continue
            stack.pop()
            container, total, undefined = frame[0], frame[3], frame[4]
            open_ids.discard(id(container))
            memo[id(container)] = (container, total, undefined)
            if not stack:
                return total, undefined
            parent = stack[-1]
            parent[2] += 1
            parent[3] += total + 1
            parent[4] = parent[4] or undefined
            if parent[3] > limit:
                self._too_large(parent[3])

    def _frame(self, container: Any) -> list[Any]:
        # [container, items, position, size so far, holds an Undefined, sized item by item
        # up to this position (the flat pass failed there)]
        items, base = self._children(container)
        if base > self.limit:
            self._too_large(base)
        # A dict view is flagged like an Undefined: it is made a list if it is returned.
        cls = type(container)
        lazy = (
            cls is not dict
            and cls is not list
            and cls is not tuple
            and isinstance(container, KeysView | ValuesView | ItemsView)
        )
        return [container, items, 0, base, lazy, 0]

    def _advance(self, frame: list[Any], open_ids: set[int]) -> Any:
        """Size a frame's items until one is a container not sized yet (returned, the frame
        keeps its place) or the end (None)."""
        limit, memo = self.limit, self._memo
        _, items, pos, total, undefined, slow_until = frame
        count = len(items)
        child = None
        work = 0
        while pos < count:
            if work >= _CLOCK_EVERY:
                self._count_work(work)
                work = 0
            if pos >= slow_until and count - pos >= _FLAT_MIN:
                chunk = items[pos : pos + _CHUNK]
                flat = _flat_size(chunk)
                if flat is None:
                    slow_until = pos + len(chunk)
                else:
                    pos += len(chunk)
                    total += flat
                    if total > limit:
                        self._too_large(total)
                    work += len(chunk)
                    continue
            item = items[pos]
            size = _scalar_size(item)
            if size is None:
                hit = memo.get(id(item))
                if hit is not None:
                    size = hit[1]
                    undefined = undefined or hit[2]
                elif id(item) in open_ids:
                    # A namespace holding itself: repr prints such a reference as "{...}"
                    # (and JSON refuses it).
                    size = _CYCLE
                else:
                    size = _small_flat_size(item)
                    if size is None:
                        child = item
                        break
                    memo[id(item)] = (item, size, False)
            elif size < 0:
                size, undefined = 0, True
            total += size + 1
            pos += 1
            if total > limit:
                self._too_large(total)
            work += 1
        self._count_work(work)
        frame[2:] = [pos, total, undefined, slow_until]
        return child

    def _count_work(self, items: int) -> None:
        self._since_clock += items
        if self._since_clock >= _CLOCK_EVERY:
            self._since_clock = 0
            self.check_clock()


# Module level on purpose: the Python docs advise against creating ContextVars per instance
# (contexts keep them alive). It holds no shared state: each evaluation sets its own meter in
# its own context (an evaluation thread's), and resets it when done.
_METER: ContextVar[Meter | None] = ContextVar("flowyard_expression_meter", default=None)


def current_meter() -> Meter:
    """The meter of the running evaluation (NotEvaluating when none runs)."""
    meter = _METER.get()
    if meter is None:
        raise NotEvaluating
    return meter


def active_meter() -> Meter | None:
    """The meter of the running evaluation, if one runs."""
    return _METER.get()


def enter(meter: Meter | None) -> Token[Meter | None]:
    """Make ``meter`` the current one (None: no evaluation runs, as while compiling)."""
    return _METER.set(meter)


def leave(token: Token[Meter | None]) -> None:
    """Restore the meter that was current before :func:`enter`."""
    _METER.reset(token)
