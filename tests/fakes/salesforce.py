"""A local Salesforce on 127.0.0.1: the OAuth 2.0 token endpoint and the REST API's sObject
and query resources, speaking Salesforce's wire protocol (URLs, form-encoded token
requests, JSON bodies, the ``[{"message", "errorCode", "fields"}]`` error array, OAuth error
answers), with an in-memory store, scriptable failures and call counters.

    with FakeSalesforce() as sf:              # or sf = FakeSalesforce().start(); sf.stop()
        sf.add_app("app-1", client_secret="s3cret", refresh_token="r-1")
        sf.fail(503, SERVER_UNAVAILABLE, times=2)   # the next two REST calls
        ...
        sf.calls["create"], sf.calls["token"], sf.records["Lead"]

What it does as Salesforce does: record ids of 15/18 characters (the 18-character case-safe
suffix computed), required fields (``REQUIRED_FIELD_MISSING``), unknown fields
(``INVALID_FIELD``), unknown objects (``NOT_FOUND``; ``INVALID_TYPE`` in SOQL), duplicate rules
on unique fields (``DUPLICATES_DETECTED`` with ``duplicateResult.matchResults``), upsert by
external id (201 created / 200 updated / 300 several matches), a tiny SOQL (``SELECT f, g FROM
Obj [WHERE F = 'x' [AND ...]] [LIMIT n]``) paginated with ``nextRecordsUrl``, and
``INVALID_SESSION_ID`` for tokens it did not issue or has expired (:meth:`expire_tokens`).
The JWT bearer grant verifies the assertion's RS256 signature with the app's public key, its
issuer, subject, audience (this server's origin, or :attr:`audience`) and expiry.
"""

from __future__ import annotations

import json
import re
import secrets
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import jwt

