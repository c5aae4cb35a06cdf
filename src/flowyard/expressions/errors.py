"""Error type raised by the expression engine."""

from __future__ import annotations

#: Every value :attr:`ExpressionError.kind` can take.
ERROR_KINDS = frozenset({"syntax", "security", "undefined", "type", "limit", "runtime"})


class ExpressionError(Exception):
    """An expression or template that is invalid or failed while running.

    Attributes:
        message: Human readable description of the problem.
        source: The expression or template source that failed.
        kind: One of ``'syntax'``, ``'security'``, ``'undefined'``, ``'type'``,
            ``'limit'`` or ``'runtime'``.
        line: 1-based line inside ``source`` when known, else ``None``.
    """

    def __init__(
        self,
        message: str,
        source: str = "",
        kind: str = "runtime",
        line: int | None = None,
    ) -> None:
        if kind not in ERROR_KINDS:
            raise ValueError(f"unknown expression error kind {kind!r}")
        # All fields go into ``args`` so the error survives pickling across processes.
        super().__init__(message, source, kind, line)
        self.message = message
        self.source = source
        self.kind = kind
        self.line = line

    def __str__(self) -> str:
        """Return the message, with the line number when known."""
        if self.line is None:
            return self.message
        return f"{self.message} (line {self.line})"


class CompileBudgetExceeded(ExpressionError):
    """Compiling ran past the deadline its caller gave (a definition's compile budget).

    Not a property of the source, so it is never cached: the same source may compile
    within another budget."""

    def __init__(self, message: str, source: str = "", line: int | None = None) -> None:
        super().__init__(message, source, "limit", line)
        # ``args`` as the base class expects, so the error survives pickling.
        self.args = (message, source, line)
