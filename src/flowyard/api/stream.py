"""Live run events over websockets: a per-process hub and one session per client.

Source of truth is ``run_events``, read by id cursor. The :class:`StreamHub` keeps the
*event horizon* (every event with an id at or below it is committed or never will be, see
``EventFeed.event_horizon``) and wakes sessions when it moves: when the store's notifier
(``EventFeed.listen_for_events``: on PostgreSQL the one shared ``LISTEN flowyard_events``
connection of the process) wakes it, else by polling (SQLite). A
session reads its filtered events up to the horizon, so ids are delivered in order and a
client resuming with ``?after=<last id>`` misses none and repeats none.

Cancellation: every timeout here is ``asyncio.timeout``, never ``asyncio.wait_for``. On
Python 3.11 ``wait_for`` swallows a cancellation that arrives just as the awaited call
completes (a ``queue.put`` that found room, a wake-up that was just set): a producer then
outlived its session, waiting on the hub forever, and held the hub and the server's shutdown
with it.

Draft events (decision 0030): the global stream also carries ``draft.changed`` and
``draft.published`` as the process's :class:`~flowyard.service.changes.ChangeHub` hears them
(PostgreSQL: from every process; SQLite: from this one). They are live only: no id, not in
``run_events``, not replayed by ``?after=``; an editor that reconnects reads the draft's ETag.

Backpressure: each client has a bounded queue; when it stays full for
``stream_slow_client_s`` the client is closed with 1013 and may resume with its cursor.

Access: a client authenticates with the same tokens as HTTP and needs the role of the
route's ``("WS", path)`` rule in :data:`flowyard.api.security.RULES`. Missing, invalid or
expired credentials close with 4401; a disabled or deleted user, a revoked API key or a role
too low with 1008 (policy violation). An open stream re-checks its token every
``stream_reauth_interval_s``, so revoking access also ends the streams already open.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Protocol

from flowyard.api.draft_schemas import DraftEventPublic
from flowyard.api.schemas import EventPublic
from flowyard.domain import jsonvalue
from flowyard.domain.auth import Role
from flowyard.domain.drafts import DraftEvent
from flowyard.domain.events import EventType
from flowyard.domain.ids import RunId, WorkflowId
from flowyard.domain.records import EventRecord, RunRecord
from flowyard.domain.statuses import RunStatus
from flowyard.security import AccessRevoked, AuthError, AuthService, Principal
from flowyard.service.changes import ChangeHub
from flowyard.store.ports import EventFeed, EventListener

if TYPE_CHECKING:
    from flowyard.bootstrap import Container

_log = logging.getLogger("flowyard.api.stream")

#: Subprotocol the server selects when the client offers it.
SUBPROTOCOL = "flowyard.v1"
#: A subprotocol ``bearer.<token>`` carries the token (browsers cannot set headers).
TOKEN_PREFIX = "bearer."
#: Close codes.
CLOSE_NORMAL = 1000
CLOSE_POLICY_VIOLATION = 1008
CLOSE_TRY_AGAIN_LATER = 1013
CLOSE_INTERNAL = 1011
CLOSE_UNAUTHORIZED = 4401
CLOSE_UNKNOWN_RUN = 4404
#: Event types after which a run may be terminal (its status is then re-read).
TERMINAL_EVENT_TYPES = frozenset(
    {
        EventType.RUN_SUCCEEDED,
        EventType.RUN_FAILED,
        EventType.RUN_CANCELLED,
        EventType.RUN_TIMED_OUT,
    }
)
#: With LISTEN the horizon is still re-read this often (a lost notification costs this much).
LISTEN_SAFETY_NET_S = 2.0
#: How long closing a websocket may take (a client that does not read cannot block us).
CLOSE_TIMEOUT_S = 5.0


class StreamAuthError(Exception):
    """The token or the principal is refused: the websocket is closed with ``code`` (4401:
    not authenticated; 1008: access refused or withdrawn)."""

    def __init__(self, reason: str = "unauthorized", code: int = CLOSE_UNAUTHORIZED) -> None:
        super().__init__(reason)
        self.reason = reason
        self.code = code


#: Token (or None) -> principal. Raises :class:`StreamAuthError` to refuse.
Authenticator = Callable[[str | None], Awaitable[Principal]]
#: Re-checks an open stream's access: None while allowed, else the close code.
Guard = Callable[[], Awaitable[int | None]]
#: A run by id (NotFound): a stream that follows one run ends when the run has ended.
RunLookup = Callable[[str], Awaitable[RunRecord]]


def authenticator_for(auth: AuthService) -> Authenticator:
    """The authenticator over the app's :class:`AuthService` (the same checks as HTTP)."""

    async def authenticate(token: str | None) -> Principal:
        try:
            return await auth.authenticate(token)
        except AccessRevoked as exc:
            raise StreamAuthError(str(exc), CLOSE_POLICY_VIOLATION) from None
        except AuthError as exc:
            raise StreamAuthError(str(exc)) from None

    return authenticate


