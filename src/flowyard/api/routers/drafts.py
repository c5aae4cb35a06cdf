"""/workflows/{ref}/draft: the shared draft of a workflow, edited node by node.

Every edit is one undoable step and must name the draft's current ``ETag`` (``"d<revision>"``)
in ``If-Match``: 428 without it, 412 when the draft changed since (checked in the store's
transaction: of two editors that read the same ETag exactly one wins). Every answer carries
the new ETag and the draft's problems (decision 0027).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Header, Query, Response, status

from flowyard.api.deps import ActorDep, AuditDep, ServiceDep
from flowyard.api.draft_schemas import (
    MERGE_EXAMPLE,
    NODE_EXAMPLE,
    PATCH_EXAMPLE,
    DraftHistory,
    DraftPublic,
    DraftStepPublic,
    EdgeIn,
    NodeAdd,
    NodeRename,
)
from flowyard.api.jsonbody import StrictJSONRoute
from flowyard.api.problems import documented
from flowyard.api.routers.workflows import etag as workflow_etag
from flowyard.api.schemas import MAX_VERSION, VersionPublic, WorkflowPublic, WorkflowWithVersion
from flowyard.domain.auth import AuditEntry
from flowyard.domain.drafts import draft_revision
from flowyard.domain.errors import InvalidInput, PreconditionRequired
from flowyard.drafts import ops
from flowyard.drafts.ops import Edge, EdgeKind, EdgeMode
from flowyard.drafts.patching import parse_patch
from flowyard.service import DraftView

router = APIRouter(
    prefix="/workflows/{workflow_ref}/draft", tags=["drafts"], route_class=StrictJSONRoute
)

IfMatch = Annotated[
    str | None,
    Header(
        description='The draft\'s ETag as you read it (`"d7"`): 412 when it changed since, '
        "428 without it.",
        examples=['"d7"'],
    ),
]
EDIT = documented(404, 412, 422, 428)


def revision_of(if_match: str | None) -> int:
    """The draft revision an ``If-Match`` names (428 without one, 412 for one that cannot
    be a draft's ETag)."""
    if if_match is None:
        raise PreconditionRequired(
            "send If-Match with the draft's ETag (GET .../draft answers it): edits of a shared "
            "draft are conditional"
        )
    revision = draft_revision(if_match)
    if revision is None:
        raise InvalidInput(f'If-Match {if_match.strip()!r} is not a draft ETag like "d7"')
    return revision


@dataclass(frozen=True, slots=True)
class EditOptions:
    """What an edit's request asks besides its body: its audit entry (written with the
    edit, in its transaction) and whether the answer may leave the document out."""

    audit: AuditEntry | None
    minimal: bool


def wants_minimal(prefer: str | None) -> bool:
    """Whether a ``Prefer`` header (RFC 7240) asks for ``return=minimal``."""
    if not prefer:
        return False
    for item in prefer.split(","):
        name, _, value = item.split(";")[0].partition("=")
        if name.strip().lower() == "return" and value.strip().strip('"').lower() == "minimal":
            return True
    return False


async def edit_options(
    audit: AuditDep,
    prefer: Annotated[
        str | None,
        Header(
            description="`return=minimal` (RFC 7240): answer without the `document` (null), "
            "for a client that applies its own edit; the default answers it whole.",
            examples=["return=minimal"],
        ),
    ] = None,
) -> EditOptions:
    """An edit's options from its request."""
    return EditOptions(audit, wants_minimal(prefer))


EditDep = Annotated[EditOptions, Depends(edit_options)]


def _answer(view: DraftView, response: Response, minimal: bool = False) -> DraftPublic:
    response.headers["ETag"] = view.draft.etag
    if minimal:
        response.headers["Preference-Applied"] = "return=minimal"
    return DraftPublic.of(view, minimal=minimal)


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=DraftPublic,
    summary="Open the workflow's draft",
    responses=documented(404, 409),
)
async def open_draft(
    service: ServiceDep,
    actor: ActorDep,
    workflow_ref: str,
    response: Response,
    from_version: Annotated[int | None, Query(ge=1, le=MAX_VERSION)] = None,
) -> DraftPublic:
    """Open the one shared draft of a workflow from its latest version (or `from_version`).
    409 when a draft is open already (its ETag in `current_etag`)."""
    view = await service.open_draft(workflow_ref, actor, from_version=from_version)
    return _answer(view, response)