SESSION_EXPIRED = [{"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}]
SERVER_UNAVAILABLE = [{"message": "Server is unavailable", "errorCode": "SERVER_UNAVAILABLE"}]
LIMIT_EXCEEDED = [
    {"message": "TotalRequests Limit exceeded.", "errorCode": "REQUEST_LIMIT_EXCEEDED"}
]
NOT_FOUND = [{"errorCode": "NOT_FOUND", "message": "The requested resource does not exist"}]
PREFIXES = {"Lead": "00Q", "Account": "001", "Contact": "003", "Opportunity": "006", "Case": "500"}
#: Fields of the standard objects it knows (custom ``__c`` fields are accepted everywhere).
FIELDS = {
    "Lead": {
        "FirstName",
        "LastName",
        "Company",
        "Email",
        "Phone",
        "Status",
        "OwnerId",
        "LeadSource",
    },
    "Account": {"Name", "Phone", "Website", "Industry", "OwnerId"},
    "Contact": {"FirstName", "LastName", "Email", "Phone", "AccountId", "OwnerId"},
    "Opportunity": {"Name", "StageName", "CloseDate", "Amount", "AccountId", "OwnerId"},
    "Case": {"Subject", "Description", "Status", "Origin", "ContactId", "OwnerId"},
}
SYSTEM_FIELDS = {"Id", "CreatedDate", "LastModifiedDate"}
REQUIRED = {"Lead": ["LastName", "Company"], "Account": ["Name"], "Contact": ["LastName"]}
_SOQL = re.compile(
    r"^\s*SELECT\s+(?P<fields>.+?)\s+FROM\s+(?P<object>\w+)"
    r"(?:\s+WHERE\s+(?P<where>.+?))?(?:\s+LIMIT\s+(?P<limit>\d+))?\s*$",
    re.IGNORECASE | re.DOTALL,
)
_CONDITION = re.compile(r"^\s*(\w+)\s*=\s*'((?:[^'\\]|\\.)*)'\s*$", re.DOTALL)
_SUFFIX = "ABCDEFGHIJKLMNOPQRSTUVWXYZ012345"
_BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def id18(id15: str) -> str:
    """Salesforce's case-safe 18-character form of a 15-character id."""
    suffix = ""
    for start in (0, 5, 10):
        bits = sum(1 << i for i, c in enumerate(id15[start : start + 5]) if c.isupper())
        suffix += _SUFFIX[bits]
    return id15 + suffix


@dataclass
class ConnectedApp:
    """A connected app: its secret, the refresh tokens it issued, its certificate's public
    key (JWT bearer) and the users it may act for."""

    client_id: str
    client_secret: str | None = None
    refresh_tokens: set[str] = field(default_factory=set)
    public_key: str | None = None
    usernames: set[str] = field(default_factory=set)


@dataclass
class Failure:
    """A scripted answer: to the next request of kind ``match`` (an operation: create,
    update, upsert, get, delete, query, query_more, or token; None: any REST call). Status
    0 drops the connection without answering."""

    status: int
    body: Any
    headers: dict[str, str] = field(default_factory=dict)
    match: str | None = None
    content_type: str = "application/json;charset=UTF-8"


@dataclass
class Seen:
    """One request as the fake saw it."""

    kind: str
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes


class _Reply(Exception):
    def __init__(self, status: int, body: Any = None, headers: dict[str, str] | None = None):
        super().__init__(status)
        self.status, self.body, self.headers = status, body, headers or {}


class FakeSalesforce:
    """The fake server (see the module docstring). Thread-safe; every attribute read by
    tests is updated under its lock."""

    def __init__(self, *, page_size: int = 2000) -> None:
        self.page_size = page_size
        self.apps: dict[str, ConnectedApp] = {}
        self.records: dict[str, dict[str, dict[str, Any]]] = {}
        self.unique: dict[str, set[str]] = {"Lead": {"Email"}, "Contact": {"Email"}}
        self.calls: Counter[str] = Counter()
        self.seen: list[Seen] = []
        self.failures: list[Failure] = []
        #: The ``instance_url`` token answers name (None: this server).
        self.token_instance_url: str | None = None
        #: The audience JWT assertions must name (None: this server's origin).
        self.audience: str | None = None
        #: Every access token issued, in order (also those expired since).
        self.issued: list[str] = []
        self._tokens: set[str] = set()
        self._cursors: dict[str, list[dict[str, Any]]] = {}
        self._counter = 0
        self._lock = threading.RLock()
        fake = self

        class _Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                status, payload, headers = fake._dispatch(self, body)
                if status == 0:  # scripted: drop the connection without an answer
                    self.close_connection = True
                    return
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_PATCH = do_DELETE = _handle

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    # -- lifecycle ---------------------------------------------------------------------

    def start(self) -> FakeSalesforce:
        """Start serving (in a thread); returns self."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving."""
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> FakeSalesforce:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>`` (the instance and the token host)."""
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    # -- scripting ---------------------------------------------------------------------

    def add_app(
        self,
        client_id: str,
        *,
        client_secret: str | None = None,
        refresh_token: str | None = None,
        public_key: str | None = None,
        username: str | None = None,
    ) -> ConnectedApp:
        """Register a connected app (or add a refresh token / user to one)."""
        with self._lock:
            app = self.apps.setdefault(client_id, ConnectedApp(client_id))
            app.client_secret = client_secret or app.client_secret
            app.public_key = public_key or app.public_key
            if refresh_token:
                app.refresh_tokens.add(refresh_token)
            if username:
                app.usernames.add(username)
            return app

    def fail(
        self,
        status: int,
        body: Any,
        *,
        times: int = 1,
        headers: dict[str, str] | None = None,
        match: str | None = None,
        content_type: str = "application/json;charset=UTF-8",
    ) -> None:
        """Answer the next ``times`` requests of kind ``match`` with ``status`` and ``body``
        (JSON, or bytes sent as they are)."""
        with self._lock:
            for _ in range(times):
                self.failures.append(Failure(status, body, headers or {}, match, content_type))

    def expire_tokens(self) -> None:
        """Every access token issued so far is refused from now on (INVALID_SESSION_ID)."""
        with self._lock:
            self._tokens.clear()

    def tokens(self) -> set[str]:
        """The access tokens currently valid."""
        with self._lock:
            return set(self._tokens)

    def add_record(self, obj: str, fields: dict[str, Any]) -> str:
        """Store a record directly (no rules); returns its 18-character id."""
        with self._lock:
            return self._insert(obj, fields)

    def of(self, kind: str) -> list[Seen]:
        """The requests of one kind, in order."""
        with self._lock:
            return [s for s in self.seen if s.kind == kind]

    # -- dispatch ----------------------------------------------------------------------

    def _dispatch(
        self, handler: BaseHTTPRequestHandler, body: bytes
    ) -> tuple[int, bytes, dict[str, str]]:
        split = urlsplit(handler.path)
        segments = [unquote(s) for s in split.path.split("/")[1:]]
        method = handler.command
        kind = _kind(method, segments)
        headers = dict(handler.headers.items())
        with self._lock:
            self.calls[kind] += 1
            self.seen.append(Seen(kind, method, split.path, parse_qs(split.query), headers, body))
            failure = self._next_failure(kind)
        if failure is not None:
            raw = (
                failure.body
                if isinstance(failure.body, bytes)
                else json.dumps(failure.body).encode()
            )
            return failure.status, raw, {"Content-Type": failure.content_type, **failure.headers}
        try:
            with self._lock:
                if kind == "token":
                    result = self._token(body, headers)
                else:
                    self._authorize(headers)
                    result = self._rest(kind, method, segments, parse_qs(split.query), body)
            status, payload, extra = 200, result, {}
            if isinstance(result, _Reply):  # a success status other than 200
                status, payload, extra = result.status, result.body, result.headers
        except _Reply as reply:
            status, payload, extra = reply.status, reply.body, reply.headers
        raw = b"" if payload is None else json.dumps(payload).encode()
        headers_out = {"Content-Type": "application/json;charset=UTF-8", **extra}
        return status, raw, headers_out

    def _next_failure(self, kind: str) -> Failure | None:
        for index, failure in enumerate(self.failures):
            if failure.match == kind or (failure.match is None and kind != "token"):
                return self.failures.pop(index)
        return None

    def _authorize(self, headers: dict[str, str]) -> None:
        value = next((v for k, v in headers.items() if k.lower() == "authorization"), "")
        if not value.startswith("Bearer ") or value[7:] not in self._tokens:
            raise _Reply(401, SESSION_EXPIRED, {"WWW-Authenticate": "Token"})

    # -- OAuth -------------------------------------------------------------------------

    def _token(self, body: bytes, headers: dict[str, str]) -> Any:
        form = {k: v[0] for k, v in parse_qs(body.decode()).items()}
        grant = form.get("grant_type")
        if grant == "urn:ietf:params:oauth:grant-type:jwt-bearer":
            app = self._jwt_app(form.get("assertion", ""))
        elif grant in ("refresh_token", "client_credentials"):
            app = self.apps.get(form.get("client_id", ""))
            if app is None:
                raise _oauth("invalid_client_id", "client identifier invalid")
            if not app.client_secret or form.get("client_secret") != app.client_secret:
                raise _oauth("invalid_client", "invalid client credentials")
            if grant == "refresh_token" and form.get("refresh_token") not in app.refresh_tokens:
                raise _oauth("invalid_grant", "expired access/refresh token")
        else:
            raise _oauth("unsupported_grant_type", "grant type not supported")
        token = f"00D5g00000{secrets.token_hex(4)}!{secrets.token_urlsafe(24)}"
        self._tokens.add(token)
        self.issued.append(token)
        return {
            "access_token": token,
            "signature": secrets.token_urlsafe(16),
            "scope": "api",
            "instance_url": self.token_instance_url or self.url,
            "id": f"{self.url}/id/00D5g000000ORG/0055g000000USR",
            "token_type": "Bearer",
            "issued_at": str(int(time.time() * 1000)),
        }

    def _jwt_app(self, assertion: str) -> ConnectedApp:
        try:
            claims = jwt.decode(assertion, options={"verify_signature": False})
        except jwt.PyJWTError:
            raise _oauth("invalid_grant", "invalid assertion") from None
        app = self.apps.get(str(claims.get("iss")))
        if app is None or app.public_key is None:
            raise _oauth("invalid_client_id", "client identifier invalid")
        try:
            jwt.decode(
                assertion,
                app.public_key,
                algorithms=["RS256"],
                audience=self.audience or self.url,
                options={"require": ["exp", "iss", "sub", "aud"]},
            )
        except jwt.ExpiredSignatureError:
            raise _oauth("invalid_grant", "expired authorization code") from None
        except jwt.InvalidAudienceError:
            raise _oauth("invalid_grant", "audience is invalid") from None
        except jwt.PyJWTError:
            raise _oauth("invalid_grant", "invalid assertion") from None
        if claims["exp"] > time.time() + 300:
            raise _oauth("invalid_grant", "invalid assertion")
        if claims.get("sub") not in app.usernames:
            raise _oauth("invalid_grant", "user hasn't approved this consumer")
        return app

    # -- REST --------------------------------------------------------------------------

    def _rest(
        self, kind: str, method: str, segs: list[str], query: dict[str, list[str]], body: bytes
    ) -> Any:
        version = segs[2] if len(segs) > 2 else ""
        if kind == "query":
            soql = query.get("q", [""])[0]
            return self._query(version, soql)
        if kind == "query_more":
            return self._page(version, segs[4])
        if kind == "unknown":
            raise _Reply(404, NOT_FOUND)
        obj = segs[4]
        if obj not in FIELDS and not obj.endswith("__c"):
            raise _Reply(404, NOT_FOUND)
        if kind == "create":
            record_id = self._create(obj, _json(body))
            return _Reply(201, {"id": record_id, "success": True, "errors": []})
        if kind == "upsert":
            return self._upsert(version, obj, segs[5], segs[6], _json(body))
        record = self._find(obj, segs[5])
        if kind == "get":
            names = query.get("fields", [""])[0]
            return self._render(version, obj, record, names.split(",") if names else None)
        if kind == "update":
            self._check(obj, _json(body), record["Id"])
            record.update(_json(body))
            return _Reply(204)
        del self.records[obj][record["Id"]]
        return _Reply(204)

    def _find(self, obj: str, record_id: str) -> dict[str, Any]:
        for rid, record in self.records.get(obj, {}).items():
            if record_id in (rid, rid[:15]):
                return record
        raise _Reply(404, NOT_FOUND)

    def _check(self, obj: str, fields: dict[str, Any], own_id: str | None = None) -> None:
        allowed = FIELDS.get(obj, set())
        for name in fields:
            if name not in allowed and not name.endswith("__c"):
                raise _Reply(
                    400,
                    [
                        {
                            "message": f"No such column '{name}' on sobject of type {obj}",
                            "errorCode": "INVALID_FIELD",
                            "fields": [],
                        }
                    ],
                )
        for name in self.unique.get(obj, ()):
            value = fields.get(name)
            matches = [
                rid
                for rid, r in self.records.get(obj, {}).items()
                if value is not None and r.get(name) == value and rid != own_id
            ]
            if matches:
                raise _Reply(400, _duplicates(obj, matches))

    def _create(self, obj: str, fields: dict[str, Any]) -> str:
        missing = [f for f in REQUIRED.get(obj, []) if fields.get(f) in (None, "")]
        if missing:
            raise _Reply(
                400,
                [
                    {
                        "message": f"Required fields are missing: [{', '.join(missing)}]",
                        "errorCode": "REQUIRED_FIELD_MISSING",
                        "fields": missing,
                    }
                ],
            )
        self._check(obj, fields)
        return self._insert(obj, fields)

    def _insert(self, obj: str, fields: dict[str, Any]) -> str:
        self._counter += 1
        n, digits = self._counter, ""
        for _ in range(5):
            n, r = divmod(n, 62)
            digits = _BASE62[r] + digits
        record_id = id18(PREFIXES.get(obj, "a00") + "5g00000" + digits)
        self.records.setdefault(obj, {})[record_id] = {**fields, "Id": record_id}
        return record_id

    def _upsert(self, version: str, obj: str, field_name: str, value: str, fields: Any) -> Any:
        if not field_name.endswith("__c"):
            raise _Reply(
                404,
                [
                    {
                        "errorCode": "NOT_FOUND",
                        "message": "Provided external ID field does not exist or is not "
                        f"accessible: {field_name}",
                    }
                ],
            )
        matches = [r for r in self.records.get(obj, {}).values() if str(r.get(field_name)) == value]
        if len(matches) > 1:
            raise _Reply(
                300, [f"/services/data/{version}/sobjects/{obj}/{r['Id']}" for r in matches]
            )
        if matches:
            self._check(obj, fields, matches[0]["Id"])
            matches[0].update(fields)
            return {"id": matches[0]["Id"], "success": True, "errors": [], "created": False}
        record_id = self._create(obj, {**fields, field_name: value})
        return _Reply(201, {"id": record_id, "success": True, "errors": [], "created": True})

    def _render(
        self, version: str, obj: str, record: dict[str, Any], names: list[str] | None
    ) -> dict[str, Any]:
        url = f"/services/data/{version}/sobjects/{obj}/{record['Id']}"
        out: dict[str, Any] = {"attributes": {"type": obj, "url": url}}
        for name in names if names is not None else ["Id", *sorted(FIELDS.get(obj, ()))]:
            if name not in FIELDS.get(obj, set()) | SYSTEM_FIELDS and not name.endswith("__c"):
                raise _Reply(
                    400,
                    [
                        {
                            "message": f"No such column '{name}' on entity '{obj}'",
                            "errorCode": "INVALID_FIELD",
                        }
                    ],
                )
            out[name] = record.get(name)
        if names is None:
            out.update({k: v for k, v in record.items() if k.endswith("__c")})
        return out

    def _query(self, version: str, soql: str) -> dict[str, Any]:
        match = _SOQL.match(soql)
        if match is None:
            raise _Reply(
                400, [{"message": "unexpected token: query", "errorCode": "MALFORMED_QUERY"}]
            )
        obj = match["object"]
        if obj not in FIELDS and not obj.endswith("__c"):
            message = f"\n{soql}\nERROR at Row:1\nsObject type '{obj}' is not supported."
            raise _Reply(400, [{"message": message, "errorCode": "INVALID_TYPE"}])
        names = [n.strip() for n in match["fields"].split(",")]
        conditions: list[tuple[str, str]] = []
        for part in re.split(r"\s+AND\s+", match["where"] or "", flags=re.IGNORECASE):
            if not part.strip():
                continue
            cond = _CONDITION.match(part)
            if cond is None:
                raise _Reply(
                    400, [{"message": f"unexpected token: {part}", "errorCode": "MALFORMED_QUERY"}]
                )
            conditions.append((cond[1], re.sub(r"\\(.)", r"\1", cond[2])))
        rows = [
            self._render(version, obj, r, names)
            for r in self.records.get(obj, {}).values()
            if all(str(r.get(f)) == v for f, v in conditions)
        ]
        if match["limit"]:
            rows = rows[: int(match["limit"])]
        self._counter += 1
        locator = f"01g5g00000{self._counter:05d}"
        self._cursors[locator] = rows
        return self._page(version, f"{locator}-0", total=len(rows))

    def _page(self, version: str, cursor: str, *, total: int | None = None) -> dict[str, Any]:
        locator, _, offset_text = cursor.rpartition("-")
        rows = self._cursors.get(locator)
        if rows is None or not offset_text.isdigit():
            raise _Reply(
                400, [{"message": "invalid query locator", "errorCode": "INVALID_QUERY_LOCATOR"}]
            )
        offset = int(offset_text)
        page = rows[offset : offset + self.page_size]
        result: dict[str, Any] = {"totalSize": len(rows), "done": True, "records": page}
        if offset + self.page_size < len(rows):
            result["done"] = False
            nxt = offset + self.page_size
            result["nextRecordsUrl"] = f"/services/data/{version}/query/{locator}-{nxt}"
        return result


def _kind(method: str, segs: list[str]) -> str:
    """The operation a request is, from its method and path."""
    if segs[:3] == ["services", "oauth2", "token"] and method == "POST":
        return "token"
    if len(segs) < 4 or segs[:2] != ["services", "data"] or not re.match(r"^v\d+\.\d$", segs[2]):
        return "unknown"
    rest = segs[3:]
    table = {
        ("query", 1, "GET"): "query",
        ("query", 2, "GET"): "query_more",
        ("sobjects", 2, "POST"): "create",
        ("sobjects", 3, "POST"): "create",  # the trailing slash: /sobjects/Lead/
        ("sobjects", 3, "GET"): "get",
        ("sobjects", 3, "PATCH"): "update",
        ("sobjects", 3, "DELETE"): "delete",
        ("sobjects", 4, "PATCH"): "upsert",
    }
    if rest[0] == "sobjects" and len(rest) == 3 and method == "POST" and rest[2]:
        return "unknown"
    return table.get((rest[0], len(rest), method), "unknown")


def _json(body: bytes) -> dict[str, Any]:
    try:
        value = json.loads(body or b"null")
    except ValueError:
        value = None
    if not isinstance(value, dict):
        raise _Reply(
            400,
            [{"message": "The request body is malformed JSON", "errorCode": "JSON_PARSER_ERROR"}],
        )
    return value


def _oauth(error: str, description: str) -> _Reply:
    return _Reply(400, {"error": error, "error_description": description})


def _duplicates(obj: str, ids: list[str]) -> list[dict[str, Any]]:
    """Salesforce's DUPLICATES_DETECTED error (a blocking duplicate rule)."""
    records = [
        {
            "additionalInformation": [],
            "fieldDiffs": [],
            "matchConfidence": 100.0,
            "record": {"attributes": {"type": obj, "url": f"/sobjects/{obj}/{rid}"}, "Id": rid},
        }
        for rid in ids
    ]
    result = {
        "allowSave": False,
        "duplicateRule": f"Standard_{obj}_Duplicate_Rule",
        "duplicateRuleEntityType": obj,
        "errorMessage": "Use one of these records?",
        "matchResults": [
            {
                "entityType": obj,
                "errors": [],
                "matchEngine": "ExactMatchEngine",
                "matchRecords": records,
                "rule": f"Standard_{obj}_Match_Rule_v1_0",
                "size": len(records),
                "success": True,
            }
        ],
    }
    return [
        {
            "duplicateResult": result,
            "errorCode": "DUPLICATES_DETECTED",
            "message": "Use one of these records?",
            "fields": [],
        }
    ]