def require_role(principal: Principal, role: Role | None) -> None:
    """Refuse (1008) a principal whose role is below ``role``."""
    if role is not None and not principal.role.allows(role):
        raise StreamAuthError(f"role {principal.role.value} may not stream", CLOSE_POLICY_VIOLATION)


class WebSocketLike(Protocol):
    """What a session needs of a websocket (starlette's ``WebSocket`` has it)."""

    async def send_text(self, data: str) -> None:
        """Send one text message."""

    async def receive(self) -> MutableMapping[str, Any]:
        """The next ASGI message from the client."""

    async def close(self, code: int = 1000, reason: str | None = None) -> None:
        """Close the connection."""


class StreamHub:
    """Per process (kept on ``app.state``): the shared wake-up source and event horizon.

    Runs only while clients are connected: the first :meth:`acquire` starts the loop (and
    the PostgreSQL listener), the last :meth:`release` stops it."""

    def __init__(self, feed: EventFeed, runs: RunLookup, *, poll_interval_s: float) -> None:
        self.feed = feed
        self.runs = runs
        self.poll_interval_s = poll_interval_s
        self.horizon = 0
        self.listening = False
        self._moved = asyncio.Condition()
        self._wake = asyncio.Event()
        self._users = 0
        self._task: asyncio.Task[None] | None = None

    def wake(self) -> None:
        """Re-read the horizon now (events were committed)."""
        self._wake.set()

    async def acquire(self) -> None:
        """A client connected."""
        self._users += 1
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="flowyard-stream-hub")

    async def release(self) -> None:
        """A client left; the last one stops the loop (and waits until it has stopped, unless
        the caller is cancelled meanwhile: the loop is stopping either way)."""
        self._users -= 1
        if self._users == 0 and self._task is not None:
            task, self._task = self._task, None
            task.cancel()
            await asyncio.wait([task])
            if not task.cancelled() and task.exception() is not None:
                _log.error("the stream hub failed", exc_info=task.exception())

    async def wait_beyond(self, cursor: int) -> int:
        """The horizon, once it is past ``cursor``."""
        async with self._moved:
            await self._moved.wait_for(lambda: self.horizon > cursor)
            return self.horizon

    async def _run(self) -> None:
        listener: EventListener | None = await self.feed.listen_for_events(self.wake)
        try:
            while True:
                self._wake.clear()
                self.listening = listener is not None and listener.is_alive()
                await self._refresh()
                timeout = LISTEN_SAFETY_NET_S if self.listening else self.poll_interval_s
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(timeout):
                        await self._wake.wait()
        finally:
            if listener is not None:
                await listener.close()

    async def _refresh(self) -> None:
        try:
            horizon = await self.feed.event_horizon()
        except Exception:
            _log.exception("reading the event horizon failed; retrying")
            return
        if horizon is not None and horizon > self.horizon:
            async with self._moved:
                self.horizon = horizon
                self._moved.notify_all()


def hub_of(app: Any, container: Container) -> StreamHub:
    """The process's hub, created on first use and kept on ``app.state`` (streams and the
    hooks that answer with a run's output share it)."""
    hub: StreamHub | None = getattr(app.state, "stream_hub", None)
    if hub is None:
        hub = StreamHub(
            container.events,
            container.service.get_run_record,
            poll_interval_s=container.settings.stream_poll_interval_s,
        )
        app.state.stream_hub = hub
    return hub


async def wait_for_end(
    hub: StreamHub, runs: RunLookup, run_id: RunId, timeout_s: float
) -> RunRecord:
    """The run once it has ended, or as it is when ``timeout_s`` passed: read again each
    time the event horizon moves (any run's events: one cheap read per wake-up)."""
    await hub.acquire()
    try:
        async with asyncio.timeout(timeout_s):
            while True:
                horizon = hub.horizon
                run = await runs(run_id)
                if run.status.is_terminal:
                    return run
                await hub.wait_beyond(horizon)
    except TimeoutError:
        return await runs(run_id)
    finally:
        await hub.release()


