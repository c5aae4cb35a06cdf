"""The workflow definition format (pydantic v2 models).

These models check *structure* only (types, required fields, id syntax). Semantic checks that
need the node registry or the expression engine (unknown types, dangling edges, reachability,
config models, expressions) live in ``flowyard.engine.validation``, which reports every
problem at once with a JSON pointer.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from flowyard.domain.commands import SIGNAL_NAME_PATTERN
from flowyard.domain.retention import MAX_POLICY_CHARS, parse_retention

#: Node ids are identifiers so that expressions can say ``steps.<id>.output``.
NODE_ID_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]{0,63}$"
WORKFLOW_NAME_PATTERN = r"^[a-z0-9][a-z0-9_.-]{0,127}$"

NodeIdStr = Annotated[str, Field(pattern=NODE_ID_PATTERN)]
SignalNameStr = Annotated[str, Field(pattern=SIGNAL_NAME_PATTERN)]

#: Longest correlation key (``runs.correlation_key``), given at start or computed.
MAX_CORRELATION_KEY = 200
#: Most nodes a definition may hold.
MAX_NODES = 10_000
#: Most signal names a definition may declare.
MAX_DECLARED_SIGNALS = 100


def _retention(value: str) -> str:
    parse_retention(value)  # ValueError: pydantic reports it at /retention
    return value


#: How long finished runs of the workflow are kept (decision 0031).
RetentionStr = Annotated[
    str,
    Field(
        max_length=MAX_POLICY_CHARS,
        description="How long finished runs of this workflow are kept before they are "
        "pruned: a duration ('30d', '12h', 'P90D') or 'forever'. The latest version's value "
        "applies to every run of the workflow; without it, FLOWYARD_RETENTION applies.",
    ),
    AfterValidator(_retention),
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RetryPolicy(_Strict):
    """How a failing step is tried again (durably: the step row is rescheduled)."""

    max_attempts: int = Field(3, ge=1, le=1000, description="Attempts in total, first included.")
    initial_interval_s: float = Field(1.0, ge=0, le=86_400)
    backoff_rate: float = Field(2.0, ge=1.0, le=100)
    max_interval_s: float = Field(300.0, ge=0, le=7 * 86_400)
    jitter: Literal["full", "none"] = "full"
    retry_on: list[str] = Field(
        default_factory=lambda: ["*"],
        description="Error type patterns (fnmatch) that may be retried.",
    )
    non_retryable: list[str] = Field(
        default_factory=list, description="Error type patterns that are never retried."
    )


class CatchRule(_Strict):
    """Route a failure whose error type matches ``errors`` to ``next``."""

    errors: list[str] = Field(default_factory=lambda: ["*"], min_length=1)
    next: NodeIdStr


class NodeSpec(_Strict):
    """One typed element of a workflow."""

    id: NodeIdStr
    type: str = Field(min_length=1, max_length=128)
    name: str | None = Field(None, max_length=200)
    description: str | None = Field(None, max_length=2000)
    config: dict[str, Any] = Field(default_factory=dict)
    next: NodeIdStr | None = None
    retry: RetryPolicy | None = None
    timeout_s: float | None = Field(None, gt=0, le=7 * 86_400)
    catch: list[CatchRule] = Field(default_factory=list)
    max_iterations: int | None = Field(
        None,
        ge=1,
        le=100_000,
        description="Loop guard: how many times this node may run in one run. Required on "
        "at least one node of every cycle.",
    )


class WorkflowDefaults(_Strict):
    """Workflow-wide defaults that nodes may override."""

    retry: RetryPolicy | None = None
    timeout_s: float | None = Field(None, gt=0, le=7 * 86_400)


class CorrelationSpec(_Strict):
    """How a run's correlation key (its business id: a phone number, an order id) is found,
    and whether it is unique among the workflow's unfinished runs."""

    key: str | None = Field(
        None,
        min_length=1,
        max_length=1000,
        description="Template computing the key from the run's input and vars, e.g. "
        "'{{ input.phone }}'. A key given at start takes precedence; an empty result: no key.",
    )
    unique: bool = Field(
        False,
        description="At most one unfinished run of the workflow holds a key: starting a "
        "second is refused (409) until the first ends.",
    )


class WorkflowDefinition(_Strict):
    """A whole workflow: what users write and what a version stores."""

    name: str = Field(pattern=WORKFLOW_NAME_PATTERN)
    description: str | None = Field(None, max_length=5000)
    input_schema: dict[str, Any] | None = Field(
        None, description="JSON Schema that every run input must satisfy."
    )
    vars: dict[str, Any] = Field(
        default_factory=dict, description="Constants for expressions; a run may override them."
    )
    start: NodeIdStr
    defaults: WorkflowDefaults = Field(default_factory=WorkflowDefaults)
    run_timeout_s: float | None = Field(None, gt=0)
    retention: RetentionStr | None = None
    correlation: CorrelationSpec | None = None
    signals: list[SignalNameStr] | None = Field(
        None,
        max_length=MAX_DECLARED_SIGNALS,
        description="The signal names runs accept; others are refused (422). Without the "
        "list any name is accepted (and buffered until a step waits for it).",
    )
    nodes: list[NodeSpec] = Field(min_length=1, max_length=MAX_NODES)