@router.get("", response_model=DraftPublic, summary="Get the draft", responses=documented(404))
async def get_draft(service: ServiceDep, workflow_ref: str, response: Response) -> DraftPublic:
    """The draft document (`{"definition", "layout"}`), its problems located by JSON
    pointers into it, its undo and redo depths, and its `ETag`."""
    return _answer(await service.get_draft(workflow_ref), response)


@router.delete(
    "",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Discard the draft",
    responses=documented(404, 412, 428),
)
async def discard_draft(
    service: ServiceDep, actor: ActorDep, workflow_ref: str, if_match: IfMatch = None
) -> Response:
    """Discard the draft and its history; the published versions are untouched."""
    await service.discard_draft(workflow_ref, revision_of(if_match), actor)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


async def _edit(
    service: ServiceDep,
    workflow_ref: str,
    if_match: str | None,
    actor: str,
    response: Response,
    build: Any,
    options: EditOptions,
) -> DraftPublic:
    view = await service.edit_draft(
        workflow_ref, revision_of(if_match), build, actor, audit=options.audit
    )
    return _answer(view, response, options.minimal)


@router.patch("", response_model=DraftPublic, summary="Apply a JSON Patch", responses=EDIT)
async def patch_draft(
    service: ServiceDep,
    actor: ActorDep,
    options: EditDep,
    workflow_ref: str,
    response: Response,
    patch: Annotated[
        list[Any],
        Body(
            description="An RFC 6902 JSON Patch on the draft document.",
            openapi_examples={"replace": {"summary": "One change", "value": PATCH_EXAMPLE}},
        ),
    ],
    if_match: IfMatch = None,
) -> DraftPublic:
    """Apply an RFC 6902 JSON Patch to the draft document as one step (paths under
    `/definition` and `/layout`). A patch that does not apply changes nothing: 422 naming
    the failing operation (`operation`)."""
    ops_ = parse_patch(patch)
    return await _edit(
        service, workflow_ref, if_match, actor, response, lambda d, r: ops.raw(ops_), options
    )


@router.post("/nodes", response_model=DraftPublic, summary="Add a node", responses=EDIT)
async def add_node(
    service: ServiceDep,
    actor: ActorDep,
    options: EditDep,
    workflow_ref: str,
    body: NodeAdd,
    response: Response,
    if_match: IfMatch = None,
) -> DraftPublic:
    """Add a node; `after` splices it into that node's `next` edge. 409 when the id is
    taken."""
    position = body.position.model_dump() if body.position else None

    def build(doc: Any, routes: Any) -> ops.Edit:
        return ops.add_node(doc, body.node, after=body.after, position=position)

    return await _edit(service, workflow_ref, if_match, actor, response, build, options)


@router.patch(
    "/nodes/{node_id}", response_model=DraftPublic, summary="Update a node", responses=EDIT
)
async def update_node(
    service: ServiceDep,
    actor: ActorDep,
    options: EditDep,
    workflow_ref: str,
    node_id: str,
    patch: Annotated[
        dict[str, Any],
        Body(
            description="RFC 7386 merge patch of the node.",
            openapi_examples={"merge": {"summary": "Config and place", "value": MERGE_EXAMPLE}},
        ),
    ],
    response: Response,
    if_match: IfMatch = None,
) -> DraftPublic:
    """Merge-patch a node (RFC 7386: `null` removes a field): config, name, retry,
    timeout_s, ... and `position` (the layout)."""
    return await _edit(
        service,
        workflow_ref,
        if_match,
        actor,
        response,
        lambda d, r: ops.update_node(d, node_id, patch),
        options,
    )


