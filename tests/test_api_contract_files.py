"""The HTTP API's published description and the contact-center integrations built on it,
checked against the contract of issue 13 and against each other.

- smtp_offload/api/openapi.json is a valid OpenAPI 3.1 document that carries the contract's
  names, statuses and headers, and whose schemas accept the contract's bodies and refuse
  the ones it rules out.
- Every Genesys Cloud data action (deploy/genesys/*.json) calls an operation the document
  declares, sends only declared headers and body fields, and reads only fields the
  operation's success responses have.
- The same for the NICE CXone snippets (deploy/cxone/*.snippet), through the sidecar
  deploy/cxone/calls.json, whose every name must also appear in its snippet.

The contract's names are hard-coded here on purpose: they are public (flows read them), so
a rename must fail this test rather than follow silently.
"""

from __future__ import annotations

import copy
import json
import re
from functools import lru_cache
from typing import Any

import pytest

from tests.support.env import ROOT, missing

OPENAPI = ROOT / "smtp_offload" / "api" / "openapi.json"
GENESYS = ROOT / "deploy" / "genesys"
CXONE = ROOT / "deploy" / "cxone"
BASE_URL = "https://links.example.com"  # the placeholder both READMEs tell operators to replace

# --- the contract (/tmp/i13/contract.md), by name ----------------------------------------------

UPLOAD = ("/api/v1/upload/attachment", "post")
JOBS = ("/api/v1/jobs/{jobId}", "get")
INSPECT = ("/api/v1/inspect", "post")
REFRESH = ("/api/v1/links/refresh", "post")
REVOKE = ("/api/v1/links/revoke", "post")
SHOW = ("/api/v1/links/show", "get")
SPEC = ("/api/v1/openapi.json", "get")
PORTAL = ("/api/v1/portal/sessions", "post")
PORTAL_SHOW = ("/api/v1/portal/sessions/{sessionId}", "get")
PORTAL_REVOKE = ("/api/v1/portal/sessions/{sessionId}", "delete")
QUARANTINE_LIST = ("/api/v1/quarantine", "get")
QUARANTINE_SHOW = ("/api/v1/quarantine/{id}", "get")
QUARANTINE_RELEASE = ("/api/v1/quarantine/{id}/release", "post")
QUARANTINE_DELETE = ("/api/v1/quarantine/{id}", "delete")

UPLOAD_FIELDS = {"downloadUrl", "fileName", "fileSize", "s3Key", "verdict", "detectedType", "sha256", "expiresAt"}
JOB_FIELDS = {"jobId", "status"}
JOB_STATUSES = {"PENDING", "COMPLETE", "REJECTED", "FAILED"}
INSPECT_FIELDS = {"verdict", "reason", "detectedType", "size", "sha256", "fileName"}
VERDICTS = {"accepted", "empty", "spoofed", "blocked"}
PORTAL_FIELDS = {"uploadUrl", "expiresAt", "sessionId"}
PORTAL_REQUEST_FIELDS = {"caseId", "to", "customerId", "subject", "inReplyTo", "ttlSeconds"}
REJECTION_FIELDS = {"error", "message", "verdict", "reason", "detectedType", "fileName", "fileSize", "sha256"}

STATUSES = {  # every status the contract names, per operation
    UPLOAD: {"200", "202", "400", "401", "403", "409", "413", "422", "429", "503"},
    JOBS: {"200", "401", "403", "404", "429"},
    INSPECT: {"200", "400", "401", "403", "413", "422", "429", "502", "504"},
    REFRESH: {"200", "400", "401"},
    REVOKE: {"200", "400", "401"},
    SHOW: {"200", "400", "401"},
    SPEC: {"200"},
    PORTAL: {"201", "400", "401", "403", "422", "429", "503"},
    PORTAL_SHOW: {"200", "401", "403", "404", "503"},
    PORTAL_REVOKE: {"200", "401", "403", "404", "503"},
    QUARANTINE_LIST: {"200", "401", "403", "429", "503"},
    QUARANTINE_SHOW: {"200", "401", "403", "404", "429", "503"},
    QUARANTINE_RELEASE: {"200", "400", "401", "403", "404", "409", "410", "429", "502", "503"},
    QUARANTINE_DELETE: {"200", "401", "403", "404", "429", "503"},
}
HEADER_PARAMS = {  # header -> (required, maxLength or None)
    UPLOAD: {"X-Filename": (True, 1024), "X-CustomerId": (False, None), "X-Declared-Type": (False, None),
             "Content-Transfer-Encoding": (False, None), "Idempotency-Key": (False, 255), "Prefer": (False, None)},
    INSPECT: {"X-Filename": (False, 1024), "X-Declared-Type": (False, None),
              "Content-Transfer-Encoding": (False, None)},
}
ALWAYS_ALLOWED_HEADERS = {"authorization", "content-type"}  # sent by every client, declared elsewhere

JOB_ID = "0123456789abcdef0123456789abcdef"
SHA = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
UPLOAD_OK = {"downloadUrl": "https://links.example.com/f/v2.eyJ.abc", "fileName": "résumé.pdf", "fileSize": 1234,
             "s3Key": "uploads/cust-1/2026/12/06/1a2b-résumé.pdf", "verdict": "accepted",
             "detectedType": "application/pdf", "sha256": SHA, "expiresAt": "2026-12-07T10:00:00Z"}
