"""Campaign use cases: start many runs of a workflow at once from a JSON array, NDJSON or
CSV (validated in full before anything is started), read progress from the counters, page
the runs, and pause, resume, cancel or retry a campaign's runs as a whole.

Starting is two passes (decision 0028). The first reads the items one at a time, checks
each (strict JSON, the workflow's input schema, its key: rendered, valid, unique in the
campaign) and writes the accepted ones to a temporary file as canonical JSON; a bad item is
a 422 naming it, and nothing was started. The second hands the file to the store in chunks
and the store writes every run in one transaction. Only one chunk of items is ever held as
Python objects (a JSON array body excepted: it arrived parsed), and a slow client uploading
never holds a database transaction open."""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import IO, Any

from flowyard.campaigns.items import Item, ItemError, ItemFormat, from_csv, from_list, from_ndjson
from flowyard.campaigns.keys import KeyRenderError, KeyTemplate, KeyTemplateError
from flowyard.domain import jsonvalue
from flowyard.domain.auth import AuditEntry
from flowyard.domain.campaigns import (
    CampaignItem,
    CampaignLimits,
    CampaignRecord,
    CampaignStatus,
    NewCampaign,
    SpooledItems,
    spool_line,
)
from flowyard.domain.errors import Conflict, InvalidInput, Problem
from flowyard.domain.priorities import BULK, DEFAULT_WEIGHT, check_priority, check_weight
from flowyard.domain.quotas import MAX_CONCURRENCY, parse_rate
from flowyard.domain.records import RunRecord
from flowyard.domain.statuses import RunStatus
from flowyard.engine.compiled import CompiledWorkflow
from flowyard.engine.input_schema import InputValidator
from flowyard.engine.transitions import first_step
from flowyard.service.lifecycle import LifecycleUseCases
from flowyard.service.runs import (
    MAX_RUN_PAYLOAD_BYTES,
    check_correlation_key,
    check_run_payload,
    run_deadline,
)

#: Items the store writes per chunk (and the most held as objects at once).
CHUNK = 5000
#: Problems one refusal lists before it stops reading.
MAX_PROBLEMS = 20
#: Runs moved per page when a campaign is paused, resumed, cancelled or retried: each run
#: moves in its own short transaction (the lifecycle's), so no lock is held for long.
PAGE = 200
#: Items one campaign may hold.
MAX_ITEMS = 1_000_000
MAX_NAME = 200

_ACTIONS: dict[str, tuple[RunStatus, ...]] = {
    "pause": (RunStatus.PENDING, RunStatus.RUNNING, RunStatus.WAITING),
    "resume": (RunStatus.PAUSED,),
    "cancel": (RunStatus.PENDING, RunStatus.RUNNING, RunStatus.WAITING, RunStatus.PAUSED),
    "retry-failed": (RunStatus.FAILED, RunStatus.TIMED_OUT),
}


@dataclass(frozen=True, slots=True)
class CampaignAction:
    """What a whole-campaign action did: the campaign after it, runs moved and skipped
    (they had moved on by themselves meanwhile)."""

    campaign: CampaignRecord
    moved: int
    skipped: int


@dataclass(slots=True)
class _Spool:
    """The accepted items of the first pass, one line each as
    :class:`~flowyard.domain.campaigns.SpooledItems` reads them (the fields in ``COPY``
    text format, which PostgreSQL's ``COPY`` takes as they are)."""

    file: IO[bytes]
    total: int
    checksum: str

    def chunks(self) -> Iterator[Sequence[CampaignItem]]:
        self.file.seek(0)
        while lines := list(itertools.islice(self.file, CHUNK)):
            yield SpooledItems(b"".join(lines).decode().split("\n")[:-1])


