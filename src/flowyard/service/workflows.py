"""Workflow use cases: validate, create, update, save (each a new immutable version), archive;
read workflows and versions, and diff two versions."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime, time, timedelta
from typing import Any, TypeVar

from flowyard.domain.auth import AuditEntry
from flowyard.domain.errors import (
    Busy,
    Conflict,
    DefinitionError,
    InvalidInput,
    NotFound,
    Problem,
)
from flowyard.domain.ids import WorkflowId
from flowyard.domain.records import (
    VersionRecord,
    WorkflowRecord,
    WorkflowRunStats,
)
from flowyard.engine.compiled import CompiledWorkflow
from flowyard.engine.diff import diff_definitions
from flowyard.engine.graph import definition_graph, edge_changes
from flowyard.engine.validation import ValidationResult
from flowyard.service.base import ServiceBase

T = TypeVar("T")


class WorkflowReads(ServiceBase):
    """Reading workflows and their versions."""

    async def get_workflow(self, ref: str) -> WorkflowRecord:
        """A workflow by id or name (NotFound), through the read cache (decision 0030)."""
        return await self.reads.workflow(ref, self.store.get_workflow)

    async def list_workflows(
        self, *, limit: int = 50, after: str | None = None, include_archived: bool = False
    ) -> list[WorkflowRecord]:
        """Workflows by name, after a name cursor (archived ones only when asked)."""
        return await self.store.list_workflows(
            limit=limit, after=after, include_archived=include_archived
        )

    async def get_version(
        self, workflow_id: WorkflowId, version: int | None = None
    ) -> VersionRecord:
        """One version of a workflow (the latest when None); NotFound for a number below 1
        or above the latest."""
        if version is None:
            return await self.store.get_version(workflow_id, version)
        if version < 1:
            raise NotFound(f"workflow {workflow_id!r} has no version {version}")
        return await self.reads.version(workflow_id, version, self.store.get_version)

    async def list_versions(
        self, workflow_id: WorkflowId, *, limit: int | None = None, before: int | None = None
    ) -> list[VersionRecord]:
        """Versions newest first, below a version-number cursor."""
        return await self.store.list_versions(workflow_id, limit=limit, before=before)

    async def diff_versions(
        self, ref: str, version: int, other: int
    ) -> tuple[WorkflowRecord, dict[str, Any]]:
        """The workflow and what changed from ``version`` to ``other`` (see
        :func:`flowyard.engine.diff.diff_definitions`); NotFound for a missing version."""
        record = await self.store.get_workflow(ref)
        for number in (version, other):
            if number < 1:
                raise NotFound(f"workflow {ref!r} has no version {number}")
        old = await self.get_version(record.id, version)
        new = await self.get_version(record.id, other)
        return record, await asyncio.to_thread(self._diff, old.definition, new.definition)

    def _diff(self, old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
        """The definitions' diff, with the edges added and removed (as drawn)."""
        diff = diff_definitions(old, new)
        registry = self.validator.registry
        diff["edges"] = edge_changes(
            definition_graph(old, registry), definition_graph(new, registry)
        )
        return diff

    async def workflow_stats(
        self, workflow_ids: Sequence[WorkflowId], days: int = 7
    ) -> tuple[list[datetime], dict[WorkflowId, WorkflowRunStats]]:
        """The starts of the last ``days`` UTC days (today last), and each workflow's newest
        run and its runs counted on each of those days."""
        today = datetime.combine(self.clock().astimezone(UTC).date(), time(), tzinfo=UTC)
        starts = [today - timedelta(days=days - 1 - i) for i in range(days)]
        return starts, await self.store.workflow_run_stats(workflow_ids, starts)