REJECTION = {"verdict": "spoofed", "reason": "declared PDF, but the bytes are a Windows program",
             "detectedType": "application/x-dosexec", "fileName": "invoice.pdf", "fileSize": 4096, "sha256": SHA}
INSPECT_OK = {"verdict": "accepted", "reason": "PDF document, as declared", "detectedType": "application/pdf",
              "size": 1234, "sha256": SHA, "fileName": "invoice.pdf"}
PORTAL_OK = {"uploadUrl": "https://files.example.com/u/abc", "expiresAt": "2026-12-07T10:00:00Z",
             "sessionId": "0123456789abcdef0123"}


def err(code: str, **extra: Any) -> dict[str, Any]:
    return {"error": code, "message": f"human text for {code}", **extra}


def without(body: dict[str, Any], *names: str) -> dict[str, Any]:
    return {k: v for k, v in body.items() if k not in names}


# Bodies the contract allows (True) or rules out (False), per operation and status.
RESPONSE_CASES = [
    (UPLOAD, "200", UPLOAD_OK, True),
    (UPLOAD, "200", {**UPLOAD_OK, "jobId": JOB_ID}, False),  # exactly the upload fields
    (UPLOAD, "200", without(UPLOAD_OK, "sha256"), False),
    (UPLOAD, "200", {**UPLOAD_OK, "verdict": "spoofed"}, False),  # only accepted files are stored
    (UPLOAD, "200", {**UPLOAD_OK, "expiresAt": "2026-12-07T10:00:00+00:00"}, False),  # UTC "Z" form
    (UPLOAD, "200", {**UPLOAD_OK, "fileSize": "1234"}, False),
    (UPLOAD, "202", {"jobId": JOB_ID, "status": "PENDING"}, True),
    (UPLOAD, "202", {"jobId": JOB_ID, "status": "COMPLETE"}, False),
    (UPLOAD, "202", {"jobId": JOB_ID.upper(), "status": "PENDING"}, False),
    (UPLOAD, "202", {"jobId": JOB_ID}, False),
    (UPLOAD, "400", {"error": "empty", "message": "Empty file"}, True),
    (UPLOAD, "400", err("bad_request"), True),
    (UPLOAD, "400", {"error": "empty"}, False),  # every error has a message
    (UPLOAD, "401", err("unauthorized"), True),
    (UPLOAD, "403", err("forbidden"), True),
    (UPLOAD, "409", err("idempotency_conflict"), True),
    (UPLOAD, "413", err("too_large", limit=104857600), True),  # errors may add fields
    (UPLOAD, "422", {**err("spoofed"), **REJECTION}, True),
    (UPLOAD, "422", {**err("blocked"), **REJECTION, "verdict": "blocked"}, True),
    (UPLOAD, "422", {**err("spoofed"), **without(REJECTION, "verdict")}, False),
    (UPLOAD, "422", {**err("spoofed"), **without(REJECTION, "sha256")}, False),
    (UPLOAD, "422", {**err("empty"), **REJECTION}, False),
    (UPLOAD, "429", err("rate_limited"), True),
    (UPLOAD, "503", err("storage_unavailable"), True),
    (UPLOAD, "503", {"message": "storage unavailable"}, False),
    (JOBS, "200", {"jobId": JOB_ID, "status": "PENDING"}, True),
    (JOBS, "200", {"jobId": JOB_ID, "status": "COMPLETE", **UPLOAD_OK}, True),
    (JOBS, "200", {"jobId": JOB_ID, "status": "COMPLETE", **without(UPLOAD_OK, "downloadUrl")}, False),
    (JOBS, "200", {"jobId": JOB_ID, "status": "REJECTED", **err("spoofed"), **REJECTION}, True),
    (JOBS, "200", {"jobId": JOB_ID, "status": "REJECTED", **err("spoofed"), **without(REJECTION, "verdict")}, False),
    (JOBS, "200", {"jobId": JOB_ID, "status": "REJECTED", **REJECTION}, False),
    (JOBS, "200", {"jobId": JOB_ID, "status": "REJECTED", "error": "empty", "message": "Empty file"}, True),
    (JOBS, "200", {"jobId": JOB_ID, "status": "FAILED", **err("storage_unavailable")}, True),
    (JOBS, "200", {"jobId": JOB_ID, "status": "FAILED", "error": "storage_unavailable"}, False),
    (JOBS, "200", {"jobId": JOB_ID, "status": "DONE"}, False),
    (JOBS, "200", {"status": "PENDING"}, False),
    (JOBS, "404", err("not_found"), True),
    (INSPECT, "200", INSPECT_OK, True),
    *[(INSPECT, "200", {**INSPECT_OK, "verdict": v}, True) for v in sorted(VERDICTS)],
    (INSPECT, "200", {**INSPECT_OK, "verdict": "ok"}, False),
    (INSPECT, "200", without(INSPECT_OK, "size"), False),
    (INSPECT, "200", {**INSPECT_OK, "fileSize": 1234}, False),
    (INSPECT, "400", err("url_not_allowed"), True),
    (INSPECT, "413", err("too_large"), True),
    (INSPECT, "422", err("url_expired"), True),
    (INSPECT, "422", err("url_not_found"), True),
    (INSPECT, "422", err("spoofed"), False),
    (INSPECT, "502", err("fetch_failed"), True),
    (INSPECT, "504", err("fetch_timeout"), True),
    (REFRESH, "200", {"url": "https://links.example.com/f/t", "token_id": "0123456789abcdef", "expires": 1796637600,
                      "expires_at": "2026-12-07T10:00:00Z", "key": "k"}, True),
    (REFRESH, "200", {"url": "https://s3.example.com/b/k?X-Amz-Signature=x", "token_id": None,
                      "expires": 1796637600, "expires_at": "2026-12-07T10:00:00Z", "key": "k"}, True),  # presigned
    (REFRESH, "200", {"url": "https://links.example.com/f/t", "key": "k"}, False),
    (REFRESH, "400", {"error": "token is not valid"}, True),  # the link API's errors (issue 11)
    (REFRESH, "400", err("bad_request"), True),
    (REVOKE, "200", {"revoked": "0123456789abcdef"}, True),
    (SHOW, "200", {"token_id": "0123456789abcdef", "key": "k", "expires": 1, "expires_at": "1970-01-01T00:00:01Z",
                   "expired": True, "revoked": False, "message_ref": None, "object": None}, True),
    (PORTAL, "201", PORTAL_OK, True),
    (PORTAL, "201", without(PORTAL_OK, "sessionId"), False),
    (PORTAL, "201", {**PORTAL_OK, "sessionId": "0123456789ABCDEF0123"}, False),  # 20 lower-case hex
    (PORTAL, "201", {**PORTAL_OK, "sessionId": JOB_ID}, False),
    (PORTAL, "201", {**PORTAL_OK, "expiresAt": "2026-12-07T10:00:00+00:00"}, False),
    (PORTAL, "400", err("bad_request"), True),
    (PORTAL, "422", err("domain_not_accepted"), True),
    (PORTAL, "429", err("too_many_sessions"), True),
    (PORTAL, "429", err("rate_limited"), True),
    (PORTAL, "503", {"message": "storage unavailable"}, False),
]