class CampaignUseCases(LifecycleUseCases):
    """Campaigns over the store's campaign port and the run lifecycle."""

    async def start_campaign(
        self,
        workflow: str,
        name: str,
        fmt: ItemFormat,
        source: Sequence[Any] | IO[bytes],
        *,
        item_key: str | None = None,
        vars: dict[str, Any] | None = None,
        priority: int = BULK,
        weight: int = DEFAULT_WEIGHT,
        limits: LimitsSpec | None = None,
        concurrency_key: str | None = None,
        idempotency_key: str | None = None,
        actor: str | None = None,
        audit: AuditEntry | None = None,
    ) -> tuple[CampaignRecord, bool]:
        """Start one run of ``workflow``'s latest version per item, all or none (see the
        module). Returns the campaign and whether it was created (False: the same campaign
        and items were posted before)."""
        if not name or len(name) > MAX_NAME or not name.isprintable():
            raise InvalidInput(
                "the campaign name is invalid",
                [Problem("/name", f"1 to {MAX_NAME} printable characters", "pattern")],
            )
        for pointer, check, value in (
            ("/priority", check_priority, priority),
            ("/weight", check_weight, weight),
        ):
            try:
                check(value)
            except ValueError as exc:
                raise InvalidInput(str(exc), [Problem(pointer, str(exc), "range")]) from None
        template = None
        if item_key is not None:
            try:
                template = KeyTemplate.compile(item_key)
            except KeyTemplateError as exc:
                raise InvalidInput(str(exc), [Problem("/item_key", str(exc), "pattern")]) from None
        checked = checked_limits(limits or LimitsSpec(), concurrency_key)
        limit_template = KeyTemplate.compile(concurrency_key) if concurrency_key else None
        record = await self.store.get_workflow(workflow)
        if record.archived:
            raise Conflict(f"workflow {record.name!r} is archived; save a new version to use it")
        stored = await self.store.get_version(record.id, None)
        wf = await self.cache.get(record.id, stored.version)
        spec = wf.definition.correlation
        if template is None and spec is not None and spec.key is not None:
            raise InvalidInput(
                "this workflow computes a correlation key for each run: give the campaign an "
                "item_key ({{ item.<field> }})",
                [Problem("/item_key", "required for this workflow", "required")],
            )
        problems = check_run_payload(wf, {}, vars)
        if problems := [p for p in problems if p.pointer.startswith("/vars")]:
            raise InvalidInput("the campaign's vars are invalid", problems)
        items = from_list(source) if isinstance(source, Sequence) else _items(fmt, source)
        spool = await asyncio.to_thread(_accept, wf, items, template, limit_template)
        try:
            now = self.clock()
            first = first_step(wf, now)
            new = NewCampaign(
                workflow_id=record.id,
                workflow_version=stored.version,
                name=name,
                start_node=first.node_id,
                start_node_type=first.node_type,
                checksum=spool.checksum,
                total=spool.total,
                item_key=item_key,
                idempotency_key=idempotency_key,
                created_by=actor,
                vars=vars or {},
                deadline_at=run_deadline(wf, now),
                correlation_unique=bool(spec and spec.unique and template is not None),
                priority=priority,
                weight=weight,
                limits=checked,
                concurrency_key=concurrency_key,
            )
            campaign, created = await self.store.start_campaign(new, spool.chunks, now, audit=audit)
        finally:
            spool.file.close()
        if created:
            if self.metrics is not None:
                self.metrics.runs_started.labels(wf.definition.name).inc(campaign.total)
            self._enqueued()
        return campaign, created

    async def get_campaign(self, campaign_id: str) -> CampaignRecord:
        """A campaign with its counts by run status (NotFound)."""
        return await self.store.get_campaign(campaign_id, now=self.clock())

    async def list_campaigns(
        self, *, workflow: str | None = None, limit: int = 50, before: str | None = None
    ) -> list[CampaignRecord]:
        """Campaigns newest first, optionally of one workflow (id or name)."""
        workflow_id = (await self.store.get_workflow(workflow)).id if workflow else None
        return await self.store.list_campaigns(
            workflow_id=workflow_id, limit=limit, before=before, now=self.clock()
        )

    async def list_campaign_runs(
        self,
        campaign_id: str,
        *,
        status: RunStatus | None = None,
        correlation_key: str | None = None,
        after: str | None = None,
        limit: int = 50,
    ) -> list[RunRecord]:
        """A campaign's runs in id order after a cursor (NotFound for an unknown campaign)."""
        campaign = await self.store.get_campaign(campaign_id, now=self.clock())
        return await self.store.list_campaign_runs(
            campaign.id,
            statuses=(status,) if status else (),
            correlation_key=correlation_key,
            after=after,
            limit=limit,
        )

    async def campaign_action(
        self,
        campaign_id: str,
        action: str,
        *,
        actor: str | None = None,
        audit: AuditEntry | None = None,
    ) -> CampaignAction:
        """Pause, resume, cancel or retry-failed every run of the campaign it applies to,
        page by page, each run through its own lifecycle transaction. The campaign's status
        is recorded first (with the audit entry), so a second call continues the first."""
        statuses = _ACTIONS[action]
        campaign = await self.store.get_campaign(campaign_id, now=self.clock())
        if campaign.status == CampaignStatus.CANCELLED and action != "retry-failed":
            raise Conflict(f"campaign {campaign.id} is cancelled", detail={"status": "cancelled"})
        status = {
            "pause": CampaignStatus.PAUSED,
            "resume": CampaignStatus.RUNNING,
            "cancel": CampaignStatus.CANCELLED,
            "retry-failed": CampaignStatus.RUNNING,
        }[action]
        await self.store.set_campaign_status(campaign.id, status, now=self.clock(), audit=audit)
        if action == "retry-failed":
            # The pruner deleted its quota rows when its runs had all ended: its runs come
            # back under the limits the campaign kept.
            await self.store.restore_campaign_limits(campaign.id, now=self.clock())
        moved = skipped = 0
        after: str | None = None
        while page := await self.store.list_campaign_runs(
            campaign.id, statuses=statuses, after=after, limit=PAGE
        ):
            for run in page:
                try:
                    await self._move(run.id, action, actor)
                    moved += 1
                except Conflict:
                    skipped += 1  # it ended or moved by itself meanwhile
            after = page[-1].id
        return CampaignAction(
            await self.store.get_campaign(campaign.id, now=self.clock()), moved, skipped
        )

    async def _move(self, run_id: str, action: str, actor: str | None) -> None:
        match action:
            case "pause":
                await self.pause_run(run_id, actor=actor)
            case "resume":
                await self.resume_run(run_id, actor=actor)
            case "cancel":
                await self.cancel_run(run_id, actor=actor, reason="campaign cancelled")
            case "retry-failed":
                await self.retry_run(run_id, actor=actor)
            case _:
                raise AssertionError(action)