class WorkflowUseCases(WorkflowReads):
    """Definitions: validated and compiled off the event loop, in bounded slots."""

    async def validate(self, raw: Any) -> ValidationResult:
        """Check a definition without saving it: exactly the problems ``create_workflow``
        would refuse it for (structure, expressions, compile budget, unknown credentials)."""
        result = await self._validated(raw)
        if result.workflow is not None:
            problems = await self.credential_problems(result.workflow)
            if problems:
                return ValidationResult(problems=problems)
        return result

    async def _validated(self, raw: Any) -> ValidationResult:
        """Validate and compile off the event loop, in one of the process's compile slots,
        within the compile budget (the validator's)."""
        return await self._in_compile_slot(self.validator.validate, raw)

    async def _in_compile_slot(self, check: Callable[[Any], T], raw: Any) -> T:
        """``check(raw)`` in a thread, in one of the process's compile slots. A request
        waits ``compile_wait_s`` for a slot, then is refused (Busy), so costly definitions
        cannot pile up threads."""
        try:
            async with asyncio.timeout(self.compile_wait_s):
                await self._compile_slots.acquire()
        except TimeoutError:
            budget = self.validator.expressions.limits.compile_budget_s
            raise Busy(
                "too many workflow definitions are being compiled right now; retry shortly",
                retry_after_s=max(1, math.ceil(budget)),
            ) from None
        compiling = asyncio.ensure_future(asyncio.to_thread(check, raw))
        # The slot is freed when the thread is done, not when the request is: a request
        # cancelled (client gone) cannot stop its thread, nor start more than the slots.
        compiling.add_done_callback(self._compile_done)
        return await asyncio.shield(compiling)

    def _compile_done(self, compiling: asyncio.Future[Any]) -> None:
        self._compile_slots.release()
        if not compiling.cancelled():
            compiling.exception()  # retrieved: a cancelled request no longer awaits it

    async def _compile(self, raw: Any) -> CompiledWorkflow:
        return (await self._validated(raw)).compiled()

    async def create_workflow(
        self,
        raw: Any,
        actor: str | None = None,
        *,
        audit: AuditEntry | None = None,
        require_credentials: bool = True,
    ) -> tuple[WorkflowRecord, VersionRecord]:
        """Validate and save a new workflow (version 1). A name taken by an archived
        workflow is a Conflict that says so and how to bring it back. Only the samples
        loaded at start pass ``require_credentials=False``: they ship with the credential
        names they need, which a fresh database does not hold yet (their steps then fail
        with ``credential.not_found`` until an admin creates them)."""
        wf = await self._compile(raw)
        if require_credentials:
            await self.check_credentials(wf)
        definition = _as_json(raw)
        await self._refuse_archived_name(wf.definition.name)
        record, version = await self.store.create_workflow(
            wf.definition.name, wf.definition.description, definition, actor, audit=audit
        )
        self.reads.forget(record.id)
        return record, version

    async def _refuse_archived_name(self, name: str) -> None:
        try:
            existing = await self.store.get_workflow(name)
        except NotFound:
            return
        if existing.archived and existing.name == name:
            raise Conflict(
                f"a workflow named {name!r} already exists and is archived; restore it by "
                f"saving a new version (PUT /api/v1/workflows/{name}, or flowyard run FILE), "
                "or choose another name",
                detail={"workflow_id": existing.id, "archived": True},
            )

    async def update_workflow(
        self,
        ref: str,
        raw: Any,
        actor: str | None = None,
        *,
        expected_version: int | None = None,
        expected_archived: bool | None = None,
        audit: AuditEntry | None = None,
    ) -> tuple[WorkflowRecord, VersionRecord, bool]:
        """Validate and save a new version of an existing workflow; with expectations (an
        ``If-Match``), only if the workflow is still in that state (PreconditionFailed)."""
        record = await self.store.get_workflow(ref)
        wf = await self._compile(raw)
        if wf.definition.name != record.name:
            raise InvalidInput(
                "the definition's name must match the workflow",
                [Problem("/name", f"expected {record.name!r}, got {wf.definition.name!r}", "name")],
            )
        await self.check_credentials(wf)
        version, created = await self.store.add_version(
            record.id,
            _as_json(raw),
            actor,
            expected_latest=expected_version,
            expected_archived=expected_archived,
            audit=audit,
        )
        self.reads.forget(record.id)
        return await self.store.get_workflow(record.id), version, created

    async def archive_workflow(
        self,
        workflow_id: WorkflowId,
        *,
        expected_latest: int | None = None,
        expected_archived: bool | None = None,
        audit: AuditEntry | None = None,
    ) -> WorkflowRecord:
        """Archive a workflow: hidden from lists, refuses new runs, un-archived by its next
        version; with expectations (an ``If-Match``), only in that state
        (PreconditionFailed)."""
        try:
            return await self.store.archive_workflow(
                workflow_id,
                expected_latest=expected_latest,
                expected_archived=expected_archived,
                audit=audit,
            )
        finally:
            self.reads.forget(workflow_id)

    async def save_workflow(
        self, raw: Any, actor: str | None = None, *, audit: AuditEntry | None = None
    ) -> tuple[WorkflowRecord, VersionRecord, bool]:
        """Create the workflow, or add a version when the definition changed (by name)."""
        wf = await self._compile(raw)
        try:
            existing = await self.store.get_workflow(wf.definition.name)
        except NotFound:
            record, version = await self.create_workflow(raw, actor, audit=audit)
            return record, version, True
        return await self.update_workflow(existing.id, raw, actor, audit=audit)

    async def check_credentials(self, wf: CompiledWorkflow) -> None:
        """Every credential the nodes reference must exist (DefinitionError locating each
        one that does not). Deleting a credential later fails the steps that use it
        (``credential.not_found``)."""
        problems = await self.credential_problems(wf)
        if problems:
            count = len(problems)
            raise DefinitionError(
                f"the workflow references {count} unknown credential{'s' if count != 1 else ''}",
                problems,
            )

    async def credential_problems(self, wf: CompiledWorkflow) -> list[Problem]:
        """A problem (``unknown_credential``) locating each credential reference of ``wf``
        that names no credential."""
        return await self.missing_credentials(wf.credential_refs())

    async def missing_credentials(self, refs: Iterable[tuple[str, str]]) -> list[Problem]:
        """A problem (``unknown_credential``) for each reference (pointer, credential name)
        that names no credential."""
        problems: list[Problem] = []
        exists: dict[str, bool] = {}
        for pointer, name in refs:
            if name not in exists:
                try:
                    exists[name] = (await self.store.get_credential(name)).record.name == name
                except NotFound:
                    exists[name] = False
            if not exists[name]:
                problems.append(
                    Problem(pointer, f"no credential named {name!r}", "unknown_credential")
                )
        return problems


def _as_json(raw: Any) -> dict[str, Any]:
    """The definition as stored: exactly what the user wrote (it validated)."""
    if not isinstance(raw, dict):
        raise InvalidInput("a workflow definition must be a JSON object")
    return raw