REQUEST_CASES = [
    (INSPECT, "application/json", {"url": "https://x.example/a.pdf", "fileName": "a.pdf"}, True),
    (INSPECT, "application/json", {"url": "https://x.example/a.pdf", "fileName": "a.pdf",
                                   "declaredType": "application/pdf"}, True),
    (INSPECT, "application/json", {"url": "https://x.example/a.pdf"}, False),
    (INSPECT, "application/json", {"url": "https://x.example/a.pdf", "fileName": "a.pdf", "name": "a"}, False),
    (REFRESH, "application/json", {"token": "t"}, True),
    (REFRESH, "application/json", {"key": "k", "ttl_seconds": 3600}, True),
    (REFRESH, "application/json", {"token": "t", "key": "k"}, False),
    (REFRESH, "application/json", {}, False),
    (REFRESH, "application/json", {"token": "t", "ttl_seconds": 0}, False),
    (REVOKE, "application/json", {"token_id": "0123456789abcdef"}, True),
    (REVOKE, "application/json", {"token_id": "xyz"}, False),
    (PORTAL, "application/json", {"caseId": "c-1", "to": "support@contact.example.com"}, True),
    (PORTAL, "application/json", {"caseId": "c-1", "to": "support@contact.example.com", "customerId": "cust-1",
                                  "subject": "Your case", "inReplyTo": "<a@b>", "ttlSeconds": 604800}, True),
    (PORTAL, "application/json", {"caseId": "c-1"}, False),
    (PORTAL, "application/json", {"to": "support@contact.example.com"}, False),
    (PORTAL, "application/json", {"caseId": "c-1", "to": "support@contact.example.com", "ttlSeconds": "604800"}, False),
    (PORTAL, "application/json", {"caseId": "c-1", "to": "support@contact.example.com", "case": "c-1"}, False),
    (PORTAL, "application/json", {"caseId": "c-1", "to": "support@contact.example.com", "ttlSeconds": 0}, False),
]


# --- reading the OpenAPI document ------------------------------------------------------------

@lru_cache(maxsize=None)
def _doc_text() -> str:
    return OPENAPI.read_text(encoding="utf-8")


def doc() -> dict[str, Any]:
    return json.loads(_doc_text())  # a fresh copy: a test may not change another's view


def deref(node: Any, root: dict[str, Any]) -> Any:
    while isinstance(node, dict) and "$ref" in node:
        pointer = node["$ref"]
        assert pointer.startswith("#/"), f"only local references: {pointer}"
        node = root
        for part in pointer[2:].split("/"):
            node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


def _parts(schema: dict[str, Any], root: dict[str, Any]) -> list[dict[str, Any]]:
    """The schema and every allOf/oneOf/anyOf part below it, dereferenced."""
    schema = deref(schema, root)
    found = [schema]
    for key in ("allOf", "oneOf", "anyOf"):
        for part in schema.get(key, []):
            found += _parts(part, root)
    return found


def properties(schema: dict[str, Any], root: dict[str, Any]) -> set[str]:
    return {name for part in _parts(schema, root) for name in part.get("properties", {})}


