"""The node-type plugin protocol.

A node type is a class with a pydantic ``config_model`` (its JSON Schema is served to editors)
and an async ``execute``. Node types classify their own failures by raising
:class:`~flowyard.domain.errors.TransientError` or :class:`~flowyard.domain.errors.PermanentError`
with a stable ``error_type``.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar, Generic, Protocol, TypeVar, cast

import httpx
from pydantic import BaseModel, ConfigDict

from flowyard.domain.clock import utc_now
from flowyard.domain.commands import ChildRun, Fork, Wait
from flowyard.domain.credentials import CredentialType, ResolvedCredential, redact
from flowyard.domain.errors import PermanentError
from flowyard.domain.quotas import credential_key, node_type_key
from flowyard.domain.records import BranchResult, SignalRecord
from flowyard.expressions import ExpressionEngine
from flowyard.nodes.expression_schema import mark_expressions
from flowyard.outbound import Authenticator, Outbound

C = TypeVar("C", bound=BaseModel)


class NodeConfig(BaseModel):
    """Base for config models: unknown keys are mistakes, not silently ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class EmptyConfig(NodeConfig):
    """Config of node types that take none."""


@dataclass(frozen=True, slots=True)
class Route:
    """A control-flow target declared inside a node's config (e.g. a condition case)."""

    pointer: str  # relative to the node, e.g. "/config/cases/0/next"
    target: str
    #: What the console writes on the edge (a case's condition, a branch's name); without
    #: one it writes the pointer below ``/config``.
    label: str = ""


@dataclass(frozen=True, slots=True)
class ExpressionRef:
    """An expression or template inside a node's config, for validation."""

    pointer: str  # relative to the node
    source: str
    kind: str  # "condition" | "template"


@dataclass(frozen=True, slots=True)
class NodeOutcome:
    """What a successful execution produced.

    ``next`` overrides the node's static ``next`` (branching nodes choose it); ``end`` ends
    this path of the run with ``output`` as the run output candidate. ``wait`` parks the step:
    it runs again when its timer passes or something wakes it (``fork``/``child`` also say
    what to start first).
    """

    output: Any = None
    next: str | None = None
    end: bool = False
    #: Park the step instead of finishing it (a timer, a signal, a join, a child run).
    wait: Wait | None = None
    fork: Fork | None = None
    child: ChildRun | None = None
    #: The id of the buffered signal this execution took.
    consume_signal: int | None = None


@dataclass(frozen=True, slots=True)
class ResolvedWorkflow:
    """A workflow version a sub-workflow step may start."""

    workflow_id: str
    version: int
    name: str
    start_node: str
    start_type: str
    run_timeout_s: float | None = None


class WorkflowResolver(Protocol):
    """Looks a workflow up by id or name (and version; None: latest) for sub-workflows."""

    async def resolve(
        self, ref: str, version: int | None, *, parent_run_id: str
    ) -> ResolvedWorkflow:
        """The version to start as a child of ``parent_run_id``; raises PermanentError when
        there is none, or when child runs already nest too deep there."""
        ...


class CredentialSource(Protocol):
    """Resolves credentials by name, inside a worker only (the vault is wired in bootstrap).
    What it returns goes to the outbound layer, never to node code."""

    async def get(self, name: str) -> ResolvedCredential:
        """The decrypted credential; PermanentError(``credential.not_found``) when unknown."""
        ...


