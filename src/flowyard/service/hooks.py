"""Webhook trigger use cases: editors manage hooks (API and CLI); the public intake checks a
delivery with the hook's scheme, maps it to a run input and starts a run of the workflow's
latest version (de-duplicated by delivery id through the run's idempotency key)."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from limits import parse_many
from pydantic import ValidationError

from flowyard.domain.auth import AuditEntry
from flowyard.domain.credentials import is_valid_name
from flowyard.domain.errors import Conflict, InvalidInput, NodeError, NotFound, Problem
from flowyard.domain.hooks import (
    HOOK_PATH_PATTERN,
    HookChange,
    HookConfig,
    HookRecord,
    HookRefused,
    HookScheme,
    NewHook,
    RefusalReason,
    is_hook_id,
)
from flowyard.domain.records import RunRecord, SignalRecord
from flowyard.domain.triggers import hook_source
from flowyard.engine.validation import pointer_from_loc
from flowyard.expressions import ExpressionEngine, ExpressionError
from flowyard.nodes.base import CredentialSource
from flowyard.service.runs import check_correlation_key
from flowyard.service.triggers import Gated, TriggerService
from flowyard.store.ports import HookStore
from flowyard.triggers import intake as bodies
from flowyard.triggers.signing import (
    SignedRequest,
    check_credential,
    secret_of,
    verify,
    verify_subscription,
)

if TYPE_CHECKING:
    from flowyard.service import FlowyardService

_PATH = re.compile(HOOK_PATH_PATTERN)


@dataclass(frozen=True, slots=True)
class DeliveryRequest:
    """A request to a hook's public URL, as received (headers with lower-case names)."""

    path: str
    url: str
    query_string: str
    query: Sequence[tuple[str, str]]
    headers: Mapping[str, str]
    body: bytes
    content_type: str | None


@dataclass(frozen=True, slots=True)
class Delivered:
    """What a delivery did: the run it started (``created``) or found (a repeat), or the
    signal it delivered (``signal``; ``woke``: a waiting step took it). A repeated signal
    delivery has neither run nor signal."""

    hook: HookRecord
    run: RunRecord | None
    created: bool
    signal: SignalRecord | None = None
    woke: bool = False
    #: Debounced (a pending start) or throttled (dropped): no run now.
    gated: Gated | None = None


def _invalid(message: str, pointer: str, code: str = "invalid") -> InvalidInput:
    return InvalidInput(message, [Problem(pointer, message, code)])


def refused_input(reason: RefusalReason, exc: InvalidInput) -> HookRefused:
    """A delivery refused for an input problem, with the problems' pointers."""
    return HookRefused(reason, exc.message, problems=[p.as_dict() for p in exc.problems])


def parse_config(raw: Mapping[str, Any]) -> HookConfig:
    """A hook's configuration from request fields (InvalidInput with pointers)."""
    try:
        return HookConfig.model_validate(dict(raw))
    except ValidationError as exc:
        problems = [
            Problem(pointer_from_loc("", list(err["loc"])), err["msg"], str(err["type"]))
            for err in exc.errors(include_url=False, include_input=False, include_context=False)
        ]
        raise InvalidInput("invalid hook configuration", problems) from None


