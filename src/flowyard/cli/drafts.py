"""``flowyard draft ...``: a workflow's shared draft from the command line, for scripts.

Each edit is one undoable step, as over the API (decision 0027). ``--if-match`` names the
draft's ETag as the script read it (refused when the draft moved on since); without it the
edit applies to the draft as it is (the store still refuses one that changes between that
read and the write). Every command prints JSON; errors are one line on stderr, exit 2 for
bad input and 1 for anything else (no draft, a stale ETag, nothing to undo)."""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

import typer

from flowyard.bootstrap import Container
from flowyard.cli.common import DbOption, cli_actor, fail, out, parse_json_option, with_container
from flowyard.domain.auth import AuditEntry
from flowyard.domain.drafts import draft_revision
from flowyard.domain.errors import Conflict, NotFound, PreconditionFailed, Problem
from flowyard.drafts import ops
from flowyard.drafts.patching import parse_patch
from flowyard.service import DraftView
from flowyard.service.drafts import EditBuilder

draft_app = typer.Typer(
    help="Edit a workflow's shared draft node by node, undo, redo and publish it.",
    no_args_is_help=True,
)

RefArgument = Annotated[str, typer.Argument(help="The workflow's id or name", show_default=False)]
NodeArgument = Annotated[str, typer.Argument(help="The node's id", show_default=False)]
IfMatchOption = Annotated[
    str | None,
    typer.Option(
        "--if-match",
        help='The draft\'s ETag as you read it ("d7"): refused when it changed since',
        show_default="the draft as it is",
    ),
]


def _revision(if_match: str | None) -> int | None:
    if if_match is None:
        return None
    revision = draft_revision(if_match)
    if revision is None:
        fail(f'--if-match {if_match!r} is not a draft ETag like "d7"', code=2)
    return revision


def _shown(view: DraftView, *, document: bool = False) -> dict[str, Any]:
    draft = view.draft
    shown: dict[str, Any] = {
        "workflow": view.workflow.name,
        "etag": draft.etag,
        "base_version": draft.base_version,
        "undo_depth": draft.undo_depth,
        "redo_depth": draft.redo_depth,
        "valid": not view.problems,
        "problems": [p.as_dict() for p in view.problems],
    }
    if view.summary is not None:
        shown["last_step"] = view.summary
    if document:
        shown["document"] = draft.document
    return shown


def _print(value: Any) -> None:
    out.print_json(json.dumps(value))


def _edit(ref: str, if_match: str | None, build: EditBuilder, db: str | None) -> None:
    revision = _revision(if_match)

    async def fn(container: Container) -> DraftView:
        return await container.service.edit_draft(ref, revision, build, cli_actor())

    _print(_shown(with_container(db, fn, check_keys=False)))


def _json_object(value: str, name: str) -> dict[str, Any]:
    parsed = parse_json_option(value, name)
    if not isinstance(parsed, dict):
        fail(f"{name} must be a JSON object", code=2)
    return parsed


@draft_app.command("open")
def draft_open(
    ref: RefArgument,
    from_version: Annotated[
        int | None, typer.Option(min=1, help="Open from this version", show_default="the latest")
    ] = None,
    db: DbOption = None,
) -> None:
    """Open the workflow's draft from its latest version (or --from-version)."""

    async def fn(container: Container) -> DraftView:
        return await container.service.open_draft(ref, cli_actor(), from_version=from_version)

    _print(_shown(with_container(db, fn, check_keys=False), document=True))


@draft_app.command("show")
def draft_show(ref: RefArgument, db: DbOption = None) -> None:
    """Print the draft: its document, problems, ETag and undo/redo depths."""

    async def fn(container: Container) -> DraftView:
        return await container.service.get_draft(ref)

    _print(_shown(with_container(db, fn, check_keys=False), document=True))


@draft_app.command("add-node")
def draft_add_node(
    ref: RefArgument,
    node: Annotated[str, typer.Argument(help="The node as JSON, or @file", show_default=False)],
    after: Annotated[str | None, typer.Option(help="Splice it into this node's next edge")] = None,
    position: Annotated[
        str | None, typer.Option(help='Its place on the canvas: {"x": 0, "y": 0}')
    ] = None,
    if_match: IfMatchOption = None,
    db: DbOption = None,
) -> None:
    """Add a node (the first node of an empty draft becomes its start)."""
    body = _json_object(node, "NODE")
    place = None if position is None else _json_object(position, "--position")

    def build(doc: Any, refs: ops.References) -> ops.Edit:
        return ops.add_node(doc, body, after=after, position=place)

    _edit(ref, if_match, build, db)


@draft_app.command("set")
def draft_set(
    ref: RefArgument,
    node_id: NodeArgument,
    patch: Annotated[
        str,
        typer.Argument(
            help='An RFC 7386 merge patch of the node as JSON or @file: {"config": {...}, '
            '"timeout_s": 10, "position": {"x": 1, "y": 2}} (null removes a field)',
            show_default=False,
        ),
    ],
    if_match: IfMatchOption = None,
    db: DbOption = None,
) -> None:
    """Change fields of a node (config, name, next, retry, timeout_s, catch, position)."""
    body = _json_object(patch, "PATCH")
    _edit(ref, if_match, lambda doc, refs: ops.update_node(doc, node_id, body), db)


