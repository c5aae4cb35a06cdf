"""The one error hierarchy of flowyard.

The API maps these to RFC 9457 problem details in one place; the CLI maps them to messages and
exit codes. ``code`` is the stable machine-readable ``type`` suffix.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with an input, located by a JSON pointer (RFC 6901)."""

    pointer: str
    message: str
    code: str = "invalid"

    def as_dict(self) -> dict[str, str]:
        """Serialise for APIs and CLI output."""
        return {"pointer": self.pointer, "message": self.message, "code": self.code}


class FlowyardError(Exception):
    """Base of every error flowyard raises on purpose."""

    code = "error"
    title = "Error"

    def __init__(self, message: str, *, detail: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.detail = detail or {}


class InvalidInput(FlowyardError):
    """A request or argument is malformed."""

    code = "invalid-input"
    title = "Invalid input"

    def __init__(self, message: str, problems: list[Problem] | None = None) -> None:
        super().__init__(message)
        self.problems = problems or []


class DefinitionError(InvalidInput):
    """A workflow definition is invalid; ``problems`` lists every mistake found."""

    code = "invalid-definition"
    title = "Invalid workflow definition"


class NotFound(FlowyardError):
    """The addressed resource does not exist."""

    code = "not-found"
    title = "Not found"


class Conflict(FlowyardError):
    """The request conflicts with the current state (duplicate name, stale version, ...)."""

    code = "conflict"
    title = "Conflict"


class PreconditionFailed(Conflict):
    """A conditional request's precondition (``If-Match``) does not hold: the resource
    changed since the client read it. A :class:`Conflict`, answered with HTTP 412."""

    code = "precondition-failed"
    title = "Precondition failed"


class PreconditionRequired(FlowyardError):
    """A write that must be conditional came without ``If-Match`` (HTTP 428): editing a
    shared draft blind could undo another editor's change."""

    code = "precondition-required"
    title = "Precondition required"


class Busy(FlowyardError):
    """This process is at its bound for a kind of work (compiling definitions): nothing was
    done; the same request may succeed after ``retry_after_s``."""

    code = "busy"
    title = "Busy"

    def __init__(self, message: str, *, retry_after_s: int) -> None:
        super().__init__(message, detail={"retry_after": retry_after_s})
        self.retry_after_s = retry_after_s


class StoreRejected(FlowyardError):
    """The database refused the data of a write (too large, not encodable, a constraint):
    retrying the same write cannot succeed."""

    code = "store-rejected"
    title = "Data refused by the database"


class StoreUnavailable(FlowyardError):
    """The database cannot be reached or answered with a transient failure."""

    code = "store-unavailable"
    title = "Store unavailable"


@dataclass(frozen=True, slots=True)
class ErrorInfo:
    """A step or run failure as recorded in the store and shown to users."""

    type: str
    message: str
    transient: bool
    details: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """Serialise for storage (JSON)."""
        return {
            "type": self.type,
            "message": self.message,
            "transient": self.transient,
            "details": self.details,
        }


class NodeError(FlowyardError):
    """A node failed. ``error_type`` is a stable string such as ``http.429`` or ``timeout``."""

    code = "node-error"
    title = "Node failed"
    transient = False

    def __init__(
        self,
        message: str,
        *,
        error_type: str = "error",
        details: dict[str, Any] | None = None,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(message)
        self.error_type = error_type
        self.details = details or {}
        self.retry_after_s = retry_after_s

    def info(self) -> ErrorInfo:
        """The recordable form of this error."""
        details = dict(self.details)
        if self.retry_after_s is not None:
            details["retry_after_s"] = self.retry_after_s
        return ErrorInfo(self.error_type, self.message, self.transient, details)


class TransientError(NodeError):
    """A failure that may succeed when tried again (network, 5xx, 429, timeouts)."""

    transient = True


class PermanentError(NodeError):
    """A failure that will fail again the same way (4xx, bad config, explicit fail)."""

    transient = False