def required_always(schema: dict[str, Any], root: dict[str, Any]) -> set[str]:
    """Names required whichever oneOf branch applies: allOf parts add up, oneOf branches intersect."""
    schema = deref(schema, root)
    names = set(schema.get("required", []))
    for part in schema.get("allOf", []):
        names |= required_always(part, root)
    branches = [required_always(b, root) for b in schema.get("oneOf", schema.get("anyOf", []))]
    if branches:
        names |= set.intersection(*branches)
    return names


def json_types(schema: dict[str, Any], root: dict[str, Any]) -> set[str]:
    """The JSON types a property's schema admits (from type, const and enum, through refs and parts)."""
    kinds: set[str] = set()
    for part in _parts(schema, root):
        kind = part.get("type")
        kinds |= {kind} if isinstance(kind, str) else set(kind or ())
        values = ([part["const"]] if "const" in part else []) + list(part.get("enum", []))
        kinds |= {_json_type(v) for v in values}
    return kinds


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    return {str: "string", float: "number", type(None): "null", dict: "object", list: "array"}[type(value)]


def property_types(schema: dict[str, Any], name: str, root: dict[str, Any]) -> set[str]:
    kinds: set[str] = set()
    for part in _parts(schema, root):
        if name in part.get("properties", {}):
            kinds |= json_types(part["properties"][name], root)
    return kinds


def operation(root: dict[str, Any], path: str, method: str) -> dict[str, Any]:
    assert path in root["paths"], f"{path} is not in openapi.json"
    item = root["paths"][path]
    assert method.lower() in item, f"{method.upper()} {path} is not in openapi.json"
    return item[method.lower()]


def header_params(root: dict[str, Any], path: str, method: str) -> dict[str, dict[str, Any]]:
    """Lower-cased header name -> parameter, path-level and operation-level."""
    params = [deref(p, root) for p in root["paths"][path].get("parameters", [])]
    params += [deref(p, root) for p in operation(root, path, method).get("parameters", [])]
    return {p["name"].lower(): p for p in params if p["in"] == "header"}


def response(root: dict[str, Any], path: str, method: str, status: str) -> dict[str, Any]:
    responses = operation(root, path, method)["responses"]
    assert status in responses, f"{method.upper()} {path} has no {status} response"
    return deref(responses[status], root)


def response_schema(root: dict[str, Any], path: str, method: str, status: str) -> dict[str, Any]:
    content = response(root, path, method, status).get("content", {})
    assert "application/json" in content, f"{method.upper()} {path} {status}: no application/json body"
    return content["application/json"]["schema"]


def success_properties(root: dict[str, Any], path: str, method: str) -> set[str]:
    responses = operation(root, path, method)["responses"]
    return {name for status in responses if status.startswith("2")
            for name in properties(response_schema(root, path, method, status), root)}


def success_property_types(root: dict[str, Any], path: str, method: str, name: str) -> set[str]:
    responses = operation(root, path, method)["responses"]
    return {kind for status in responses if status.startswith("2")
            for kind in property_types(response_schema(root, path, method, status), name, root)}


def request_content(root: dict[str, Any], path: str, method: str) -> dict[str, Any]:
    return operation(root, path, method).get("requestBody", {}).get("content", {})


def _jsonschema():
    try:
        import jsonschema
    except ImportError:
        missing("needs jsonschema (pip install 'jsonschema>=4.18')")
    return jsonschema


def schema_errors(schema: dict[str, Any], instance: Any, root: dict[str, Any]) -> list[str]:
    """jsonschema (draft 2020-12, OpenAPI 3.1's dialect) errors of `instance`, with the document's
    components beside the schema so that its "#/components/..." references resolve."""
    js = _jsonschema()
    wrapped = {**copy.deepcopy(schema), "components": root["components"]}
    validator = js.Draft202012Validator(wrapped)
    return [f"{'/'.join(map(str, e.absolute_path)) or '<body>'}: {e.message}" for e in validator.iter_errors(instance)]


# --- (a) the OpenAPI document -----------------------------------------------------------------

def test_openapi_is_a_valid_openapi_3_1_document():
    try:
        from openapi_spec_validator import OpenAPIV31SpecValidator, validate
    except ImportError:
        missing("needs openapi-spec-validator (pip install 'openapi-spec-validator>=0.7')")
    root = doc()
    assert root["openapi"] == "3.1.0"
    validate(root, cls=OpenAPIV31SpecValidator)  # raises with the first error


def test_openapi_is_pretty_printed_json():
    assert _doc_text() == json.dumps(doc(), indent=2, ensure_ascii=False) + "\n"


def test_openapi_servers_security_and_paths():
    root = doc()
    assert root["servers"] == [{"url": "/"}]
    assert root["components"]["securitySchemes"]["bearerAuth"] == {
        **root["components"]["securitySchemes"]["bearerAuth"], "type": "http", "scheme": "bearer"}
    assert root["security"] == [{"bearerAuth": []}]
    assert set(STATUSES) == {(p, m) for p, item in root["paths"].items() for m in item if m != "parameters"}
    for (path, method) in STATUSES:
        security = operation(root, path, method).get("security")
        if (path, method) == SPEC:
            assert security == [], "the OpenAPI document is served without auth"
        else:
            assert security in (None, [{"bearerAuth": []}]), f"{method.upper()} {path} must need the bearer key"


