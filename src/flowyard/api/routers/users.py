"""Users: ``/users`` (admin)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Response, status

from flowyard.api.auth_schemas import USER_ID, UserCreate, UserPublic, UserUpdate
from flowyard.api.deps import AuditDep, ContainerDep
from flowyard.api.jsonbody import StrictJSONRoute
from flowyard.api.problems import documented
from flowyard.api.schemas import Page, paged
from flowyard.domain.auth import Role

router = APIRouter(route_class=StrictJSONRoute)


# -- /users --------------------------------------------------------------------------------


@router.post(
    "/users",
    status_code=status.HTTP_201_CREATED,
    response_model=UserPublic,
    tags=["users"],
    summary="Create a user",
    responses=documented(409, 422, d409="The username is taken."),
)
async def create_user(container: ContainerDep, audit: AuditDep, body: UserCreate) -> UserPublic:
    """Create a user (admin)."""
    user = await container.auth.create_user(body.username, body.password, body.role, audit=audit)
    return UserPublic.of(user)


@router.get("/users", response_model=Page[UserPublic], tags=["users"], summary="List users")
async def list_users(
    container: ContainerDep,
    role: Annotated[Role | None, Query(description="Only users with this role")] = None,
    disabled: Annotated[bool | None, Query(description="Only disabled (or enabled) users")] = None,
    limit: Annotated[int, Query(ge=1, le=500, description="Page size")] = 100,
    cursor: Annotated[
        str | None, Query(max_length=128, description="`next_cursor` (a username)")
    ] = None,
) -> Page[UserPublic]:
    """Users by name, a page at a time (admin)."""
    rows = await container.auth.list_users(
        limit=limit + 1, after=cursor, role=role, disabled=disabled
    )
    users, next_cursor = paged(rows, limit, lambda u: u.username)
    return Page[UserPublic](items=[UserPublic.of(u) for u in users], next_cursor=next_cursor)


UserId = Annotated[
    str,
    Path(
        max_length=64,
        description="The user's id (`usr_...`, see `GET /users`); never its username.",
        examples=[USER_ID],
    ),
]
LAST_ADMIN = "It is the last enabled admin (`reason: last_admin`): make another user admin first."


@router.patch(
    "/users/{user_id}",
    response_model=UserPublic,
    tags=["users"],
    summary="Change a user",
    responses=documented(404, 409, 422, d409="Demoting or disabling: " + LAST_ADMIN),
)
async def update_user(
    container: ContainerDep, audit: AuditDep, user_id: UserId, body: UserUpdate
) -> UserPublic:
    """Change a user's role, disabled flag or password (admin). Disabling or a new password
    ends the user's sessions (refresh and access tokens). The last enabled admin cannot be
    demoted or disabled (409, `reason: last_admin`)."""
    user = await container.auth.update_user(
        user_id, role=body.role, disabled=body.disabled, password=body.password, audit=audit
    )
    return UserPublic.of(user)


@router.delete(
    "/users/{user_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    tags=["users"],
    summary="Delete a user",
    responses=documented(404, 409, d409=LAST_ADMIN),
)
async def delete_user(container: ContainerDep, audit: AuditDep, user_id: UserId) -> Response:
    """Delete a user (admin); its API keys are revoked. The last enabled admin cannot be deleted
    (409, `reason: last_admin`)."""
    await container.auth.delete_user(user_id, audit=audit)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