@dataclass(frozen=True, slots=True)
class LimitsSpec:
    """A campaign's limits as a client gives them: steps in flight and a rate (``"10/s"``,
    ``"100 per minute"``) for the whole campaign and per concurrency key."""

    concurrency: int | None = None
    rate: str | None = None
    key_concurrency: int | None = None
    key_rate: str | None = None


def checked_limits(spec: LimitsSpec, concurrency_key: str | None) -> CampaignLimits:
    """The checked limits; InvalidInput naming each bad field."""
    problems: list[Problem] = []

    def rate(field: str, text: str | None) -> tuple[int, float] | None:
        if text is None:
            return None
        try:
            return parse_rate(text)
        except ValueError as exc:
            problems.append(Problem(f"/limits/{field}", str(exc), "rate"))
            return None

    def slots(field: str, value: int | None) -> int | None:
        if value is not None and (
            isinstance(value, bool)
            or not isinstance(value, int)
            or not 1 <= value <= MAX_CONCURRENCY
        ):
            problems.append(
                Problem(f"/limits/{field}", f"an integer from 1 to {MAX_CONCURRENCY}", "range")
            )
            return None
        return value

    limits = CampaignLimits(
        concurrency=slots("concurrency", spec.concurrency),
        rate=rate("rate", spec.rate),
        key_concurrency=slots("key_concurrency", spec.key_concurrency),
        key_rate=rate("key_rate", spec.key_rate),
    )
    if concurrency_key is not None:
        try:
            KeyTemplate.compile(concurrency_key)
        except KeyTemplateError as exc:
            problems.append(Problem("/concurrency_key", str(exc), "pattern"))
    per_key = spec.key_concurrency is not None or spec.key_rate is not None
    if per_key and concurrency_key is None:
        problems.append(
            Problem(
                "/concurrency_key",
                "limits per key need the key: concurrency_key ({{ item.<field> }})",
                "required",
            )
        )
    if concurrency_key is not None and not per_key:
        problems.append(
            Problem("/limits", "a concurrency_key needs key_concurrency or key_rate", "required")
        )
    if problems:
        raise InvalidInput("the campaign's limits are invalid", problems)
    return limits


def _items(fmt: ItemFormat, stream: IO[bytes]) -> Iterator[Item]:
    match fmt:
        case ItemFormat.NDJSON:
            return from_ndjson(stream)
        case ItemFormat.CSV:
            return from_csv(stream)
        case ItemFormat.JSON:
            raise AssertionError("a JSON array arrives parsed")