@pytest.mark.parametrize("op", list(STATUSES), ids=lambda op: f"{op[1].upper()} {op[0]}")
def test_openapi_every_contract_status_has_a_json_schema_and_no_store(op):
    root = doc()
    path, method = op
    declared = set(operation(root, path, method)["responses"])
    assert STATUSES[op] <= declared, f"missing statuses: {sorted(STATUSES[op] - declared)}"
    for status in declared:
        assert response_schema(root, path, method, status), status
        headers = response(root, path, method, status).get("headers", {})
        assert "Cache-Control" in headers, f"{status}: every response is Cache-Control: no-store"
        assert deref(headers["Cache-Control"], root)["schema"].get("const") == "no-store"


@pytest.mark.parametrize("op,status,header", [
    (UPLOAD, "202", "Location"),
    (UPLOAD, "429", "Retry-After"), (UPLOAD, "503", "Retry-After"),
    (JOBS, "429", "Retry-After"), (INSPECT, "429", "Retry-After"),
    (PORTAL, "429", "Retry-After"), (PORTAL, "503", "Retry-After"),
    (UPLOAD, "401", "WWW-Authenticate"), (JOBS, "401", "WWW-Authenticate"), (INSPECT, "401", "WWW-Authenticate"),
])
def test_openapi_response_headers(op, status, header):
    root = doc()
    headers = response(root, *op, status).get("headers", {})
    assert header in headers, f"{op[1].upper()} {op[0]} {status} lacks {header}"
    declared = deref(headers[header], root)
    assert declared.get("required") is True
    if header == "Retry-After":
        assert declared["schema"]["type"] == "integer"
    if header == "Location":
        assert not schema_errors(declared["schema"], f"/api/v1/jobs/{JOB_ID}", root)
        assert schema_errors(declared["schema"], "/api/v1/jobs/nope", root)


@pytest.mark.parametrize("op", list(HEADER_PARAMS), ids=lambda op: f"{op[1].upper()} {op[0]}")
def test_openapi_header_parameters(op):
    root = doc()
    declared = header_params(root, *op)
    for name, (required, max_length) in HEADER_PARAMS[op].items():
        assert name.lower() in declared, f"{name} is not a parameter of {op[1].upper()} {op[0]}"
        param = declared[name.lower()]
        assert param["name"] == name, "the contract's spelling"
        assert bool(param.get("required")) is required, name
        schema = deref(param["schema"], root)
        assert schema.get("type") == "string", name
        if max_length is not None:
            assert schema.get("maxLength") == max_length, name
    idem = deref(declared["idempotency-key"]["schema"], root) if "idempotency-key" in declared else None
    if idem is not None:
        assert not schema_errors(idem, "conv-1234-att-1", root)
        assert schema_errors(idem, "has space", root) and schema_errors(idem, "x" * 256, root)


def test_openapi_job_id_is_32_lower_case_hex():
    root = doc()
    params = [deref(p, root) for p in root["paths"][JOBS[0]].get("parameters", [])]
    params += [deref(p, root) for p in operation(root, *JOBS).get("parameters", [])]
    (job_id,) = [p for p in params if p["in"] == "path"]
    assert job_id["name"] == "jobId" and job_id["required"] is True
    assert not schema_errors(job_id["schema"], JOB_ID, root)
    for bad in (JOB_ID.upper(), JOB_ID[:-1], JOB_ID + "0", "g" * 32, 12345):
        assert schema_errors(job_id["schema"], bad, root), bad


def test_openapi_request_bodies():
    root = doc()
    assert {"application/octet-stream", "*/*"} <= set(request_content(root, *UPLOAD))
    assert {"application/json", "application/octet-stream", "*/*"} <= set(request_content(root, *INSPECT))
    inspect_json = request_content(root, *INSPECT)["application/json"]["schema"]
    assert properties(inspect_json, root) == {"url", "fileName", "declaredType"}
    assert required_always(inspect_json, root) == {"url", "fileName"}
    portal_json = request_content(root, *PORTAL)["application/json"]["schema"]
    assert properties(portal_json, root) == PORTAL_REQUEST_FIELDS
    assert required_always(portal_json, root) == {"caseId", "to"}
    for op in (REFRESH, REVOKE):
        assert "application/json" in request_content(root, *op)
    assert {"token", "key", "ttl_seconds"} == properties(request_content(root, *REFRESH)["application/json"]["schema"], root)
    assert {"token", "token_id"} == properties(request_content(root, *REVOKE)["application/json"]["schema"], root)
    show_params = [deref(p, root) for p in operation(root, *SHOW).get("parameters", [])]
    assert [(p["name"], p["in"], p["required"]) for p in show_params] == [("token", "query", True)]


@pytest.mark.parametrize("op,status,body,ok", RESPONSE_CASES,
                         ids=[f"{op[1]}-{op[0].rsplit('/', 1)[-1]}-{st}-{i}" for i, (op, st, _, _) in enumerate(RESPONSE_CASES)])
def test_openapi_response_schemas_follow_the_contract(op, status, body, ok):
    root = doc()
    errors = schema_errors(response_schema(root, *op, status), body, root)
    if ok:
        assert not errors, errors
    else:
        assert errors, f"{op[1].upper()} {op[0]} {status} should refuse {body}"


@pytest.mark.parametrize("op,content_type,body,ok", REQUEST_CASES)
def test_openapi_request_schemas(op, content_type, body, ok):
    root = doc()
    errors = schema_errors(request_content(root, *op)[content_type]["schema"], body, root)
    assert (not errors) if ok else errors, errors or body