@router.put(
    "/nodes/{node_id}", response_model=DraftPublic, summary="Replace a node", responses=EDIT
)
async def replace_node(
    service: ServiceDep,
    actor: ActorDep,
    options: EditDep,
    workflow_ref: str,
    node_id: str,
    node: Annotated[
        dict[str, Any],
        Body(
            description="The whole node (same id).",
            openapi_examples={"node": {"summary": "A log node", "value": NODE_EXAMPLE}},
        ),
    ],
    response: Response,
    if_match: IfMatch = None,
) -> DraftPublic:
    """Replace a node whole (its id stays; rename to change it)."""
    return await _edit(
        service,
        workflow_ref,
        if_match,
        actor,
        response,
        lambda d, r: ops.replace_node(d, node_id, node),
        options,
    )


@router.delete(
    "/nodes/{node_id}", response_model=DraftPublic, summary="Delete a node", responses=EDIT
)
async def delete_node(
    service: ServiceDep,
    actor: ActorDep,
    options: EditDep,
    workflow_ref: str,
    node_id: str,
    response: Response,
    edges: Annotated[
        EdgeMode,
        Query(
            description="Routes to the node: removed, or reconnected to where it went (its next)."
        ),
    ] = EdgeMode.REMOVE,
    if_match: IfMatch = None,
) -> DraftPublic:
    """Delete a node, its position, and the routes that led to it (`edges`)."""
    return await _edit(
        service,
        workflow_ref,
        if_match,
        actor,
        response,
        lambda d, r: ops.delete_node(d, node_id, edges, r.routes),
        options,
    )


@router.post(
    "/nodes/{node_id}/rename", response_model=DraftPublic, summary="Rename a node", responses=EDIT
)
async def rename_node(
    service: ServiceDep,
    actor: ActorDep,
    options: EditDep,
    workflow_ref: str,
    node_id: str,
    body: NodeRename,
    response: Response,
    if_match: IfMatch = None,
) -> DraftPublic:
    """Change a node's id; every route to it, the start and the layout follow."""
    return await _edit(
        service,
        workflow_ref,
        if_match,
        actor,
        response,
        lambda d, r: ops.rename_node(d, node_id, body.id, r.routes, r.expressions),
        options,
    )


@router.post("/edges", response_model=DraftPublic, summary="Connect two nodes", responses=EDIT)
async def connect(
    service: ServiceDep,
    actor: ActorDep,
    options: EditDep,
    workflow_ref: str,
    body: EdgeIn,
    response: Response,
    if_match: IfMatch = None,
) -> DraftPublic:
    """Draw a route: `next`, a condition `case` or `default`, a `catch` route, a parallel
    `branch`."""
    edge = Edge(
        body.source, body.kind, body.target, body.when, tuple(body.errors), body.name, body.index
    )
    return await _edit(
        service, workflow_ref, if_match, actor, response, lambda d, r: ops.connect(d, edge), options
    )


@router.delete("/edges", response_model=DraftPublic, summary="Disconnect a route", responses=EDIT)
async def disconnect(
    service: ServiceDep,
    actor: ActorDep,
    options: EditDep,
    workflow_ref: str,
    response: Response,
    source: Annotated[str, Query(max_length=64, description="The node the route leaves")],
    kind: Annotated[EdgeKind, Query()] = EdgeKind.NEXT,
    target: Annotated[
        str | None, Query(max_length=64, description="Which case or catch route")
    ] = None,
    name: Annotated[str | None, Query(max_length=200, description="Which branch")] = None,
    index: Annotated[
        int | None, Query(ge=0, le=10_000, description="Which case, catch route or branch")
    ] = None,
    if_match: IfMatch = None,
) -> DraftPublic:
    """Remove a route leaving `source`: its `next` or `default`, or the case, catch route
    or branch picked by `index`, `name` or `target`."""
    edge = Edge(source, kind, target, name=name, index=index)
    return await _edit(
        service,
        workflow_ref,
        if_match,
        actor,
        response,
        lambda d, r: ops.disconnect(d, edge),
        options,
    )