class StreamKind(StrEnum):
    """Which events the global stream carries (both by default)."""

    RUNS = "runs"
    DRAFTS = "drafts"


@dataclass(frozen=True, slots=True)
class StreamFilter:
    """What one client follows: one run, or runs of a workflow and/or in a status; and, on
    the global stream, the drafts (of that workflow) unless a run status is asked for."""

    run_id: RunId | None = None
    workflow_id: WorkflowId | None = None
    status: RunStatus | None = None
    kind: StreamKind | None = None

    @property
    def runs(self) -> bool:
        """Whether run events are followed."""
        return self.kind in (None, StreamKind.RUNS)

    @property
    def drafts(self) -> bool:
        """Whether draft events are followed: only on the global stream, not with a run
        status (draft events have none)."""
        return (
            self.kind in (None, StreamKind.DRAFTS) and self.run_id is None and self.status is None
        )

    def accepts(self, event: DraftEvent) -> bool:
        """Whether a draft event is for this client."""
        return self.drafts and self.workflow_id in (None, event.workflow_id)


class SlowClient(Exception):
    """The client's queue stayed full."""


class StreamSession:
    """One client: a producer reads events into a bounded queue, a sender drains it, a
    receiver notices the client leaving."""

    def __init__(
        self,
        ws: WebSocketLike,
        hub: StreamHub,
        filter_: StreamFilter,
        *,
        after: int,
        queue_size: int,
        slow_client_s: float,
        guard: Guard | None = None,
        guard_interval_s: float = 30.0,
        changes: ChangeHub | None = None,
    ) -> None:
        self.ws = ws
        self.hub = hub
        self.filter = filter_
        self.cursor = after
        self.slow_client_s = slow_client_s
        self.guard = guard
        self.guard_interval_s = guard_interval_s
        self.queue: asyncio.Queue[EventRecord | DraftEvent | None] = asyncio.Queue(
            maxsize=queue_size
        )
        self.changes = changes if filter_.drafts else None
        self._drafts: deque[DraftEvent] = deque()
        self._drafts_waiting = asyncio.Event()
        self._drafts_overflowed = False

    async def run(self) -> None:
        """Stream until the client leaves, falls behind (1013), loses its access (1008 or
        4401), or the run ends (1000)."""
        await self.hub.acquire()
        changes = self.changes
        if changes is not None:
            await changes.ready()
            changes.subscribe(self._on_draft)
        produce = asyncio.create_task(self._produce(), name="stream-produce")
        send = asyncio.create_task(self._send(), name="stream-send")
        receive = asyncio.create_task(self._receive(), name="stream-receive")
        watch = asyncio.create_task(self._watch(), name="stream-watch")
        forward = asyncio.create_task(self._forward_drafts(), name="stream-drafts")
        tasks = (produce, send, receive, watch, forward)
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            if produce.done() and produce.exception() is None and not watch.done():
                await asyncio.wait((send, receive, watch), return_when=asyncio.FIRST_COMPLETED)
            code: int | None = (
                watch.result()
                if watch.done()
                else self._close_code(forward if forward.done() else produce, send, receive)
            )
        finally:
            try:
                if changes is not None:
                    changes.unsubscribe(self._on_draft)
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
            finally:
                await self.hub.release()
        if code is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(CLOSE_TIMEOUT_S):
                    await self.ws.close(code)

    @staticmethod
    def _close_code(
        produce: asyncio.Task[None], send: asyncio.Task[None], receive: asyncio.Task[None]
    ) -> int | None:
        if receive.done():
            return None  # the client left
        if produce.done():
            exc = produce.exception()
            if isinstance(exc, SlowClient):
                return CLOSE_TRY_AGAIN_LATER
            if exc is not None:
                _log.error("stream failed", exc_info=exc)
                return CLOSE_INTERNAL
        if send.done() and send.exception() is None:
            return CLOSE_NORMAL
        return None  # sending failed: the connection is gone

    def _on_draft(self, event: DraftEvent) -> None:
        """From the hub, on the event loop: keep the event for :meth:`_forward_drafts` (at
        most a queue's worth: a client that far behind is slow)."""
        if not self.filter.accepts(event):
            return
        if len(self._drafts) >= self.queue.maxsize:
            self._drafts_overflowed = True
        else:
            self._drafts.append(event)
        self._drafts_waiting.set()

    async def _forward_drafts(self) -> None:
        """Draft events into the client's queue, under the same slow-client rule."""
        while True:
            await self._drafts_waiting.wait()
            self._drafts_waiting.clear()
            if self._drafts_overflowed:
                raise SlowClient
            while self._drafts:
                await self._put(self._drafts.popleft())

    async def _put(self, item: EventRecord | DraftEvent | None) -> None:
        try:
            async with asyncio.timeout(self.slow_client_s):
                await self.queue.put(item)
        except TimeoutError:
            raise SlowClient from None

    async def _final_horizon(self) -> int | None:
        """If the followed run is terminal: the horizon its last event is under."""
        run_id = self.filter.run_id
        if run_id is None:
            return None
        run = await self.hub.runs(run_id)
        if not RunStatus(run.status).is_terminal:
            return None
        return await self.hub.feed.event_horizon()

    async def _produce(self) -> None:
        if not self.filter.runs:
            await asyncio.Event().wait()  # drafts only: wait to be cancelled
        limit = self.queue.maxsize
        end_at = await self._final_horizon()
        while end_at is None or self.cursor < end_at:
            upto = end_at if end_at is not None else await self.hub.wait_beyond(self.cursor)
            batch = await self.hub.feed.read_events(
                after=self.cursor,
                upto=upto,
                run_id=self.filter.run_id,
                workflow_id=self.filter.workflow_id,
                status=self.filter.status,
                limit=limit,
            )
            for event in batch:
                await self._put(event)
            self.cursor = batch[-1].id if len(batch) == limit else upto
            if end_at is None and any(e.type in TERMINAL_EVENT_TYPES for e in batch):
                end_at = await self._final_horizon()
        await self._put(None)

    async def _send(self) -> None:
        while (event := await self.queue.get()) is not None:
            if isinstance(event, DraftEvent):
                await self.ws.send_text(DraftEventPublic.of(event).model_dump_json())
            else:
                await self.ws.send_text(EventPublic.of(event).model_dump_json())

    async def _receive(self) -> None:
        while (await self.ws.receive())["type"] != "websocket.disconnect":
            pass

    async def _watch(self) -> int:
        """Re-check access every ``guard_interval_s``; the close code once it is refused (a
        failing check, say the database is down, keeps the stream and is tried again)."""
        guard = self.guard
        if guard is None:
            await asyncio.Event().wait()  # nothing to watch: wait to be cancelled
            raise AssertionError("unreachable")
        while True:
            await asyncio.sleep(self.guard_interval_s)
            try:
                code = await guard()
            except Exception:
                _log.warning("re-checking a stream's access failed; retrying", exc_info=True)
                continue
            if code is not None:
                return code


