"""The ``salesforce`` node type: create, update, upsert, get, delete and query sObjects over
Salesforce's REST API with a ``salesforce_oauth`` credential."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flowyard.domain.credentials import SALESFORCE_API_VERSION, CredentialType
from flowyard.domain.errors import PermanentError
from flowyard.integrations.credentialed import ProviderNode, provider_credential
from flowyard.nodes.base import NodeOutcome, StepContext
from flowyard.outbound import Authenticator

from .auth import SalesforceAuth
from .client import RECORD_ID, SalesforceClient
from .models import (
    Operation,
    SalesforceConfig,
    SalesforceOutput,
    check_api_name,
    check_fields,
    check_record_id,
)

#: The plain fields every ``salesforce_oauth`` credential has (a node sees no other kind of
#: a credential's data, so this is how it tells the type).


class SalesforceNode(ProviderNode[SalesforceConfig]):
    """Salesforce REST: ``create``, ``update``, ``upsert`` (by external id), ``get``,
    ``delete``, ``query`` (SOQL, every page up to ``max_rows``).

    Requests go to ``{instance}/services/data/{api_version}/sobjects/...`` and ``/query``,
    the instance being the credential's ``instance_url`` (or, once a token was obtained,
    the ``instance_url`` of the token answer when the credential admits its origin). The
    token comes from the ``salesforce_oauth`` authenticator this type brings (refresh token,
    client credentials or JWT bearer flow), cached per credential and shared by the process;
    a 401 ``INVALID_SESSION_ID`` gets a new token and the call is repeated once.

    Idempotency: Salesforce's REST sObject resources take no idempotency key (only the UI
    API's record writes do), so none is sent; ``create`` repeated after a lost answer creates
    a second record. ``upsert`` on an external id is the idempotent create: prefer it where a
    step may be retried.

    Errors (``salesforce.<errorcode>`` from Salesforce's error array, lower-case):

    - transient: ``salesforce.request_limit_exceeded``, ``salesforce.unable_to_lock_row``,
      ``salesforce.server_unavailable``, any 5xx (``salesforce.http_<status>`` without a
      code), ``salesforce.timeout``, ``salesforce.network``, token endpoint 5xx/429
      (``salesforce.auth_http_<status>``), ``salesforce.auth_timeout``,
      ``salesforce.auth_network``. ``Retry-After`` is honoured.
    - permanent: ``salesforce.required_field_missing``, ``salesforce.invalid_field``,
      ``salesforce.field_custom_validation_exception``, ``salesforce.duplicates_detected``
      (details ``duplicate_ids``: the matched records, for a catch route that updates one),
      ``salesforce.invalid_type``, ``salesforce.not_found``, ``salesforce.malformed_query``,
      ``salesforce.invalid_session_id`` (still refused after a new token), every other
      4xx; ``salesforce.http_300`` (an upsert's external id matches several records);
      ``salesforce.auth_<error>`` (the token endpoint's OAuth error, e.g.
      ``salesforce.auth_invalid_grant``), ``salesforce.auth_invalid_private_key``;
      ``salesforce.invalid_config`` (a rendered name or id that is not one);
      ``credential.type`` (not a salesforce_oauth credential),
      ``credential.origin_not_allowed`` (the instance or token endpoint is not one of the
      credential's origins: nothing is sent).
    - ``salesforce.invalid_response``: a body that is not what Salesforce sends (transient
      on 5xx, else permanent); ``salesforce.response_too_large`` (permanent).

    Details keep ``status``, ``errorCode``, ``message`` and ``fields`` (and ``errors`` when
    there are several).
    """

    type_name = "salesforce"
    config_model = SalesforceConfig
    template_fields = (
        "/object",
        "/fields",
        "/record_id",
        "/external_id_field",
        "/external_id",
        "/soql",
    )
    output_model = SalesforceOutput
    description = (
        "Creates, updates, upserts, reads, deletes or queries Salesforce records "
        "(salesforce_oauth credential). Output: {id, success, created}, {record}, "
        "{deleted, id} or {records, total_size, done, truncated}."
    )

    def __init__(self, auth: SalesforceAuth | None = None) -> None:
        self.auth = auth if auth is not None else SalesforceAuth()

    def authenticators(self) -> Mapping[CredentialType, Authenticator]:
        """The ``salesforce_oauth`` authenticator (its token cache is this node type's)."""
        return {CredentialType.SALESFORCE_OAUTH: self.auth}

    def request_target_pointers(self, config: SalesforceConfig) -> list[str]:
        """None: the origin is the credential's own instance, and the templated parts
        (names, ids) are checked and encoded into single path segments."""
        return []

    async def execute(self, ctx: StepContext, config: SalesforceConfig) -> NodeOutcome:
        """Render the operation's parts, call Salesforce, shape the output."""
        info = await provider_credential(
            ctx, config.credential, CredentialType.SALESFORCE_OAUTH, node_type="salesforce"
        )
        parts = await _render(ctx, config)
        instance = self.auth.instance_url(config.credential, info) or str(info["instance_url"])
        client = SalesforceClient(
            ctx,
            self.auth,
            config.credential,
            instance_url=instance,
            api_version=str(info.get("api_version") or SALESFORCE_API_VERSION),
            timeout_s=config.timeout_s,
            max_bytes=config.max_response_bytes,
        )
        if config.operation is Operation.QUERY:
            return NodeOutcome(output=await _query(client, parts["soql"], config.max_rows))
        return NodeOutcome(output=await _record_call(client, config.operation, parts))


async def _render(ctx: StepContext, config: SalesforceConfig) -> dict[str, Any]:
    """The operation's parts rendered (one template budget for all) and checked:
    ``salesforce.invalid_config`` when a name or id is not one."""
    raw = {
        name: getattr(config, name)
        for name in ("object", "fields", "record_id", "external_id_field", "external_id", "soql")
        if getattr(config, name) is not None
    }
    parts = dict(await ctx.render(raw))
    try:
        if "object" in parts:
            check_api_name(parts["object"], "object")
        if "external_id_field" in parts:
            check_api_name(parts["external_id_field"], "external_id_field")
        if "record_id" in parts:
            check_record_id(parts["record_id"])
        if "fields" in parts:
            parts["fields"] = check_fields(config.operation, parts["fields"])
        if "external_id" in parts:
            parts["external_id"] = _external_id(parts["external_id"])
        if "soql" in parts:
            parts["soql"] = _soql(parts["soql"])
    except ValueError as exc:
        raise PermanentError(str(exc), error_type="salesforce.invalid_config") from None
    return parts


def _external_id(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise ValueError("external_id must render to a string or an integer")
    text = str(value)
    if not text or len(text) > 255:
        raise ValueError("external_id must have 1 to 255 characters")
    return text


def _soql(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError("soql must render to a non-empty string")
    return value


async def _record_call(
    client: SalesforceClient, operation: Operation, parts: dict[str, Any]
) -> dict[str, Any]:
    """create, update, upsert, get or delete one record."""
    obj = parts["object"]
    if operation is Operation.CREATE:
        done = await client.call(
            "POST", client.url("sobjects", obj) + "/", json_body=parts["fields"]
        )
        record_id = _saved_id(client, "POST", done)
        return {"id": record_id, "success": True, "created": True}
    if operation is Operation.UPDATE:
        rid = parts["record_id"]
        await client.call("PATCH", client.url("sobjects", obj, rid), json_body=parts["fields"])
        return {"id": rid, "success": True, "created": False}
    if operation is Operation.UPSERT:
        url = client.url("sobjects", obj, parts["external_id_field"], parts["external_id"])
        done = await client.call("PATCH", url, json_body=parts["fields"])
        if done.status == 204:  # API versions before 46.0 answer an update without a body
            return {"id": None, "success": True, "created": False}
        record_id = _saved_id(client, "PATCH", done)
        return {"id": record_id, "success": True, "created": done.status == 201}
    if operation is Operation.GET:
        names = parts.get("fields")
        params = {"fields": ",".join(names)} if names else None
        done = await client.call(
            "GET", client.url("sobjects", obj, parts["record_id"]), params=params
        )
        if not isinstance(done.body, dict):
            raise client.invalid("GET", done, "a body that is not a record")
        return {"record": done.body}
    await client.call("DELETE", client.url("sobjects", obj, parts["record_id"]))
    return {"deleted": True, "id": parts["record_id"]}


def _saved_id(client: SalesforceClient, method: str, done: Any) -> str:
    """The id of a SaveResult (``{"id", "success", "errors"}``)."""
    body = done.body
    record_id = body.get("id") if isinstance(body, dict) else None
    if not isinstance(record_id, str) or not RECORD_ID.match(record_id):
        raise client.invalid(method, done, "a body that is not a save result")
    if body.get("success") is False:
        raise client.invalid(method, done, "success: false")
    return record_id


async def _query(client: SalesforceClient, soql: str, max_rows: int) -> dict[str, Any]:
    """Every page of a SOQL query (``nextRecordsUrl``), up to ``max_rows`` rows."""
    done = await client.call("GET", client.url("query"), params={"q": soql})
    body = done.body
    if not isinstance(body, dict) or not isinstance(body.get("records"), list):
        raise client.invalid("GET", done, "a body that is not a query result")
    total = body.get("totalSize")
    records: list[dict[str, Any]] = []
    while True:
        page = body.get("records")
        if not isinstance(page, list) or not all(isinstance(r, dict) for r in page):
            raise client.invalid("GET", done, "a page that is not a list of records")
        room = max_rows - len(records)
        records.extend(page[:room])
        last = body.get("done") is not False or not body.get("nextRecordsUrl")
        if len(page) > room or (len(records) >= max_rows and not last):
            return _rows(records, total, done=False, truncated=True)
        if last:
            return _rows(records, total, done=True, truncated=False)
        done = await client.call("GET", client.next_url(body["nextRecordsUrl"]))
        body = done.body
        if not isinstance(body, dict):
            raise client.invalid("GET", done, "a body that is not a query result")


def _rows(
    records: list[dict[str, Any]], total: Any, *, done: bool, truncated: bool
) -> dict[str, Any]:
    size = total if isinstance(total, int) and not isinstance(total, bool) else len(records)
    return {"records": records, "total_size": size, "done": done, "truncated": truncated}