# --- (d) the contract's names in the schemas ----------------------------------------------------

def test_contract_names_are_in_the_schemas():
    root = doc()
    schemas = root["components"]["schemas"]
    for name in ("UploadResult", "JobStatus", "InspectResult", "Error"):
        assert name in schemas, f"components/schemas/{name}"

    assert properties(schemas["UploadResult"], root) == UPLOAD_FIELDS
    assert required_always(schemas["UploadResult"], root) == UPLOAD_FIELDS

    assert properties(schemas["InspectResult"], root) == INSPECT_FIELDS
    assert required_always(schemas["InspectResult"], root) == INSPECT_FIELDS
    assert json_types(schemas["InspectResult"]["properties"]["verdict"], root) == {"string"}
    verdict = deref(schemas["InspectResult"]["properties"]["verdict"], root)
    assert set(verdict["enum"]) == VERDICTS

    assert required_always(schemas["Error"], root) == {"error", "message"}
    assert deref(schemas["Error"], root).get("additionalProperties", True) is not False

    job = schemas["JobStatus"]
    branches = [deref(b, root) for b in job["oneOf"]]
    statuses: set[str] = set()
    for branch in branches:
        assert JOB_FIELDS <= required_always(branch, root)
        consts = {p["properties"]["status"]["const"] for p in _parts(branch, root)
                  if "const" in p.get("properties", {}).get("status", {})}
        assert len(consts) == 1, consts
        statuses |= consts
        (status,) = consts
        if status == "COMPLETE":
            assert UPLOAD_FIELDS <= required_always(branch, root)
        if status == "REJECTED":
            # A spoofed or blocked file's rejection says all about it; an empty one is the 400 body.
            assert {"error", "message"} <= required_always(branch, root)
            then = [deref(part, root).get("then", {}) for part in deref(branch, root).get("allOf", [])]
            assert any(REJECTION_FIELDS - {"error", "message"} <= set(t.get("required", [])) for t in then)
        if status == "FAILED":
            assert {"error", "message"} <= required_always(branch, root)
    assert statuses == JOB_STATUSES
    assert set(job["discriminator"]["mapping"]) == JOB_STATUSES

    for field in UPLOAD_FIELDS | {"jobId", "status"}:
        assert field in success_properties(root, *UPLOAD), field
    assert success_property_types(root, *UPLOAD, "fileSize") == {"integer"}
    assert success_property_types(root, *INSPECT, "size") == {"integer"}
    assert success_properties(root, *PORTAL) == PORTAL_FIELDS
    assert required_always(response_schema(root, *PORTAL, "201"), root) == PORTAL_FIELDS


# --- (b) Genesys Cloud data actions ---------------------------------------------------------------

GENESYS_FILES = sorted(GENESYS.glob("*.json"))
_INPUT = r"\$!?\{input\.(\w+)\}"
_ESCAPED_INPUT = r"\$esc\.\w+\(\s*\"?" + _INPUT + r"\"?\s*\)"
_CREDENTIAL = r"\$!?\{credentials\.(\w+)\}"


def _velocity_inputs(text: str) -> set[str]:
    """Inputs a template reads; fails on any $-expression this test does not understand (so a
    reference it cannot follow is never waved through)."""
    names = set(re.findall(_INPUT, text))
    rest = re.sub(_ESCAPED_INPUT, "", text)
    rest = re.sub(_INPUT, "", rest)
    rest = re.sub(_CREDENTIAL, "", rest)
    assert "$" not in rest and "input." not in rest, f"unrecognised Velocity in {text!r}"
    return names - {"rawRequest"}


def _render(template: str, value: Any) -> str:
    """The template with each input reference replaced by value(name)."""
    text = re.sub(_ESCAPED_INPUT, lambda m: value(m[1]), template)
    return re.sub(_INPUT, lambda m: value(m[1]), text)


def _genesys_operation(action: dict[str, Any]) -> tuple[str, str]:
    request = action["config"]["request"]
    url = request["requestUrlTemplate"]
    assert url.startswith(BASE_URL + "/api/v1/"), f"{url}: base URL must be the {BASE_URL} placeholder"
    path = _render(url[len(BASE_URL):], lambda name: "{" + name + "}")
    return path, request["requestType"].lower()


def test_genesys_actions_cover_the_four_calls():
    assert len(GENESYS_FILES) == 4, GENESYS_FILES
    ops = {_genesys_operation(json.loads(f.read_text("utf-8"))) for f in GENESYS_FILES}
    assert ops == {UPLOAD, JOBS, INSPECT, PORTAL}


@pytest.fixture(params=GENESYS_FILES, ids=lambda p: p.name)
def genesys(request) -> dict[str, Any]:
    return json.loads(request.param.read_text(encoding="utf-8"))