def _accept(
    wf: CompiledWorkflow,
    items: Iterator[Item],
    template: KeyTemplate | None,
    limit_template: KeyTemplate | None = None,
) -> _Spool:
    """The first pass (in a thread): check every item, spool the accepted ones. Raises
    InvalidInput listing up to MAX_PROBLEMS bad items; nothing is started then."""
    spool = tempfile.TemporaryFile()  # noqa: SIM115 - closed by the caller
    digest = hashlib.sha256()
    keys: dict[str, str] = {}
    problems: list[Problem] = []
    total = 0
    checks = _Checks(wf)
    try:
        while len(problems) < MAX_PROBLEMS:
            try:
                item = next(items)
            except StopIteration:
                break
            except ItemError as exc:
                problems.append(Problem(exc.where, exc.message, "item"))
                break  # a stream cannot be read past a broken line reliably
            total += 1
            if total > MAX_ITEMS:
                problems.append(Problem(item.where, f"more than {MAX_ITEMS} items", "too_large"))
                break
            lines = _check(checks, item, template, keys, problems, limit_template)
            if lines is not None and not problems:
                spool.write(lines[0])
                digest.update(lines[1])
        if not problems and total == 0:
            problems.append(Problem("/items", "the campaign has no items", "required"))
        if problems:
            raise InvalidInput(
                f"{len(problems)} item(s) refused, first at {problems[0].pointer}; nothing "
                "was started",
                problems,
            )
    except BaseException:
        spool.close()
        raise
    return _Spool(spool, total, digest.hexdigest())


class _Checks:
    """The checks of a run start for one campaign's items, set up once (the input_schema
    compiled) and cheap for an item that passes them: strict JSON, size and the schema's
    yes or no. An item that may fail any of them goes through
    :func:`~flowyard.service.runs.check_run_payload`, which names its problems exactly as a
    single run start would."""

    def __init__(self, wf: CompiledWorkflow) -> None:
        self.wf = wf
        schema = wf.definition.input_schema
        self.schema = InputValidator(schema) if schema is not None else None

    def text(self, value: Any, *, strict: bool = False) -> tuple[str, list[Problem]]:
        """The item's canonical JSON and its problems (none: accepted); ``strict``: the
        value was parsed as strict JSON (an NDJSON line), not checked again."""
        clean = strict or not jsonvalue.problems(value, prefix="/input", limit=1)
        text = json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str)
        # check_run_payload measures json.dumps({"input": item, "vars": None}): ASCII escapes
        # and spaced separators write at most 3 characters per byte of this text, so below
        # this bound the item is within the limit without measuring it again.
        small = 3 * len(text.encode()) + _ENVELOPE <= MAX_RUN_PAYLOAD_BYTES
        if clean and small and (self.schema is None or self.schema.is_valid(value)):
            return text, []
        return text, check_run_payload(self.wf, value, None)


#: Characters ``{"input": , "vars": null}`` adds around the item in check_run_payload.
_ENVELOPE = 32


def _check(
    checks: _Checks,
    item: Item,
    template: KeyTemplate | None,
    keys: dict[str, str],
    problems: list[Problem],
    limit_template: KeyTemplate | None = None,
) -> tuple[bytes, bytes] | None:
    """One item's spool line and what the campaign's checksum reads of it (the line as the
    spool held it before decision 0042: the key's JSON TAB the input, so a campaign
    re-posted after the upgrade is the same campaign), or None with its problems added."""
    text, found = checks.text(item.value, strict=item.strict)
    if found:
        problems.extend(Problem(_at(item.where, p.pointer), p.message, p.code) for p in found)
        return None
    key = None
    if template is not None:
        try:
            key = template.render(item.value)
            check_correlation_key(key, item.where)
        except KeyRenderError as exc:
            problems.append(Problem(item.where, f"item_key: {exc}", "item_key"))
            return None
        except InvalidInput as exc:
            problems.extend(
                Problem(item.where, f"item_key: {p.message}", p.code) for p in exc.problems
            )
            return None
        if key in keys:
            problems.append(
                Problem(
                    item.where,
                    f"item_key {key!r} is also the key of {keys[key]}: keys are unique in a "
                    "campaign",
                    "duplicate",
                )
            )
            return None
        keys[key] = item.where
    head: Any = key
    concurrency = None
    if limit_template is not None:
        try:
            concurrency = limit_template.render(item.value)
        except KeyRenderError as exc:
            problems.append(Problem(item.where, f"concurrency_key: {exc}", "concurrency_key"))
            return None
        head = [key, concurrency]
    return (
        (spool_line(key, concurrency, text) + "\n").encode(),
        (json.dumps(head, ensure_ascii=False) + "\t" + text + "\n").encode(),
    )


def _at(where: str, pointer: str) -> str:
    """A problem's pointer into the run input (``/input/email``) placed at the item."""
    rest = pointer.removeprefix("/input")
    return f"{where}{rest}" if where.startswith("/") else f"{where}: {rest or '/'}"
