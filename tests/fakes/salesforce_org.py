"""The data side of the local Salesforce (``tests/fakes/salesforce.py``): an org's records
in memory and what the REST API does with them: sObject create/get/update/delete, upsert by
external id, a tiny SOQL with paginated results, and Salesforce's error bodies."""

from __future__ import annotations

import json
import re
from typing import Any

SESSION_EXPIRED = [{"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}]
SERVER_UNAVAILABLE = [{"message": "Server is unavailable", "errorCode": "SERVER_UNAVAILABLE"}]
LIMIT_EXCEEDED = [
    {"message": "TotalRequests Limit exceeded.", "errorCode": "REQUEST_LIMIT_EXCEEDED"}
]
NOT_FOUND = [{"errorCode": "NOT_FOUND", "message": "The requested resource does not exist"}]
PREFIXES = {
    "Lead": "00Q",
    "Account": "001",
    "Contact": "003",
    "Opportunity": "006",
    "Case": "500",
    "Task": "00T",
}
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
    "Task": {"Subject", "Description", "Status", "Priority", "WhoId", "WhatId", "OwnerId"},
}
SYSTEM_FIELDS = {"Id", "CreatedDate", "LastModifiedDate"}
REQUIRED = {"Lead": ["LastName", "Company"], "Account": ["Name"], "Contact": ["LastName"]}
SOQL = re.compile(
    r"^\s*SELECT\s+(?P<fields>.+?)\s+FROM\s+(?P<object>\w+)"
    r"(?:\s+WHERE\s+(?P<where>.+?))?(?:\s+LIMIT\s+(?P<limit>\d+))?\s*$",
    re.IGNORECASE | re.DOTALL,
)
CONDITION = re.compile(r"^\s*(\w+)\s*=\s*'((?:[^'\\]|\\.)*)'\s*$", re.DOTALL)
_SUFFIX = "ABCDEFGHIJKLMNOPQRSTUVWXYZ012345"
_BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def id18(id15: str) -> str:
    """Salesforce's case-safe 18-character form of a 15-character id."""
    suffix = ""
    for start in (0, 5, 10):
        bits = sum(1 << i for i, c in enumerate(id15[start : start + 5]) if c.isupper())
        suffix += _SUFFIX[bits]
    return id15 + suffix


class Reply(Exception):
    """An answer other than 200 (raised to stop, or returned for a 2xx)."""

    def __init__(self, status: int, body: Any = None, headers: dict[str, str] | None = None):
        super().__init__(status)
        self.status, self.body, self.headers = status, body, headers or {}


class Org:
    """An org's records and the REST semantics over them (not thread-safe: the server
    calls it under its lock)."""

    def __init__(self, page_size: int) -> None:
        self.page_size = page_size
        self.records: dict[str, dict[str, dict[str, Any]]] = {}
        #: Fields a duplicate rule keeps unique, per object.
        self.unique: dict[str, set[str]] = {"Lead": {"Email"}, "Contact": {"Email"}}
        self.counter = 0
        self.cursors: dict[str, list[dict[str, Any]]] = {}

    def rest(self, kind: str, segs: list[str], query: dict[str, list[str]], body: bytes) -> Any:
        version = segs[2] if len(segs) > 2 else ""
        if kind == "query":
            soql = query.get("q", [""])[0]
            return self.query(version, soql)
        if kind == "query_more":
            return self.page(version, segs[4])
        if kind == "unknown":
            raise Reply(404, NOT_FOUND)
        obj = segs[4]
        if obj not in FIELDS and not obj.endswith("__c"):
            raise Reply(404, NOT_FOUND)
        if kind == "create":
            record_id = self.create(obj, json_body(body))
            return Reply(201, {"id": record_id, "success": True, "errors": []})
        if kind == "upsert":
            return self.upsert(version, obj, segs[5], segs[6], json_body(body))
        record = self.find(obj, segs[5])
        if kind == "get":
            names = query.get("fields", [""])[0]
            return self.render(version, obj, record, names.split(",") if names else None)
        if kind == "update":
            self.check(obj, json_body(body), record["Id"])
            record.update(json_body(body))
            return Reply(204)
        del self.records[obj][record["Id"]]
        return Reply(204)

    def find(self, obj: str, record_id: str) -> dict[str, Any]:
        for rid, record in self.records.get(obj, {}).items():
            if record_id in (rid, rid[:15]):
                return record
        raise Reply(404, NOT_FOUND)

    def check(self, obj: str, fields: dict[str, Any], own_id: str | None = None) -> None:
        allowed = FIELDS.get(obj, set())
        for name in fields:
            if name not in allowed and not name.endswith("__c"):
                raise Reply(
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
                raise Reply(400, _duplicates(obj, matches))

    def create(self, obj: str, fields: dict[str, Any]) -> str:
        missing = [f for f in REQUIRED.get(obj, []) if fields.get(f) in (None, "")]
        if missing:
            raise Reply(
                400,
                [
                    {
                        "message": f"Required fields are missing: [{', '.join(missing)}]",
                        "errorCode": "REQUIRED_FIELD_MISSING",
                        "fields": missing,
                    }
                ],
            )
        self.check(obj, fields)
        return self.insert(obj, fields)

    def insert(self, obj: str, fields: dict[str, Any]) -> str:
        self.counter += 1
        n, digits = self.counter, ""
        for _ in range(5):
            n, r = divmod(n, 62)
            digits = _BASE62[r] + digits
        record_id = id18(PREFIXES.get(obj, "a00") + "5g00000" + digits)
        self.records.setdefault(obj, {})[record_id] = {**fields, "Id": record_id}
        return record_id

    def upsert(self, version: str, obj: str, field_name: str, value: str, fields: Any) -> Any:
        if not field_name.endswith("__c"):
            raise Reply(
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
            raise Reply(
                300, [f"/services/data/{version}/sobjects/{obj}/{r['Id']}" for r in matches]
            )
        if matches:
            self.check(obj, fields, matches[0]["Id"])
            matches[0].update(fields)
            return {"id": matches[0]["Id"], "success": True, "errors": [], "created": False}
        record_id = self.create(obj, {**fields, field_name: value})
        return Reply(201, {"id": record_id, "success": True, "errors": [], "created": True})

    def render(
        self, version: str, obj: str, record: dict[str, Any], names: list[str] | None
    ) -> dict[str, Any]:
        url = f"/services/data/{version}/sobjects/{obj}/{record['Id']}"
        out: dict[str, Any] = {"attributes": {"type": obj, "url": url}}
        for name in names if names is not None else ["Id", *sorted(FIELDS.get(obj, ()))]:
            if name not in FIELDS.get(obj, set()) | SYSTEM_FIELDS and not name.endswith("__c"):
                raise Reply(
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

    def query(self, version: str, soql: str) -> dict[str, Any]:
        match = SOQL.match(soql)
        if match is None:
            raise Reply(
                400, [{"message": "unexpected token: query", "errorCode": "MALFORMED_QUERY"}]
            )
        obj = match["object"]
        if obj not in FIELDS and not obj.endswith("__c"):
            message = f"\n{soql}\nERROR at Row:1\nsObject type '{obj}' is not supported."
            raise Reply(400, [{"message": message, "errorCode": "INVALID_TYPE"}])
        names = [n.strip() for n in match["fields"].split(",")]
        conditions: list[tuple[str, str]] = []
        for part in re.split(r"\s+AND\s+", match["where"] or "", flags=re.IGNORECASE):
            if not part.strip():
                continue
            cond = CONDITION.match(part)
            if cond is None:
                raise Reply(
                    400, [{"message": f"unexpected token: {part}", "errorCode": "MALFORMED_QUERY"}]
                )
            conditions.append((cond[1], re.sub(r"\\(.)", r"\1", cond[2])))
        rows = [
            self.render(version, obj, r, names)
            for r in self.records.get(obj, {}).values()
            if all(str(r.get(f)) == v for f, v in conditions)
        ]
        if match["limit"]:
            rows = rows[: int(match["limit"])]
        self.counter += 1
        locator = f"01g5g00000{self.counter:05d}"
        self.cursors[locator] = rows
        return self.page(version, f"{locator}-0", total=len(rows))

    def page(self, version: str, cursor: str, *, total: int | None = None) -> dict[str, Any]:
        locator, _, offset_text = cursor.rpartition("-")
        rows = self.cursors.get(locator)
        if rows is None or not offset_text.isdigit():
            raise Reply(
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


def json_body(body: bytes) -> dict[str, Any]:
    try:
        value = json.loads(body or b"null")
    except ValueError:
        value = None
    if not isinstance(value, dict):
        raise Reply(
            400,
            [{"message": "The request body is malformed JSON", "errorCode": "JSON_PARSER_ERROR"}],
        )
    return value


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
