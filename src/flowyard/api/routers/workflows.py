"""/workflows: definitions and their versions.

Conditional requests: a workflow's ``ETag`` is ``"<latest version>"`` (``"<latest
version>-archived"`` while archived: archiving changes the representation but makes no
version). ``PUT`` and ``DELETE`` honour ``If-Match`` (412 when it does not match, checked in
the store's transaction, so of two writers that read the same ETag exactly one wins); ``GET``
honours ``If-None-Match`` (304).
"""

from __future__ import annotations

import json
import re
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Header, Query, Response, status

from flowyard.api.deps import ActorDep, AuditDep, ServiceDep
from flowyard.api.draft_schemas import DraftPublic
from flowyard.api.graph_schemas import (
    EdgeChanges,
    VersionDiff,
    WorkflowGraph,
    WorkflowListed,
    WorkflowStats,
)
from flowyard.api.jsonbody import StrictJSONRoute
from flowyard.api.problems import documented
from flowyard.api.schemas import (
    EXAMPLE_DEFINITION,
    MAX_VERSION,
    Page,
    ProblemItem,
    ValidationReport,
    VersionPath,
    VersionPublic,
    WorkflowPublic,
    WorkflowWithVersion,
    paged,
)
from flowyard.domain.errors import InvalidInput, PreconditionFailed
from flowyard.domain.records import WorkflowRecord
from flowyard.engine.diff import is_empty

router = APIRouter(prefix="/workflows", tags=["workflows"], route_class=StrictJSONRoute)

DefinitionBody = Annotated[
    dict[str, Any],
    Body(
        description="A workflow definition (see schema/workflow.schema.json).",
        openapi_examples={"hello": {"summary": "Three nodes", "value": EXAMPLE_DEFINITION}},
    ),
]
IfMatch = Annotated[
    str | None,
    Header(
        description='Only if the workflow\'s ETag is still this one (`"3"`), or `*`. '
        "Send it to avoid overwriting a change you have not seen: 412 otherwise.",
        examples=['"3"'],
    ),
]
IfNoneMatch = Annotated[
    str | None,
    Header(
        description="304 (no body) when the workflow's ETag is one of these.",
        examples=['"3"'],
    ),
]
ETAG_HEADER = {
    "ETag": {
        "description": 'The workflow\'s state: `"<latest version>"`, or '
        '`"<latest version>-archived"` while archived. Send it back in `If-Match`.',
        "schema": {"type": "string", "example": '"3"'},
    }
}
_TAG = re.compile(r'(?:W/)?"[^"]*"|[^,\s]+')


def etag(record: WorkflowRecord) -> str:
    """The strong entity tag of a workflow's current state."""
    state = "-archived" if record.archived else ""
    return f'"{record.latest_version}{state}"'


def _tags(header: str, *, weak: bool) -> list[str]:
    """The entity tags of an ``If-Match`` / ``If-None-Match`` value. Weak tags (``W/"3"``)
    compare equal to their strong twin only where ``weak`` comparison applies (RFC 9110);
    a bare ``3`` is taken as ``"3"``."""
    found = []
    for tag in _TAG.findall(header):
        if tag.startswith("W/"):
            if not weak:
                continue
            tag = tag[2:]
        found.append(tag if tag.startswith('"') else f'"{tag}"')
    return found


def _stale(record: WorkflowRecord, sent: str) -> PreconditionFailed:
    current = etag(record)
    return PreconditionFailed(
        f"workflow {record.name!r} is at ETag {current} (version {record.latest_version}"
        f"{', archived' if record.archived else ''}), not {sent.strip()}: it changed since "
        "you read it; GET it again and retry",
        detail={
            "current_etag": current,
            "latest_version": record.latest_version,
            "archived": record.archived,
        },
    )