class HookService:
    """Hooks (resources) and their intake."""

    def __init__(
        self,
        store: HookStore,
        service: FlowyardService,
        credentials: CredentialSource,
        expressions: ExpressionEngine,
        *,
        clock: Callable[[], datetime],
        public_url: str | None = None,
        wall: Callable[[], float] = time.time,
        triggers: TriggerService | None = None,
    ) -> None:
        self.store = store
        self.service = service
        self.credentials = credentials
        self.expressions = expressions
        self.clock = clock
        self.public_url = public_url.rstrip("/") if public_url else None
        #: Unix seconds for the hmac scheme's replay window (tests replace it).
        self.wall = wall
        #: Debounce and throttle (a hook without them never reaches it).
        self.triggers = triggers

    # -- management ------------------------------------------------------------------------

    async def _check(self, config: HookConfig) -> None:
        """Templates compile, the rate limit parses and the credential fits the scheme
        (InvalidInput)."""
        if config.rate_limit is not None:
            try:
                items = parse_many(config.rate_limit)
            except ValueError:
                items = []
            if not items or any(item.amount < 1 for item in items):
                raise _invalid(
                    f"{config.rate_limit!r} is not a rate limit; write e.g. '600/minute'",
                    "/rate_limit",
                    "rate_limit",
                )
        templates = [("/input" + p, s) for p, s in self.expressions.find_templates(config.input)]
        if config.action.signal is not None:
            templates.append(
                ("/action/signal/correlation_key", config.action.signal.correlation_key)
            )
        for pointer, source in templates:
            try:
                self.expressions.check_template(source)
            except ExpressionError as exc:
                raise _invalid(f"template at {pointer}: {exc}", pointer, "expression") from None
        if self.triggers is not None:
            self.triggers.check_controls(config)
        try:
            credential = await self.credentials.get(config.auth.credential)
        except NodeError as exc:
            raise _invalid(exc.message, "/auth/credential", "credential") from None
        if (problem := check_credential(credential, config.auth.scheme)) is not None:
            raise _invalid(problem, "/auth/credential", "credential")

    async def create(
        self,
        *,
        name: str,
        workflow: str,
        config: HookConfig,
        path: str | None = None,
        enabled: bool = True,
        actor: str | None = None,
        audit: AuditEntry | None = None,
    ) -> HookRecord:
        """Create a hook on ``workflow`` (id or name): InvalidInput, NotFound, Conflict."""
        if not is_valid_name(name):
            raise _invalid("a hook name is lower-case letters, digits, _ . -", "/name", "pattern")
        if path is not None and not _PATH.match(path):
            raise _invalid(f"a hook path matches {HOOK_PATH_PATTERN}", "/path", "pattern")
        record = await self.service.get_workflow(workflow)
        await self._check(config)
        new = NewHook(name, record.id, path, enabled, config, actor)
        return await self.store.create_hook(new, self.clock(), audit=audit)

    async def get(self, ref: str) -> HookRecord:
        """A hook by id or name (NotFound)."""
        return await self.store.get_hook(ref)

    async def list(
        self, *, workflow: str | None = None, limit: int = 100, after: str | None = None
    ) -> list[HookRecord]:
        """Hooks by name, optionally of one workflow (id or name)."""
        workflow_id = (await self.service.get_workflow(workflow)).id if workflow else None
        return await self.store.list_hooks(workflow_id=workflow_id, limit=limit, after=after)

    async def update(
        self,
        ref: str,
        *,
        enabled: bool | None = None,
        path: str | None = None,
        clear_path: bool = False,
        config: HookConfig | None = None,
        workflow: str | None = None,
        audit: AuditEntry | None = None,
    ) -> HookRecord:
        """Enable, disable, move or reconfigure a hook."""
        if path is not None and not _PATH.match(path):
            raise _invalid(f"a hook path matches {HOOK_PATH_PATTERN}", "/path", "pattern")
        if config is not None:
            await self._check(config)
        workflow_id = (await self.service.get_workflow(workflow)).id if workflow else None
        change = HookChange(enabled, path, clear_path, config, workflow_id)
        return await self.store.update_hook(ref, change, self.clock(), audit=audit)

    async def delete(self, ref: str, *, audit: AuditEntry | None = None) -> None:
        """Delete a hook (its URL answers 404 from now on)."""
        await self.store.delete_hook(ref, audit=audit)

    # -- intake ----------------------------------------------------------------------------

    async def find(self, *, hook_id: str | None = None, path: str | None = None) -> HookRecord:
        """The enabled hook a public URL names (HookRefused: unknown or disabled)."""
        unknown = HookRefused(RefusalReason.UNKNOWN_HOOK, "no enabled hook at this URL")
        try:
            if hook_id is not None:
                if not is_hook_id(hook_id):
                    raise unknown
                hook = await self.store.get_hook(hook_id)
                if hook.id != hook_id:  # a name is not a public URL
                    raise unknown
            elif path is not None and _PATH.match(path):
                hook = await self.store.get_hook_by_path(path)
            else:
                raise unknown
        except NotFound:
            raise unknown from None
        if not hook.enabled:
            raise HookRefused(RefusalReason.DISABLED, "no enabled hook at this URL")
        return hook

    async def _secret(self, hook: HookRecord) -> tuple[str, Mapping[str, Any]]:
        try:
            credential = await self.credentials.get(hook.config.auth.credential)
        except NodeError:
            credential = None
        if credential is None or check_credential(credential, hook.config.auth.scheme):
            raise HookRefused(
                RefusalReason.CREDENTIAL_UNAVAILABLE, "the hook's credential cannot be used"
            )
        return secret_of(credential, hook.config.auth.scheme), credential.values

    def signed_url(self, hook: HookRecord, request: DeliveryRequest) -> str:
        """The URL the sender signed: the hook's ``public_url``, else ``FLOWYARD_PUBLIC_URL``
        and the request's path, else the URL as received; with the request's query."""
        base = hook.config.auth.public_url
        if base is None and self.public_url is not None:
            base = self.public_url + request.path
        if base is None:
            base = request.url.partition("?")[0]
        return f"{base}?{request.query_string}" if request.query_string else base

    async def authenticate(self, hook: HookRecord, request: DeliveryRequest) -> bodies.ParsedBody:
        """Check the delivery with the hook's scheme, then parse its body (strictly)."""
        secret, _ = await self._secret(hook)
        media = bodies.media_type(request.content_type)
        form = bodies.parse_form(request.body) if media == bodies.FORM else None
        signed = SignedRequest(request.body, request.headers, self.signed_url(hook, request), form)
        verify(hook.config.auth, secret, signed, self.wall())
        if form is not None:
            return bodies.ParsedBody(form=form)
        return bodies.parse_body(request.body, request.content_type)

    async def _input(self, hook: HookRecord, intake: bodies.Intake) -> Any:
        template = hook.config.input
        if template is None:
            return intake.default_input()
        try:
            return await self.expressions.render_value_async(template, intake.scope())
        except ExpressionError as exc:
            raise HookRefused(
                RefusalReason.INPUT_MAPPING, f"the hook's input template failed: {exc}"
            ) from None

    async def _idempotency_key(self, hook: HookRecord, intake: bodies.Intake) -> str | None:
        delivery = bodies.delivery_id(hook.config, intake)
        if delivery is None or hook.config.dedupe is None:
            return None
        key = bodies.delivery_key(delivery)
        first_at = await self.store.note_delivery(
            hook.id, key, self.clock(), hook.config.dedupe.window_s
        )
        # The window's start makes the key: a repeat within it finds the first run; after
        # it, a new window (a new key) starts a new run.
        return f"hook:{hook.id}:{int(first_at.timestamp() * 1_000_000)}:{key}"

    async def deliver(
        self, hook: HookRecord, request: DeliveryRequest, *, audit: AuditEntry | None = None
    ) -> Delivered:
        """Authenticate a delivery and start its run (or find the run of its first delivery).
        HookRefused says why nothing was started."""
        body = await self.authenticate(hook, request)
        intake = bodies.Intake(
            body, request.query, request.headers, bodies.hidden_headers(hook.config)
        )
        run_input = await self._input(hook, intake)
        if hook.config.action.signal is not None:
            return await self._signal(hook, intake, run_input, audit)
        idempotency_key = await self._idempotency_key(hook, intake)
        if self.triggers is not None and (hook.config.debounce or hook.config.throttle):
            return await self._gated(hook, intake, run_input, idempotency_key, audit)
        try:
            run, created = await self.service.start_run(
                hook.workflow_id,
                run_input,
                idempotency_key=idempotency_key,
                actor=f"hook:{hook.name}",
                audit=audit,
            )
        except InvalidInput as exc:
            raise refused_input(RefusalReason.INVALID_INPUT, exc) from None
        return Delivered(hook, run, created)

    async def _gated(
        self,
        hook: HookRecord,
        intake: bodies.Intake,
        run_input: Any,
        idempotency_key: str | None,
        audit: AuditEntry | None,
    ) -> Delivered:
        """A delivery through the hook's debounce or throttle (their keys see the
        templates' scope and ``input``)."""
        assert self.triggers is not None
        try:
            gated = await self.triggers.start_gated(
                hook_source(hook.id),
                hook.workflow_id,
                run_input,
                intake.scope(),
                hook.config,
                idempotency_key=idempotency_key,
                actor=f"hook:{hook.name}",
                audit=audit,
            )
        except ExpressionError as exc:
            raise HookRefused(
                RefusalReason.INPUT_MAPPING, f"the hook's debounce or throttle key failed: {exc}"
            ) from None
        except InvalidInput as exc:
            raise refused_input(RefusalReason.INVALID_INPUT, exc) from None
        return Delivered(hook, gated.run, gated.created, gated=gated)

    async def _correlation_key(self, hook: HookRecord, intake: bodies.Intake) -> str:
        action = hook.config.action.signal
        assert action is not None
        try:
            key = await self.expressions.render_value_async(action.correlation_key, intake.scope())
        except ExpressionError as exc:
            raise HookRefused(
                RefusalReason.INPUT_MAPPING, f"the hook's correlation_key template failed: {exc}"
            ) from None
        if isinstance(key, bool) or not isinstance(key, str | int):
            raise HookRefused(RefusalReason.INPUT_MAPPING, "the correlation key is not a string")
        try:
            check_correlation_key(str(key), "/correlation_key")
        except InvalidInput as exc:
            raise refused_input(RefusalReason.INPUT_MAPPING, exc) from None
        return str(key)

    async def _signal(
        self, hook: HookRecord, intake: bodies.Intake, payload: Any, audit: AuditEntry | None
    ) -> Delivered:
        """Deliver the hook's signal to the unfinished run holding the correlation key.
        De-duplicated at least once: a delivery id is remembered after its signal is in
        (a provider's retry of a delivery that failed delivers it; a repeat of one that
        succeeded does not)."""
        action = hook.config.action.signal
        assert action is not None
        key = await self._correlation_key(hook, intake)
        delivery = bodies.delivery_id(hook.config, intake)
        dedupe = hook.config.dedupe
        dkey = bodies.delivery_key(delivery) if delivery is not None else None
        if dkey is not None and await self.store.delivery_window(hook.id, dkey, self.clock()):
            return Delivered(hook, None, False)
        try:
            signal, woke = await self.service.signal_by_correlation(
                hook.workflow_id,
                key,
                action.name,
                payload,
                actor=f"hook:{hook.name}",
                audit=audit,
            )
        except NotFound as exc:
            raise HookRefused(RefusalReason.NO_RUN, exc.message) from None
        except Conflict as exc:
            raise HookRefused(RefusalReason.CONFLICT, exc.message) from None
        except InvalidInput as exc:
            raise refused_input(RefusalReason.INVALID_INPUT, exc) from None
        if dkey is not None and dedupe is not None:
            await self.store.note_delivery(hook.id, dkey, self.clock(), dedupe.window_s)
        run = await self.service.get_run_record(signal.run_id)
        return Delivered(hook, run, True, signal, woke)

    async def subscription_challenge(self, hook: HookRecord, query: Mapping[str, str]) -> str:
        """Meta's verification request: the ``hub.challenge`` to answer (HookRefused)."""
        if hook.config.auth.scheme is not HookScheme.META:
            raise HookRefused(RefusalReason.VERIFY_TOKEN, "this hook takes no verification")
        _, values = await self._secret(hook)
        token = values.get("verify_token")
        return verify_subscription(str(token) if token else None, query)
