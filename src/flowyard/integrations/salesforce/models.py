"""Config and output models of the ``salesforce`` node type."""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, RootModel, model_validator

from flowyard.domain.credentials import NAME_PATTERN
from flowyard.nodes.base import NodeConfig

from .client import API_NAME, RECORD_ID

#: Rows a query returns at most unless its config says otherwise.
DEFAULT_MAX_ROWS = 2000
MAX_ROWS_LIMIT = 50_000


class Operation(StrEnum):
    """What a ``salesforce`` step does."""

    CREATE = "create"
    UPDATE = "update"
    UPSERT = "upsert"
    GET = "get"
    DELETE = "delete"
    QUERY = "query"


#: The config fields each operation needs, and those it may take besides.
NEEDS: dict[Operation, frozenset[str]] = {
    Operation.CREATE: frozenset({"object", "fields"}),
    Operation.UPDATE: frozenset({"object", "record_id", "fields"}),
    Operation.UPSERT: frozenset({"object", "external_id_field", "external_id", "fields"}),
    Operation.GET: frozenset({"object", "record_id"}),
    Operation.DELETE: frozenset({"object", "record_id"}),
    Operation.QUERY: frozenset({"soql"}),
}
TAKES: dict[Operation, frozenset[str]] = {
    Operation.GET: frozenset({"fields"}),
    Operation.QUERY: frozenset({"max_rows"}),
}
_PER_OPERATION = ("object", "fields", "record_id", "external_id_field", "external_id", "soql")


def is_template(value: Any) -> bool:
    """A string the run renders (``{{ ... }}`` or ``{% ... %}``)."""
    return isinstance(value, str) and ("{{" in value or "{%" in value)


def check_api_name(value: Any, what: str) -> str:
    """``value`` when it is a Salesforce API name (ValueError naming ``what`` otherwise)."""
    if not isinstance(value, str) or not API_NAME.match(value):
        raise ValueError(
            f"{what} must be a Salesforce API name (letters, digits and underscores, starting "
            f"with a letter, at most 80 characters), got {str(value)[:100]!r}"
        )
    return value


def check_record_id(value: Any, what: str = "record_id") -> str:
    """``value`` when it is a 15- or 18-character record id."""
    if not isinstance(value, str) or not RECORD_ID.match(value):
        raise ValueError(
            f"{what} must be a Salesforce record id (15 or 18 letters and digits), "
            f"got {str(value)[:100]!r}"
        )
    return value


def check_fields(
    operation: Operation, value: Any, *, partial: bool = False
) -> dict[str, Any] | list[str]:
    """The ``fields`` of ``operation`` as rendered: a JSON object of API names (writes) or
    a list of API names (``get``). ``partial``: the literal part of a config's fields (its
    template names left out), which may be empty."""
    if operation is Operation.GET:
        if not isinstance(value, list):
            raise ValueError("fields of a get must be a list of field names")
        return [check_api_name(name, "a field name") for name in value]
    if not isinstance(value, dict):
        raise ValueError(f"fields of {operation.value} must be an object of field values")
    if not value and not partial and operation is not Operation.CREATE:
        raise ValueError(f"fields of {operation.value} must name at least one field")
    for name in value:
        check_api_name(name, "a field name")
    return value


class SalesforceConfig(NodeConfig):
    """One Salesforce REST operation; every string may be a template (names and ids are
    checked once rendered)."""

    credential: str = Field(
        pattern=NAME_PATTERN,
        description="Name of a salesforce_oauth credential (instance, API version, OAuth flow).",
    )
    operation: Operation
    object: str | None = Field(
        None, max_length=2048, description="The sObject API name (Lead, Account, Foo__c)."
    )
    fields: dict[str, Any] | list[str] | str | None = Field(
        None,
        description="create/update/upsert: the field values ({API name: value}); get: the "
        "field names to read (all when omitted). A template may give the whole object.",
    )
    record_id: str | None = Field(None, max_length=2048, description="update/get/delete.")
    external_id_field: str | None = Field(
        None, max_length=2048, description="upsert: the external id field's API name."
    )
    external_id: str | int | None = Field(
        None, description="upsert: the external id value (percent-encoded into the path)."
    )
    soql: str | None = Field(None, max_length=100_000, description="query: the SOQL text.")
    max_rows: int = Field(
        DEFAULT_MAX_ROWS,
        ge=1,
        le=MAX_ROWS_LIMIT,
        description="query: rows kept at most; past them the query stops (truncated: true).",
    )
    timeout_s: float = Field(
        30.0, gt=0, le=600, description="Deadline of each request (salesforce.timeout)."
    )
    max_response_bytes: int = Field(10 * 1024 * 1024, gt=0, le=100 * 1024 * 1024)

    @model_validator(mode="after")
    def _per_operation(self) -> SalesforceConfig:
        needs, takes = NEEDS[self.operation], TAKES.get(self.operation, frozenset())
        given = {name for name in _PER_OPERATION if getattr(self, name) is not None}
        if "max_rows" in self.model_fields_set:
            given.add("max_rows")
        missing = sorted(needs - given)
        if missing:
            raise ValueError(f"the {self.operation.value} operation needs {', '.join(missing)}")
        extra = sorted(given - needs - takes)
        if extra:
            raise ValueError(
                f"the {self.operation.value} operation does not take {', '.join(extra)}"
            )
        self._check_literals()
        return self

    def _check_literals(self) -> None:
        """Check what is not a template now (a save reports it); templates are checked
        when rendered."""
        for name in ("object", "external_id_field"):
            value = getattr(self, name)
            if value is not None and not is_template(value):
                check_api_name(value, name)
        if self.record_id is not None and not is_template(self.record_id):
            check_record_id(self.record_id)
        fields = self.fields
        if isinstance(fields, str):
            if not is_template(fields):
                raise ValueError("fields must be an object, a list, or a template giving one")
        elif fields is not None:
            # Template keys and names are checked once rendered.
            literal: dict[str, Any] | list[str] = (
                {k: v for k, v in fields.items() if not is_template(k)}
                if isinstance(fields, dict)
                else [f for f in fields if not is_template(f)]
            )
            check_fields(self.operation, literal if fields else fields, partial=bool(fields))
        if isinstance(self.external_id, str) and not self.external_id:
            raise ValueError("external_id must not be empty")
        if self.soql is not None and not self.soql.strip():
            raise ValueError("soql must not be empty")


class _Output(BaseModel):
    model_config = ConfigDict(extra="forbid")


class WriteOutput(_Output):
    """create, update and upsert: the record's id, and whether a record was created."""

    id: str | None = Field(description="The record id (null: an upsert answered 204).")
    success: bool
    created: bool


class GetOutput(_Output):
    """get: the record as Salesforce returns it (with its ``attributes``)."""

    record: dict[str, Any]


class DeleteOutput(_Output):
    """delete: the id of the deleted record."""

    deleted: bool
    id: str


class QueryOutput(_Output):
    """query: the rows read (every page, up to ``max_rows``)."""

    records: list[dict[str, Any]]
    total_size: int = Field(description="Salesforce's totalSize: rows the query matched.")
    done: bool = Field(description="True when every page was read.")
    truncated: bool = Field(description="True when the query stopped at max_rows.")


class SalesforceOutput(RootModel[WriteOutput | GetOutput | DeleteOutput | QueryOutput]):
    """The output of a ``salesforce`` step: its shape depends on the operation."""