def definition_of(body: dict[str, Any]) -> dict[str, Any]:
    """The definition in a ``PUT`` body: the body itself, or the ``version.definition`` of
    a body shaped like a ``GET`` answer (read, edit, write back). A definition always has
    ``nodes`` or ``states`` at its top, never ``workflow`` and ``version``."""
    version = body.get("version")
    if set(body) >= {"workflow", "version"} and isinstance(version, dict):
        inner = version.get("definition")
        if isinstance(inner, dict):
            return inner
    return body


def _expectations(record: WorkflowRecord, if_match: str | None) -> tuple[int | None, bool | None]:
    """What the store must find for the write to go ahead: ``(latest_version, archived)``
    of the ETag that matched (None, None: no ``If-Match``, or ``*``)."""
    if if_match is None or if_match.strip() == "*":
        return None, None
    if etag(record) not in _tags(if_match, weak=False):
        raise _stale(record, if_match)
    return record.latest_version, record.archived


BUSY = (
    "Too many definitions are being compiled in this process (validate, create and save "
    "share a few slots); nothing was done: retry after `Retry-After` seconds."
)


@router.post(
    "/validate",
    response_model=ValidationReport,
    summary="Validate a definition without saving it",
    responses=documented(503, d503=BUSY),
)
async def validate_workflow(service: ServiceDep, definition: DefinitionBody) -> ValidationReport:
    """Validate a definition without saving it; every problem comes with a JSON pointer.
    The answer is 200 either way: `valid` says which, and the problems are exactly those
    `POST /workflows` would refuse it for (unknown credentials included). Compiling has a
    budget (`compile_budget`: the problem points where it stopped) and a few slots per
    process (503 with `Retry-After` when they stay busy)."""
    result = await service.validate(definition)
    return ValidationReport(
        valid=result.ok, errors=[ProblemItem(**p.as_dict()) for p in result.problems]
    )


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=WorkflowWithVersion | DraftPublic,
    summary="Create a workflow",
    responses={
        201: {"headers": ETAG_HEADER},
        **documented(
            409,
            422,
            503,
            d409="A workflow with this name exists.",
            d422="Invalid definition.",
            d503=BUSY,
        ),
    },
)
async def create_workflow(
    service: ServiceDep,
    actor: ActorDep,
    audit: AuditDep,
    definition: DefinitionBody,
    response: Response,
) -> WorkflowWithVersion | DraftPublic:
    """Create a workflow from a definition (its version 1), with `Location` and `ETag: "1"`.
    422 lists every problem of the definition.

    With `"draft": true` in the body the workflow starts as a draft instead: only its name
    must be valid, it has no version (runs refuse it) until its draft is published, and
    the answer is the draft (`ETag: "d1"`, `Location` of the draft)."""
    if definition.get("draft") is True:
        view = await service.create_draft_workflow(definition, actor, audit=audit)
        response.headers["Location"] = f"/api/v1/workflows/{view.workflow.id}/draft"
        response.headers["ETag"] = view.draft.etag
        return DraftPublic.of(view)
    record, version = await service.create_workflow(definition, actor, audit=audit)
    response.headers["Location"] = f"/api/v1/workflows/{record.id}"
    response.headers["ETag"] = etag(record)
    return WorkflowWithVersion(
        workflow=WorkflowPublic.of(record), version=VersionPublic.of(version), created=True
    )


@router.get("", response_model=Page[WorkflowListed], summary="List workflows")
async def list_workflows(
    service: ServiceDep,
    limit: Annotated[int, Query(ge=1, le=500, description="Page size")] = 50,
    cursor: Annotated[str | None, Query(max_length=200, description="`next_cursor`")] = None,
    include_archived: Annotated[bool, Query(description="Also archived workflows")] = False,
    include: Annotated[
        Literal["stats"] | None,
        Query(
            description="`stats`: each workflow's newest run and its runs per day over the "
            "last 7 UTC days, for the whole page in one read"
        ),
    ] = None,
) -> Page[WorkflowListed]:
    """Workflows by name, a page at a time (`next_cursor` is null on the last page)."""
    rows = await service.list_workflows(
        limit=limit + 1, after=cursor, include_archived=include_archived
    )
    items, next_cursor = paged(rows, limit, lambda w: w.name)
    stats: dict[str, WorkflowStats] = {}
    if include == "stats":
        days, figures = await service.workflow_stats([w.id for w in items])
        stats = {wf: WorkflowStats.of(days, f) for wf, f in figures.items()}
    return Page[WorkflowListed](
        items=[WorkflowListed.listed(w, stats.get(w.id)) for w in items], next_cursor=next_cursor
    )