def test_genesys_action_is_in_the_export_format(genesys):
    assert isinstance(genesys["name"], str) and genesys["name"]
    assert genesys["integrationType"] == "custom-rest-actions"  # Web Services Data Actions
    assert genesys["actionType"] == "custom"
    assert isinstance(genesys["secure"], bool)
    assert set(genesys["config"]) == {"request", "response"}
    assert set(genesys["config"]["request"]) == {"requestUrlTemplate", "requestType", "headers", "requestTemplate"}
    assert set(genesys["config"]["response"]) == {"translationMap", "translationMapDefaults", "successTemplate"}
    assert genesys["config"]["request"]["requestType"] in {"GET", "POST", "PUT", "PATCH", "DELETE"}
    for schema in (genesys["contract"]["input"]["inputSchema"], genesys["contract"]["output"]["successSchema"]):
        assert schema["type"] == "object" and isinstance(schema["properties"], dict)
        assert set(schema.get("required", [])) <= set(schema["properties"])


def test_genesys_request_matches_the_openapi_operation(genesys):
    root = doc()
    path, method = _genesys_operation(genesys)
    op = operation(root, path, method)
    request = genesys["config"]["request"]
    inputs = genesys["contract"]["input"]["inputSchema"]["properties"]

    used = _velocity_inputs(request["requestUrlTemplate"])
    declared = header_params(root, path, method)
    sent = {name.lower(): value for name, value in request["headers"].items()}
    assert len(sent) == len(request["headers"]), "a header twice"
    for name, value in request["headers"].items():
        assert name.lower() in declared or name.lower() in ALWAYS_ALLOWED_HEADERS, \
            f"{name} is not a parameter of {method.upper()} {path}"
        used |= _velocity_inputs(value)
        if name.lower() in declared and "$" not in value:  # a constant must be a valid value
            assert not schema_errors(declared[name.lower()]["schema"], value, root), (name, value)
    assert re.fullmatch(r"Bearer " + _CREDENTIAL, sent.get("authorization", "")), \
        "Authorization: Bearer ${credentials.<field>} (the integration's User Defined credential)"
    for name, param in declared.items():
        if param.get("required"):
            assert name in sent, f"{param['name']} is required by {method.upper()} {path}"

    template = request["requestTemplate"]
    content = request_content(root, path, method)
    if method == "get":
        assert template == "${input.rawRequest}", "GET sends no body (Genesys' default template)"
        assert "content-type" not in sent
    elif sent.get("content-type") == "application/json":
        assert "application/json" in content
        used |= _velocity_inputs(template)
        body = json.loads(_render(template, lambda name: f"<{name}>"))
        schema = content["application/json"]["schema"]
        assert set(body) <= properties(schema, root), f"not in the request schema: {set(body) - properties(schema, root)}"
        assert required_always(schema, root) <= set(body)
        for field, value in body.items():
            assert value == f"<{field}>", f"body field {field} must come from input.{field}"
        assert not schema_errors(schema, body, root)
    else:
        assert sent.get("content-type") in content, f"Content-Type {sent.get('content-type')} not accepted"
        (one,) = _velocity_inputs(template) or {None}
        assert template == "${input.%s}" % one, "the body is one input: the file's base64 text"
        assert sent.get("content-transfer-encoding", "").lower() == "base64"
        used.add(one)

    assert used <= set(inputs), f"reads inputs the contract lacks: {used - set(inputs)}"
    assert set(inputs) <= used, f"inputs nothing reads: {set(inputs) - used}"
    for param in [deref(p, root) for p in root["paths"][path].get("parameters", []) + op.get("parameters", [])]:
        if param["in"] == "path":
            assert param["name"] in inputs, f"path parameter {param['name']} must be an input of the same name"


def test_genesys_response_reads_only_declared_fields(genesys):
    root = doc()
    path, method = _genesys_operation(genesys)
    response_cfg = genesys["config"]["response"]
    outputs = genesys["contract"]["output"]["successSchema"]["properties"]
    available = success_properties(root, path, method)

    tmap = response_cfg["translationMap"]
    for name, jsonpath in tmap.items():
        match = re.fullmatch(r"\$\.(\w+)", jsonpath)
        assert match, f"{name}: {jsonpath} (a top-level field, $.name)"
        field = match[1]
        assert field in available, f"{field} is in no 2xx response of {method.upper()} {path}"
        assert name == field, f"output {name} must keep the API's name {field}"
        api_types = success_property_types(root, path, method, field)
        assert outputs[name]["type"] in api_types, f"{name}: {outputs[name]['type']} but the API says {api_types}"

    assert set(outputs) == set(tmap), "the output contract names exactly the translated fields"
    defaults = response_cfg["translationMapDefaults"]
    assert set(defaults) == set(tmap), "every field has a default (absent in a 200 or a 202, PENDING or not)"
    for name, default in defaults.items():
        assert _json_type(json.loads(default)) == outputs[name]["type"], f"default of {name}: {default}"

    template = response_cfg["successTemplate"]
    assert set(re.findall(r"\$!?\{(\w+)\}", template)) == set(tmap)
    rendered = json.loads(re.sub(r"\$!?\{(\w+)\}", lambda m: defaults[m[1]], template))
    assert set(rendered) == set(outputs)
    for name, value in rendered.items():
        assert f"${{{name}}}" in template and _json_type(value) == outputs[name]["type"], name


def test_genesys_readme_names_the_placeholders():
    readme = (GENESYS / "README.md").read_text(encoding="utf-8")
    assert BASE_URL in readme
    fields = {m for f in GENESYS_FILES for m in re.findall(_CREDENTIAL, f.read_text("utf-8"))}
    assert fields, "the actions reference the integration's credential"
    for field in fields:
        assert field in readme, f"README must tell where the credential field {field} is set"
    for f in GENESYS_FILES:
        assert f.name in readme, f"README must list {f.name}"


