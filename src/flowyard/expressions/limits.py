"""The limits the expression engine enforces, in one value object."""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple


@dataclass(frozen=True)
class ExpressionLimits:
    """Resource limits of evaluation (one call of the engine) and of compilation.

    Sizes are measured deep, in characters of a value's compact JSON form without brackets
    and quotes: a string counts its length, a number its digits, every element of a list
    or entry of a mapping one more, and nested containers their contents (a list repeated
    twenty times counts twenty times). See :mod:`flowyard.expressions.meter`.

    Attributes:
        timeout_s: Wall-clock budget of one evaluation, checked on every operation, loop
            step, output chunk and while sizing large values.
        max_output_chars: Largest value any operation may produce or an expression may
            return, and longest rendered text.
        max_total_chars: Sum of the sizes of every value produced (and text output) in one
            evaluation: bounds what a loop may build and what one node's rendering stores.
        max_operations: Operations (attribute accesses, calls, operators, filters, loop
            steps, outputs) one evaluation may perform.
        max_range: Longest sequence ``range()`` may build.
        cache_size: Number of compiled sources kept per engine (LRU).
        threads: Threads that evaluate for the async entry points (never the event loop).
        compile_budget_s: Time one definition's expressions may take to compile.
        max_templates: Expressions and templates one definition may hold.
        max_template_tokens: Tokens one expression or template may hold (compiling is
            linear in it, and Python's compiler, which holds the GIL, runs on the result).
    """

    timeout_s: float = 1.0
    max_output_chars: int = 1_000_000
    max_total_chars: int = 5_000_000
    max_operations: int = 5_000_000
    max_range: int = 10_000
    cache_size: int = 4096
    threads: int = 4
    compile_budget_s: float = 5.0
    max_templates: int = 5_000
    max_template_tokens: int = 20_000

    def __post_init__(self) -> None:
        """Reject limits that would disable the sandbox's budgets."""
        if self.timeout_s <= 0 or self.compile_budget_s <= 0:
            raise ValueError("timeout_s and compile_budget_s must be positive")
        if self.threads < 1:
            raise ValueError("threads must be at least 1")
        positive = (
            self.max_output_chars,
            self.max_total_chars,
            self.max_operations,
            self.max_templates,
            self.max_template_tokens,
        )
        if min(positive) <= 0 or self.max_range < 0 or self.cache_size < 0:
            raise ValueError(
                "size and count limits must be positive (max_range, cache_size non-negative)"
            )


class CacheInfo(NamedTuple):
    """Counters of the compiled-source cache."""

    hits: int
    misses: int
    size: int
