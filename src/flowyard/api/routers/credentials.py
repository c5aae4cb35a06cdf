"""/credentials: the vault. Write-only: reads return metadata and masked data, never a
secret. Nodes reference credentials by name; only workers decrypt them."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response, status
from pydantic import BaseModel, ConfigDict, Field

from flowyard.api.deps import ActorDep, AuditDep
from flowyard.api.jsonbody import StrictJSONRoute
from flowyard.api.problems import documented
from flowyard.api.routers.quotas import QuotaPublic
from flowyard.api.schemas import MAX_VERSION, Page
from flowyard.domain.credentials import MODELS, NAME_PATTERN, CredentialType
from flowyard.domain.quotas import credential_key
from flowyard.security import CredentialService, CredentialView
from flowyard.security.credentials import MAX_DESCRIPTION, UNSET
from flowyard.service.quotas import QuotaService

router = APIRouter(tags=["credentials"], route_class=StrictJSONRoute)

CredentialName = Annotated[
    str, Field(pattern=NAME_PATTERN, description="How node configs refer to the credential.")
]
ORIGINS_HELP = (
    "Origins (scheme://host[:port]; a leading '*.' admits every subdomain) the credential may "
    "be sent to; a request elsewhere fails with credential.origin_not_allowed. Required for "
    "bearer, basic, api_key_header and custom; provider types default to their own endpoints."
)
Origins = Annotated[list[Annotated[str, Field(max_length=300)]], Field(max_length=50)]

EXAMPLES: dict[str, dict[str, Any]] = {
    "bearer": {
        "summary": "A bearer token",
        "value": {
            "name": "crm-token",
            "type": "bearer",
            "description": "CRM API token",
            "data": {"token": "eyJhbGciOi..."},
            "allowed_origins": ["https://crm.example.com"],
        },
    },
    "basic": {
        "summary": "HTTP basic auth",
        "value": {
            "name": "legacy-erp",
            "type": "basic",
            "data": {"username": "svc-flowyard", "password": "s3cret"},
            "allowed_origins": ["https://erp.example.com:8443"],
        },
    },
    "api_key_header": {
        "summary": "A key in a header",
        "value": {
            "name": "weather",
            "type": "api_key_header",
            "data": {"header": "X-API-Key", "value": "k-123"},
            "allowed_origins": ["https://api.weather.example", "https://*.weather.example"],
        },
    },
    "smtp": {
        "summary": "An SMTP relay",
        "value": {
            "name": "mail",
            "type": "smtp",
            "data": {
                "host": "smtp.example.com",
                "port": 587,
                "username": "robot",
                "password": "s3cret",
                "starttls": True,
            },
        },
    },
    "salesforce_oauth": {
        "summary": "A Salesforce connected app",
        "value": {
            "name": "salesforce",
            "type": "salesforce_oauth",
            "data": {
                "instance_url": "https://acme.my.salesforce.com",
                "client_id": "3MVG9...",
                "client_secret": "s3cret",
                "refresh_token": "5Aep8...",
            },
        },
    },
}


class CredentialCreate(BaseModel):
    """A new credential. ``data`` is checked against the type's schema
    (``GET /credential-types``) and never returned."""

    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [e["value"] for e in EXAMPLES.values()]}
    )
    name: CredentialName
    type: CredentialType
    description: str | None = Field(None, max_length=MAX_DESCRIPTION)
    data: dict[str, Any] = Field(
        description="The fields of the type; secret ones are write-only.",
        json_schema_extra={"writeOnly": True},
    )
    allowed_origins: Origins | None = Field(None, description=ORIGINS_HELP)


class CredentialUpdate(BaseModel):
    """Replace a credential's data (whole: send every field again) and/or its description.
    Its name and type cannot change."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"data": {"token": "new-token"}, "version": 1},
                {"description": "rotated quarterly"},
                {"allowed_origins": ["https://crm.example.com"]},
            ]
        },
    )
    data: dict[str, Any] | None = Field(
        None,
        description="New data for the credential's type; omit to keep it.",
        json_schema_extra={"writeOnly": True},
    )
    description: str | None = Field(
        None, max_length=MAX_DESCRIPTION, description="Omit to keep; null clears it."
    )
    allowed_origins: Origins | None = Field(
        None,
        description="Omit to keep; null: the provider's defaults (provider types only). "
        + ORIGINS_HELP,
    )
    version: int | None = Field(
        None,
        ge=1,
        le=MAX_VERSION,
        description="The version this change is based on: 409 if it is stale.",
    )