@draft_app.command("rm-node")
def draft_rm_node(
    ref: RefArgument,
    node_id: NodeArgument,
    edges: Annotated[
        ops.EdgeMode,
        typer.Option(help="Routes to the node: removed, or reconnected to where it went"),
    ] = ops.EdgeMode.REMOVE,
    if_match: IfMatchOption = None,
    db: DbOption = None,
) -> None:
    """Delete a node, its position, and the routes that led to it."""
    _edit(ref, if_match, lambda doc, refs: ops.delete_node(doc, node_id, edges, refs.routes), db)


@draft_app.command("rename")
def draft_rename(
    ref: RefArgument,
    node_id: NodeArgument,
    new_id: Annotated[str, typer.Argument(help="The node's new id", show_default=False)],
    if_match: IfMatchOption = None,
    db: DbOption = None,
) -> None:
    """Change a node's id; every route to it, the start and the layout follow."""
    _edit(
        ref,
        if_match,
        lambda doc, refs: ops.rename_node(doc, node_id, new_id, refs.routes, refs.expressions),
        db,
    )


@draft_app.command("patch")
def draft_patch(
    ref: RefArgument,
    patch: Annotated[
        str, typer.Argument(help="An RFC 6902 JSON Patch as JSON, or @file", show_default=False)
    ],
    if_match: IfMatchOption = None,
    db: DbOption = None,
) -> None:
    """Apply a JSON Patch to the draft document (paths under /definition and /layout)."""
    operations = parse_patch(parse_json_option(patch, "PATCH"))
    _edit(ref, if_match, lambda doc, refs: ops.raw(operations), db)


def _move(ref: str, which: Literal["undo", "redo"], if_match: str | None, db: str | None) -> None:
    revision = _revision(if_match)

    async def fn(container: Container) -> DraftView:
        return await container.service.move_draft(ref, revision, which, cli_actor())

    _print(_shown(with_container(db, fn, check_keys=False)))


@draft_app.command("undo")
def draft_undo(ref: RefArgument, if_match: IfMatchOption = None, db: DbOption = None) -> None:
    """Revert the last applied step."""
    _move(ref, "undo", if_match, db)


@draft_app.command("redo")
def draft_redo(ref: RefArgument, if_match: IfMatchOption = None, db: DbOption = None) -> None:
    """Re-apply the last undone step."""
    _move(ref, "redo", if_match, db)


@draft_app.command("history")
def draft_history(
    ref: RefArgument,
    limit: Annotated[int, typer.Option(min=1, max=10_000, help="Most steps shown")] = 100,
    db: DbOption = None,
) -> None:
    """The draft's steps, newest first: who, when, what."""

    async def fn(container: Container) -> dict[str, Any]:
        draft, steps = await container.service.draft_history(ref, limit=limit)
        return {
            "etag": draft.etag,
            "undo_depth": draft.undo_depth,
            "redo_depth": draft.redo_depth,
            "items": [
                {
                    "seq": s.seq,
                    "summary": s.summary,
                    "actor": s.actor,
                    "at": s.at.isoformat(),
                    "undone": s.undone,
                }
                for s in steps
            ],
        }

    _print(with_container(db, fn, check_keys=False))


@draft_app.command("discard")
def draft_discard(ref: RefArgument, if_match: IfMatchOption = None, db: DbOption = None) -> None:
    """Discard the draft and its history (the published versions stay)."""
    revision = _revision(if_match)

    async def fn(container: Container) -> None:
        await container.service.discard_draft(ref, revision, cli_actor())

    with_container(db, fn, check_keys=False)
    out.print(f"discarded the draft of {ref}", highlight=False, markup=False)


@draft_app.command("publish")
def draft_publish(
    ref: RefArgument,
    if_match: IfMatchOption = None,
    force: Annotated[
        bool,
        typer.Option(
            "--force",
            help="Publish even though a version was saved since the draft was opened "
            "(its changes are replaced)",
        ),
    ] = False,
    db: DbOption = None,
) -> None:
    """Validate the draft and make it the next version (every problem listed when it is
    invalid; refused when a version was saved since the draft was opened, unless --force).
    A draft equal to the latest version makes none ("created": false)."""
    revision = _revision(if_match)

    async def fn(container: Container) -> dict[str, Any]:
        entry = AuditEntry("draft.publish", cli_actor(), "workflow", ref, source_ip="cli")
        try:
            record, version, created = await container.service.publish_draft(
                ref, revision, cli_actor(), force=force, audit=entry
            )
        except Conflict as exc:
            # As the API's audit does for a refused request (outcome by status, its status).
            await _audit_refusal(container, entry, "conflict", 409)
            errors = exc.detail.get("errors")
            if not errors:
                raise
            fail(exc.message, [Problem(e["pointer"], e["message"], e["code"]) for e in errors])
        except PreconditionFailed:
            await _audit_refusal(container, entry, "conflict", 412)
            raise
        except NotFound:
            await _audit_refusal(container, entry, "not_found", 404)
            raise
        return {
            "workflow": record.name,
            "id": record.id,
            "version": version.version,
            "created": created,
        }

    _print(with_container(db, fn, check_keys=False))


async def _audit_refusal(
    container: Container, entry: AuditEntry, outcome: str, status: int
) -> None:
    """Write the entry of a refused command, as the API's middleware writes a refused
    request's (outcome and status; the change's own transaction never wrote it)."""
    if entry.written:
        return
    entry.outcome = outcome
    entry.detail = {**(entry.detail or {}), "status": status}
    await container.admin.append_audit(entry)