@router.get(
    "/{workflow_ref}",
    response_model=WorkflowWithVersion,
    summary="Get a workflow",
    responses={
        200: {"headers": ETAG_HEADER},
        304: {"description": "`If-None-Match` matched: the copy the client has is current."},
        **documented(404),
    },
)
async def get_workflow(
    service: ServiceDep, workflow_ref: str, response: Response, if_none_match: IfNoneMatch = None
) -> WorkflowWithVersion | Response:
    """A workflow (by id or name) with its latest version and its `ETag`. With
    `If-None-Match` naming the current ETag (or `*`): 304 without a body. A workflow that
    exists only as a draft answers `version: null` and `workflow.draft: true`."""
    record = await service.get_workflow(workflow_ref)
    tag = etag(record)
    if if_none_match is not None and (
        if_none_match.strip() == "*" or tag in _tags(if_none_match, weak=True)
    ):
        return Response(status_code=status.HTTP_304_NOT_MODIFIED, headers={"ETag": tag})
    response.headers["ETag"] = tag
    if record.latest_version == 0:  # only a draft so far (decision 0027): nothing to read
        return WorkflowWithVersion(workflow=WorkflowPublic.of(record), version=None, created=False)
    version = await service.get_version(record.id, record.latest_version)
    return WorkflowWithVersion(
        workflow=WorkflowPublic.of(record), version=VersionPublic.of(version), created=False
    )


@router.put(
    "/{workflow_ref}",
    response_model=WorkflowWithVersion,
    summary="Save a new version",
    responses={
        200: {"headers": ETAG_HEADER},
        **documented(
            404,
            412,
            422,
            503,
            d422="Invalid definition, or its name is not the workflow's.",
            d503=BUSY,
        ),
    },
)
async def update_workflow(
    service: ServiceDep,
    actor: ActorDep,
    audit: AuditDep,
    workflow_ref: str,
    definition: DefinitionBody,
    response: Response,
    if_match: IfMatch = None,
) -> WorkflowWithVersion:
    """Save a new version (versions are immutable); an unchanged definition makes none
    (`created: false`). Saving un-archives an archived workflow. The body is the bare
    definition, or what `GET` answers (`{"workflow": ..., "version": {"definition": ...}}`):
    then its `version.definition` is saved.

    Send `If-Match` with the `ETag` you read: when someone saved (or archived) since, the
    answer is 412 and nothing is saved. Without it the last writer wins."""
    record = await service.get_workflow(workflow_ref)
    expected_version, expected_archived = _expectations(record, if_match)
    try:
        updated, version, created = await service.update_workflow(
            record.id,
            definition_of(definition),
            actor,
            expected_version=expected_version,
            expected_archived=expected_archived,
            audit=audit,
        )
    except PreconditionFailed:
        assert if_match is not None  # only a conditional request has expectations
        raise _stale(await service.get_workflow(record.id), if_match) from None
    response.headers["ETag"] = etag(updated)
    return WorkflowWithVersion(
        workflow=WorkflowPublic.of(updated), version=VersionPublic.of(version), created=created
    )