def _usable(token: str | None) -> str | None:
    """``token`` if it can be a token at all: JWTs and API keys are printable ASCII. Anything
    else (U+0000, a lone surrogate, other text) would only make the lookup or the signature
    check fail with an exception instead of a refusal."""
    if token and token.isascii() and token.isprintable():
        return token
    return None


def token_from_subprotocols(offered: list[str]) -> tuple[str | None, str | None]:
    """(token, subprotocol to select) from the client's ``Sec-WebSocket-Protocol``."""
    token = next((p[len(TOKEN_PREFIX) :] for p in offered if p.startswith(TOKEN_PREFIX)), None)
    return _usable(token), SUBPROTOCOL if SUBPROTOCOL in offered else None


#: Longest first message read as a token message: a token is < 1 KiB, and whatever comes
#: before authentication is parsed for anyone who connects.
MAX_TOKEN_MESSAGE_CHARS = 8 * 1024


def token_from_message(message: MutableMapping[str, Any]) -> str | None:
    """The token of a first ASGI message that is a text frame ``{"token": "..."}`` (None
    for anything else: a binary frame, text longer than :data:`MAX_TOKEN_MESSAGE_CHARS`, text
    strict JSON refuses, such as a lone surrogate, U+0000 or 10,000 levels of nesting)."""
    text = message.get("text")
    if not isinstance(text, str) or len(text) > MAX_TOKEN_MESSAGE_CHARS:
        return None
    try:
        parsed = jsonvalue.loads(text, max_depth=2)
    except ValueError:  # a syntax error, undecodable text, or what strict JSON refuses
        return None
    token = parsed.get("token") if isinstance(parsed, dict) else None
    return _usable(token) if isinstance(token, str) else None