class CredentialPublic(BaseModel):
    """A credential's metadata and masked data: plain fields as stored, secret fields as
    ``********``."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": "cred_01hx2k3m4n5p6q7r8s9t0v1w2x",
                    "name": "legacy-erp",
                    "type": "basic",
                    "description": None,
                    "data": {"username": "svc-flowyard", "password": "********"},
                    "allowed_origins": ["https://erp.example.com:8443"],
                    "key_id": "3f9a0c1d2e4b5a69",
                    "version": 1,
                    "created_by": "user:admin",
                    "created_at": "2026-11-24T10:00:00Z",
                    "updated_at": "2026-11-24T10:00:00Z",
                }
            ]
        }
    )
    id: str
    name: str
    type: CredentialType
    description: str | None
    data: dict[str, Any] | None = Field(
        description="Masked data; null when it cannot be decrypted (see `problem`)."
    )
    problem: str | None = Field(None, description="Why the data cannot be decrypted.")
    allowed_origins: list[str] = Field(
        description="Where the credential may be sent (normalised; the provider's defaults "
        "when none were set). Empty: nowhere, an admin must set them."
    )
    key_id: str = Field(description="Fingerprint of the vault key that encrypts the data.")
    version: int
    created_by: str | None
    created_at: datetime
    updated_at: datetime
    quota: QuotaPublic | None = Field(
        None,
        description="The credential's quota (the one keyed credential:<name>; managed at "
        "/credentials/{name}/quota), null when it has none. Shown by GET only.",
    )

    @classmethod
    def of(cls, view: CredentialView) -> CredentialPublic:
        """From the vault's view."""
        r = view.record
        return cls(
            id=r.id,
            name=r.name,
            type=r.type,
            description=r.description,
            data=view.data,
            problem=view.problem,
            allowed_origins=list(view.allowed_origins),
            key_id=r.key_id,
            version=r.version,
            created_by=r.created_by,
            created_at=r.created_at,
            updated_at=r.updated_at,
        )


class CredentialTypeInfo(BaseModel):
    """One credential type and the JSON Schema of its data (secret fields are
    ``writeOnly`` with ``format: password``)."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "type": "bearer",
                    "data_schema": {
                        "additionalProperties": False,
                        "properties": {
                            "token": {"format": "password", "type": "string", "writeOnly": True}
                        },
                        "required": ["token"],
                        "title": "BearerData",
                        "type": "object",
                    },
                }
            ]
        }
    )
    type: CredentialType
    data_schema: dict[str, Any]


def _credentials(request: Request) -> CredentialService:
    service: CredentialService = request.app.state.container.credentials
    return service


@router.get("/credential-types", response_model=list[CredentialTypeInfo])
async def list_credential_types() -> list[CredentialTypeInfo]:
    """Every credential type with the schema of its ``data``."""
    return [
        CredentialTypeInfo(type=t, data_schema=model.model_json_schema())
        for t, model in MODELS.items()
    ]


@router.post(
    "/credentials",
    status_code=status.HTTP_201_CREATED,
    response_model=CredentialPublic,
    responses=documented(409, 422),
)
async def create_credential(
    request: Request, actor: ActorDep, audit: AuditDep, body: CredentialCreate, response: Response
) -> CredentialPublic:
    """Create a credential (admin). Its data is encrypted at rest and never returned."""
    view = await _credentials(request).create(
        body.name,
        body.type,
        body.data,
        description=body.description,
        actor=actor,
        allowed_origins=body.allowed_origins,
        audit=audit,
    )
    response.headers["Location"] = f"/api/v1/credentials/{view.record.name}"
    return CredentialPublic.of(view)


@router.get("/credentials", response_model=Page[CredentialPublic])
async def list_credentials(
    request: Request,
    type: Annotated[CredentialType | None, Query(description="Only this type")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[str | None, Query(max_length=64, description="Name cursor")] = None,
) -> Page[CredentialPublic]:
    """Credentials by name, masked (editor)."""
    items = await _credentials(request).list(limit=limit, after=cursor, type_=type)
    next_cursor = items[-1].record.name if len(items) == limit else None
    return Page[CredentialPublic](
        items=[CredentialPublic.of(v) for v in items], next_cursor=next_cursor
    )


@router.get("/credentials/{name}", response_model=CredentialPublic, responses=documented(404))
async def get_credential(request: Request, name: str) -> CredentialPublic:
    """A credential by name (or id), masked, with its quota (editor)."""
    view = await _credentials(request).get(name)
    quotas: QuotaService = request.app.state.container.quotas
    public = CredentialPublic.of(view)
    quota = await quotas.find(credential_key(view.record.name))
    if quota is not None:
        public.quota = QuotaPublic.of(quota, quotas.clock())
    return public


@router.put(
    "/credentials/{name}", response_model=CredentialPublic, responses=documented(404, 409, 422)
)
async def update_credential(
    request: Request, audit: AuditDep, name: str, body: CredentialUpdate
) -> CredentialPublic:
    """Replace the data, description and/or allowed origins (admin); the version goes up by
    one. Workers see the change within ``FLOWYARD_CREDENTIAL_CACHE_TTL_S`` (5 s)."""
    given = body.model_fields_set
    view = await _credentials(request).update(
        name,
        data=body.data,
        description=body.description if "description" in given else UNSET,
        allowed_origins=body.allowed_origins if "allowed_origins" in given else UNSET,
        expected_version=body.version,
        audit=audit,
    )
    return CredentialPublic.of(view)


@router.delete(
    "/credentials/{name}", status_code=status.HTTP_204_NO_CONTENT, responses=documented(404)
)
async def delete_credential(request: Request, audit: AuditDep, name: str) -> Response:
    """Delete a credential (admin). Steps that reference it fail with
    ``credential.not_found`` from then on."""
    await _credentials(request).delete(name, audit=audit)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