@dataclass(slots=True)
class StepContext:
    """Everything a node may use while executing one step."""

    run_id: str
    workflow_id: str
    workflow_version: int
    node_id: str
    step_id: int
    attempt: int
    iteration: int
    idempotency_key: str
    scope: Mapping[str, Any]
    expressions: ExpressionEngine
    http: httpx.AsyncClient
    logger: logging.Logger = field(default_factory=lambda: logging.getLogger("flowyard.node"))
    #: Resolves credentials by name (None outside a worker); see :meth:`credential`.
    credentials: CredentialSource | None = None
    #: The worker's clock (injectable: tests move it instead of sleeping).
    now: datetime = field(default_factory=utc_now)
    #: Set when this step waited before and now runs again (its timer, what it waits for).
    wait_until: datetime | None = None
    waiting_for: str | None = None
    #: ``steps.branch`` of this step ('' on the main path).
    branch: str = ""
    #: Signals delivered to the run and not yet taken, oldest first.
    signals: Sequence[SignalRecord] = ()
    #: When the step waited for branches or a child run: how each ended, in order.
    children: Sequence[BranchResult] | None = None
    #: Resolves the workflows a sub-workflow step starts (None outside a worker).
    workflows: WorkflowResolver | None = None
    #: The outbound layer (credential application, redirects); None: one over ``http``.
    outbound: Outbound | None = None
    #: Adds a secret derived while sending (an OAuth access token) to what is redacted.
    remember_secret: Callable[[str], None] | None = None
    #: The secrets of the credentials this step resolved (see :meth:`redact`).
    _secrets: set[str] = field(default_factory=set, init=False, repr=False)

    @property
    def resumed(self) -> bool:
        """True when the step waited before (this is its wake-up)."""
        return self.waiting_for is not None

    async def _resolve(self, name: str) -> ResolvedCredential:
        if self.credentials is None:
            raise PermanentError(
                f"no credential source to resolve {name!r} (credentials resolve in workers)",
                error_type="credential.unavailable",
            )
        resolved = await self.credentials.get(name)
        self._secrets.update(resolved.secrets)
        return resolved

    async def credential(self, name: str) -> ResolvedCredential:
        """The credential called ``name``, secrets included, only for integrations whose
        protocol the outbound layer does not carry (an SMTP relay's login; to check a type,
        :meth:`credential_type`); its secrets join what the step redacts. HTTP requests do
        not need it: :meth:`send` attaches the credential itself, per hop, to the origins it
        admits."""
        return await self._resolve(name)

    async def credential_info(self, name: str) -> dict[str, Any]:
        """The plain (non-secret) fields of the credential called ``name`` (e.g. an
        ``instance_url`` to build URLs with); its secrets stay in the outbound layer."""
        return (await self._resolve(name)).public_values

    async def credential_type(self, name: str) -> CredentialType:
        """The type of the credential called ``name`` (not a secret): a node checks it
        before sending, so a credential of another type never goes to its provider."""
        return (await self._resolve(name)).type

    async def send(
        self,
        request: httpx.Request,
        *,
        credential: str | None = None,
        follow_redirects: bool = False,
    ) -> httpx.Response:
        """Send ``request`` through the outbound layer (streamed: read and close the
        response). With ``credential``, the credential of that name is attached at send time
        to each hop whose origin it admits (``credential.origin_not_allowed`` when the
        request's own origin is not one); the node never sees its values. Every hop obeys
        the egress policy of the client."""
        resolved = await self._resolve(credential) if credential is not None else None
        outbound = self.outbound if self.outbound is not None else Outbound(self.http)
        return await outbound.send(
            request, credential=resolved, follow_redirects=follow_redirects, remember=self._remember
        )

    def _remember(self, secret: str) -> None:
        if secret:
            self._secrets.add(secret)
        if self.remember_secret is not None:
            self.remember_secret(secret)

    def redact(self, value: Any) -> Any:
        """``value`` without the secrets of the credentials this step has resolved (and those
        derived while sending). The worker redacts everything a step produces anyway; a node
        that *cuts* text it got back (a body shortened for an error) calls this first, since
        a secret cut in two is no longer recognisable."""
        return redact(value, self._secrets)

    async def render(self, value: Any, scope: Mapping[str, Any] | None = None) -> Any:
        """Render every template inside ``value`` against the run scope (or ``scope``).

        Evaluation runs off the event loop (the engine's own threads), so an expensive
        template never stalls other steps, claims or commits of this process."""
        return await self.expressions.render_value_async(
            value, self.scope if scope is None else scope
        )

    async def test(self, condition: str) -> bool:
        """Evaluate a condition against the run scope (off the event loop)."""
        return await self.expressions.test_async(condition, self.scope)