# --- (c) NICE CXone snippets ---------------------------------------------------------------------

CALLS = CXONE / "calls.json"


def _calls() -> list[dict[str, Any]]:
    return json.loads(CALLS.read_text(encoding="utf-8"))


def test_cxone_calls_cover_the_four_calls_and_every_snippet():
    calls = _calls()
    assert {(c["path"], c["method"].lower()) for c in calls} == {UPLOAD, JOBS, INSPECT, PORTAL}
    assert sorted(c["snippet"] for c in calls) == sorted(p.name for p in CXONE.glob("*.snippet"))
    readme = (CXONE / "README.md").read_text(encoding="utf-8")
    assert BASE_URL in readme
    for call in calls:
        assert call["snippet"] in readme


@pytest.fixture(params=[c["name"] for c in json.loads(CALLS.read_text("utf-8"))])
def cxone(request) -> tuple[dict[str, Any], str]:
    (call,) = [c for c in _calls() if c["name"] == request.param]
    return call, (CXONE / call["snippet"]).read_text(encoding="utf-8")


def _code(snippet: str) -> str:
    """The snippet without its // comments (names in comments prove nothing)."""
    return "\n".join(line.split("//", 1)[0] if not line.lstrip().startswith("//") else ""
                     for line in snippet.splitlines())


def test_cxone_call_matches_the_openapi_operation(cxone):
    call, snippet = cxone
    code = _code(snippet)
    root = doc()
    path, method = call["path"], call["method"].lower()
    operation(root, path, method)

    assert f'"{{offloadBaseUrl}}{path}"' in code, f"the snippet builds {path} on offloadBaseUrl"
    made = re.findall(r"(\w+)\s*=\s*(\w+)\.MakeRestRequest\(\s*\w+\s*,\s*[^,]+,\s*0\s*,\s*\"(\w+)\"\s*\)", code)
    assert len(made) == 1, "one MakeRestRequest(url, payload, 0, METHOD)"
    (response_var, proxy_var, verb), = made
    assert verb == call["method"].upper()
    assert re.search(rf"\b{proxy_var}\s*=\s*GetRESTProxy\(\)", code)

    declared = header_params(root, path, method)
    added = re.findall(rf"\b{proxy_var}\.AddHeader\(\s*\"([^\"]+)\"\s*,\s*\"([^\"]*)\"\s*\)", code)
    assert sorted(name for name, _ in added) == sorted(call["headers"]), "calls.json lists the headers the snippet adds"
    for name, value in added:
        assert name.lower() in declared or name.lower() in ALWAYS_ALLOWED_HEADERS, \
            f"{name} is not a parameter of {method.upper()} {path}"
        if name.lower() in declared and "{" not in value:
            assert not schema_errors(declared[name.lower()]["schema"], value, root), (name, value)
    assert dict(added).get("Authorization", "").startswith("Bearer {"), "Authorization: Bearer {variable}"
    for name, param in declared.items():
        if param.get("required"):
            assert name in {h.lower() for h in call["headers"]}, f"{param['name']} is required"

    content = request_content(root, path, method)
    content_type = re.findall(rf"\b{proxy_var}\.ContentType\s*=\s*\"([^\"]+)\"", code)
    if call["contentType"] is None:
        assert method == "get" and not content_type and not call["bodyFields"]
    else:
        assert content_type == [call["contentType"]] and call["contentType"] in content
    if call["contentType"] == "application/json":
        schema = content["application/json"]["schema"]
        assert set(call["bodyFields"]) <= properties(schema, root)
        assert required_always(schema, root) <= set(call["bodyFields"])
        dynamics = re.findall(r"^\s*DYNAMIC\s+(\w+)", code, re.MULTILINE)
        assert len(dynamics) == 1, "one DYNAMIC object for the JSON body"
        (body_var,) = dynamics
        assigned = set(re.findall(rf"\b{body_var}\.(\w+)\s*=", code))
        assert assigned == set(call["bodyFields"]), "calls.json lists the body fields the snippet sets"
        assert re.search(rf"\{{{body_var}\.asjson\(\)\}}", code), "the body is the DYNAMIC object as JSON"
    elif call["contentType"] is not None:
        assert call["bodyFields"] == []
        assert "Content-Transfer-Encoding" in call["headers"], "the text body is the file's base64"

    available = success_properties(root, path, method)
    for field in call["responseFields"]:
        assert field in available, f"{field} is in no 2xx response of {method.upper()} {path}"
    error_fields = properties(root["components"]["schemas"]["Error"], root)
    assert set(call["errorFields"]) <= error_fields
    read = set(re.findall(rf"\b{response_var}\.(\w+)\b", code))
    assert read == set(call["responseFields"]) | set(call["errorFields"]), \
        "calls.json lists the fields the snippet reads"


def test_cxone_names_appear_in_the_snippets(cxone):
    call, snippet = cxone
    code = _code(snippet)
    for name in call["headers"]:
        assert f'"{name}"' in code, name
    for name in call["bodyFields"] + call["responseFields"] + call["errorFields"]:
        assert re.search(rf"\.{name}\b", code), name