@router.delete(
    "/{workflow_ref}",
    response_model=WorkflowPublic,
    summary="Archive a workflow",
    responses={200: {"headers": ETAG_HEADER}, **documented(404, 412)},
)
async def archive_workflow(
    service: ServiceDep,
    audit: AuditDep,
    workflow_ref: str,
    response: Response,
    if_match: IfMatch = None,
) -> WorkflowPublic:
    """Archive a workflow: it leaves the list and refuses new runs; its versions and runs stay.
    Saving a new version brings it back. Honours `If-Match` like `PUT` (412)."""
    record = await service.get_workflow(workflow_ref)
    expected_version, expected_archived = _expectations(record, if_match)
    try:
        archived = await service.archive_workflow(
            record.id,
            expected_latest=expected_version,
            expected_archived=expected_archived,
            audit=audit,
        )
    except PreconditionFailed:
        assert if_match is not None
        raise _stale(await service.get_workflow(record.id), if_match) from None
    response.headers["ETag"] = etag(archived)
    return WorkflowPublic.of(archived)


@router.get(
    "/{workflow_ref}/versions",
    response_model=Page[VersionPublic],
    summary="List a workflow's versions",
    responses=documented(404),
)
async def list_versions(
    service: ServiceDep,
    workflow_ref: str,
    limit: Annotated[int, Query(ge=1, le=500, description="Page size")] = 50,
    cursor: Annotated[
        int | None,
        Query(ge=1, le=MAX_VERSION, description="`next_cursor`: versions below this one"),
    ] = None,
) -> Page[VersionPublic]:
    """Versions, newest first, a page at a time."""
    record = await service.get_workflow(workflow_ref)
    rows = await service.list_versions(record.id, limit=limit + 1, before=cursor)
    items, next_cursor = paged(rows, limit, lambda v: v.version)
    return Page[VersionPublic](items=[VersionPublic.of(v) for v in items], next_cursor=next_cursor)


@router.get(
    "/{workflow_ref}/versions/{version}",
    response_model=VersionPublic,
    summary="Get one version",
    responses=documented(404),
)
async def get_version(
    service: ServiceDep, workflow_ref: str, version: VersionPath
) -> VersionPublic:
    """One immutable version."""
    record = await service.get_workflow(workflow_ref)
    return VersionPublic.of(await service.get_version(record.id, version))


@router.get(
    "/{workflow_ref}/versions/{version}/diff/{other}",
    response_model=VersionDiff,
    summary="Diff two versions",
    responses=documented(404),
)
async def diff_versions(
    service: ServiceDep, workflow_ref: str, version: VersionPath, other: VersionPath
) -> VersionDiff:
    """What changed from ``version`` to ``other``: top-level fields, and the nodes (or the
    states and actions) added, removed and changed, field by field."""
    record, diff = await service.diff_versions(workflow_ref, version, other)
    return VersionDiff(
        workflow_id=record.id,
        from_version=version,
        to_version=other,
        identical=is_empty(diff),
        fields=diff["fields"],
        nodes=diff.get("nodes"),
        states=diff.get("states"),
        actions=diff.get("actions"),
        edges=EdgeChanges.model_validate(diff["edges"]),
    )


@router.get(
    "/{workflow_ref}/graph",
    response_model=WorkflowGraph,
    summary="A version's graph, as drawn",
    responses=documented(404, 422),
)
async def workflow_graph(
    service: ServiceDep,
    workflow_ref: str,
    version: Annotated[
        int | None, Query(ge=1, le=MAX_VERSION, description="The version (default: latest)")
    ] = None,
    draft: Annotated[bool, Query(description="The draft's graph instead of a version's")] = False,
) -> Response:
    """The nodes, the labelled edges and the groups of a version (or of the draft, which
    need not be valid): `next` and `catch` of every node and the routes its type declares
    in its config (a plugin type's too); the nodes a parallel's branches or a map's body
    reach are in that node's group."""
    if draft and version is not None:
        raise InvalidInput("ask for a version or for the draft, not both")
    record, number, graph = await service.workflow_graph(workflow_ref, version, draft=draft)
    body = {"workflow_id": record.id, "version": number, **graph.as_dict()}
    # A 1,000-node graph is some 2,000 objects: written straight from the engine's graph
    # (its fields are the model's), not validated into the model and out again, which took
    # most of the answer's time.
    return Response(json.dumps(body, separators=(",", ":")), media_type="application/json")