class NodeType(ABC, Generic[C]):
    """Base class of every node type; subclasses set the class variables and ``execute``."""

    type_name: ClassVar[str]
    config_model: ClassVar[type[BaseModel]] = EmptyConfig
    #: The shape of the output, when the type declares it: the worker stores exactly what
    #: this model admits (unknown keys dropped; a mismatch fails the step), and
    #: ``GET /node-types`` serves its JSON Schema as ``output_schema``.
    output_model: ClassVar[type[BaseModel] | None] = None
    description: ClassVar[str] = ""
    #: Terminal node types end a path; a ``next`` on them is a definition error.
    terminal: ClassVar[bool] = False
    #: Branching node types choose their target in config; a static ``next`` is optional.
    branching: ClassVar[bool] = False
    #: The step reads the run's buffered signals (``StepContext.signals``) when it executes.
    listens_for_signals: ClassVar[bool] = False
    #: Config fields rendered as templates when a step runs, and those evaluated as
    #: conditions: JSON pointers into the config (``/message``, ``/cases/*/when``).
    #: ``GET /node-types`` marks them in the config schema (``x-flowyard-expression``).
    template_fields: ClassVar[tuple[str, ...]] = ()
    condition_fields: ClassVar[tuple[str, ...]] = ()

    def authenticators(self) -> Mapping[CredentialType, Authenticator]:
        """Authenticators this node type brings for credential types the outbound layer
        does not know (an OAuth token exchange, a provider's own scheme); the registry hands
        them to the outbound layer, so a plugin's credential works like a built-in one."""
        return {}

    async def aclose(self) -> None:
        """Release what the type keeps between steps (idle connections of its own); called
        once when the process's container closes."""

    def parse_config(self, raw: Mapping[str, Any]) -> C:
        """Validate raw config into the config model (raises pydantic.ValidationError)."""
        return cast("C", self.config_model.model_validate(dict(raw)))

    def routes(self, config: C) -> list[Route]:
        """Targets named in the config (beyond the node's ``next``)."""
        return []

    def credential_refs(self, config: C) -> list[tuple[str, str]]:
        """``(pointer relative to the node, credential name)`` of every credential the config
        references, so a save can check they exist."""
        return []

    def signal_refs(self, config: C) -> list[tuple[str, str]]:
        """``(pointer relative to the node, signal name)`` of every signal a step of this
        node waits for, so a definition that declares its signals can be checked."""
        return []

    def quota_keys(self, config: C) -> list[str]:
        """The provider quotas a step of this node is subject to: ``node_type:<type>`` and
        ``credential:<name>`` of each credential the config references. Only keys an admin
        gave a quota count; a node type whose calls spend another budget adds its keys."""
        keys = [node_type_key(self.type_name)]
        keys.extend(credential_key(name) for _, name in self.credential_refs(config))
        return list(dict.fromkeys(keys))

    def request_target_pointers(self, config: C) -> list[str]:
        """Pointers (relative to the node, e.g. ``/config/url``) of the config fields that
        decide where a credentialed request goes (URL, headers, query), when the node sends
        a credential. Run-start ``vars`` may not set the vars these templates read."""
        return []

    def branch_routes(self, config: C) -> list[Route]:
        """The routes (among :meth:`routes`) that start a branch of a fork: the nodes they
        lead to run inside the branch and must not be shared with the outer path."""
        return []

    def expressions(
        self, config: C, raw: Mapping[str, Any], engine: ExpressionEngine
    ) -> list[ExpressionRef]:
        """Expressions in the config; by default every template string in it."""
        return [
            ExpressionRef("/config" + pointer, source, "template")
            for pointer, source in engine.find_templates(dict(raw))
        ]

    @abstractmethod
    async def execute(self, ctx: StepContext, config: C) -> NodeOutcome:
        """Run one step. Raise TransientError/PermanentError to fail it."""

    @classmethod
    def config_schema(cls) -> dict[str, Any]:
        """The config model's JSON Schema with the expression fields marked."""
        schema = cls.config_model.model_json_schema()
        mark_expressions(schema, cls.template_fields, "template")
        return mark_expressions(schema, cls.condition_fields, "condition")

    @classmethod
    def describe(cls) -> dict[str, Any]:
        """The registry entry served at ``GET /api/v1/node-types``."""
        return {
            "type": cls.type_name,
            "description": cls.description,
            "terminal": cls.terminal,
            "branching": cls.branching,
            "config_schema": cls.config_schema(),
            "output_schema": (
                cls.output_model.model_json_schema() if cls.output_model is not None else None
            ),
        }