@router.post(
    "/undo", response_model=DraftPublic, summary="Undo", responses=documented(404, 409, 412, 428)
)
async def undo(
    service: ServiceDep,
    actor: ActorDep,
    options: EditDep,
    workflow_ref: str,
    response: Response,
    if_match: IfMatch = None,
) -> DraftPublic:
    """Revert the last applied step (409 when there is none)."""
    view = await service.move_draft(
        workflow_ref, revision_of(if_match), "undo", actor, audit=options.audit
    )
    return _answer(view, response, options.minimal)


@router.post(
    "/redo", response_model=DraftPublic, summary="Redo", responses=documented(404, 409, 412, 428)
)
async def redo(
    service: ServiceDep,
    actor: ActorDep,
    options: EditDep,
    workflow_ref: str,
    response: Response,
    if_match: IfMatch = None,
) -> DraftPublic:
    """Re-apply the last undone step (409 when there is none; a new edit drops them)."""
    view = await service.move_draft(
        workflow_ref, revision_of(if_match), "redo", actor, audit=options.audit
    )
    return _answer(view, response, options.minimal)


@router.get(
    "/history", response_model=DraftHistory, summary="The draft's steps", responses=documented(404)
)
async def history(
    service: ServiceDep,
    workflow_ref: str,
    response: Response,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 100,
) -> DraftHistory:
    """Every step kept, newest first: who, when, what (a summary and both patches)."""
    draft, steps = await service.draft_history(workflow_ref, limit=limit)
    response.headers["ETag"] = draft.etag
    return DraftHistory(
        etag=draft.etag,
        undo_depth=draft.undo_depth,
        redo_depth=draft.redo_depth,
        items=[DraftStepPublic.of(s) for s in steps],
    )


@router.post(
    "/publish",
    status_code=status.HTTP_201_CREATED,
    response_model=WorkflowWithVersion,
    summary="Publish the draft as the next version",
    responses={
        200: {
            "description": "The draft equals the latest version (definition and layout): no "
            "version is made, that one is answered (`created: false`) and the draft is closed.",
            "model": WorkflowWithVersion,
        },
        **documented(
            404,
            409,
            412,
            428,
            d409="The draft is invalid (`errors` lists every problem), or a version was saved "
            "since the draft was opened (`base_version`, `latest_version`; `force=true` "
            "publishes anyway).",
        ),
    },
)
async def publish(
    service: ServiceDep,
    actor: ActorDep,
    audit: AuditDep,
    workflow_ref: str,
    response: Response,
    force: Annotated[
        bool,
        Query(
            description="Publish even though a version was saved since the draft was opened "
            "(it replaces that version's changes)."
        ),
    ] = False,
    if_match: IfMatch = None,
) -> WorkflowWithVersion:
    """Validate the draft and make it the next immutable version, its layout kept beside
    it; the draft is closed. 409 with every problem when it is invalid, and 409 naming
    `base_version` and `latest_version` when someone saved a version since the draft was
    opened (publishing would silently undo it) unless `force=true`. A draft equal to the
    latest version makes none: 200 with that version and `created: false`. The answer's
    `ETag` is the workflow's."""
    record, version, created = await service.publish_draft(
        workflow_ref, revision_of(if_match), actor, force=force, audit=audit
    )
    response.headers["ETag"] = workflow_etag(record)
    response.headers["Location"] = f"/api/v1/workflows/{record.id}/versions/{version.version}"
    if not created:
        response.status_code = status.HTTP_200_OK
    return WorkflowWithVersion(
        workflow=WorkflowPublic.of(record), version=VersionPublic.of(version), created=created
    )
