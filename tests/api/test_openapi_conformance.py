"""The OpenAPI document against the API's real answers (schemathesis, in process over WSGI).

Every operation of the served document is called with generated requests (its examples, boundary
and invalid values, random ones, methods a path does not serve), and every answer must conform:
its status code is documented for the operation, its Content-Type is one the document gives for
that status, the headers it documents are there and valid, and the body matches the schema (closed
schemas: no undeclared field). Runs: the embedded app open, the same with API keys (each request
sent without a key, with a wrong one, a read key and an admin key), the app on a real Redis with
no worker, and the app with Redis and the warehouse both refusing connections; then the answers
generation rarely reaches (a failed run, an unreadable warehouse row, an unexpected error, a run no
worker takes, the limits, a body that stops arriving), one by one. Deterministic (derandomized,
fixed seed) and capped per operation. Also: every route is in the document, with the access rules
access.py enforces, and every answer's schema is closed.
"""

from __future__ import annotations

import json
import logging
import re

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import load_all_checks
from schemathesis.specs.openapi import checks as openapi_checks
from schemathesis.specs.openapi.definitions import OPENAPI_30_VALIDATOR

from feature_store.api.access import ADMIN_ENDPOINTS
from feature_store.errors import WarehouseDataError
from tests import scenario
from tests.conftest import free_port

load_all_checks()

BASE = "/api/v1/features"
READ, ADMIN = "conformance-read-key", "conformance-admin-key"
EXAMPLES = 25
CONFORMANCE = [
    openapi_checks.status_code_conformance,
    openapi_checks.content_type_conformance,
    openapi_checks.response_headers_conformance,
    openapi_checks.response_schema_conformance,
    openapi_checks.unsupported_method,  # a method a path does not serve: 405 with Allow
]
# With Redis and a healthy warehouse, no answer may be a 5xx (even where the document lists one).
CHECKS = [*CONFORMANCE, schemathesis.checks.not_a_server_error]
NDJSON = ("application/x-ndjson", "application/jsonl", "application/ndjson")


@schemathesis.serializer("application/csv", *NDJSON)
def _spine_text(ctx, value) -> bytes:
    """A CSV or NDJSON spine as generated: text as it is (a list: one JSON value per line)."""
    if isinstance(value, str):
        return value.encode("utf-8", "surrogatepass")
    return b"".join(json.dumps(row).encode() + b"\n" for row in (value if isinstance(value, list) else [value]))


def _schema(app, expected_statuses=("2xx", "3xx", "4xx")):
    config = schemathesis.Config.from_dict({
        "seed": 20251201,
        "generation": {"max-examples": EXAMPLES, "deterministic": True, "database": "none"},
        "phases": {"stateful": {"enabled": False}},
        "checks": {"not_a_server_error": {"expected-statuses": list(expected_statuses)}},
    })
    return schemathesis.openapi.from_wsgi("/api/v1/openapi.json", app, config=config)


@pytest.fixture(autouse=True)
def _quiet_error_log():
    # Thousands of 4xx are logged as warnings; a failure's report keeps the errors (a 500's traceback).
    logger = logging.getLogger("feature_store")
    level = logger.level
    logger.setLevel(logging.ERROR)
    yield
    logger.setLevel(level)


@pytest.fixture(autouse=True)
def _node_id_for_schemathesis(request):
    # schemathesis 4.32's lazy schemas read and write `node._nodeid` to name each operation's
    # subtest; pytest 9.2 keeps the id elsewhere (`_id`). Giving the node the attribute it reads is
    # enough: pytest's own reporting does not use it.
    if not hasattr(request.node, "_nodeid"):
        request.node._nodeid = request.node.nodeid


@pytest.fixture
def open_api(embedded_app):
    return _schema(embedded_app)


@pytest.fixture
def keyed_api(make_app, scenario_sqlite):
    app = make_app(REDIS_URL=None, WAREHOUSE_URL=scenario_sqlite, EXTRACT_ON_START=False,
                   API_KEYS_READ=(READ,), API_KEYS_ADMIN=(ADMIN,))
    return _schema(app)


@pytest.fixture
def redis_api(make_app, redis_url, scenario_sqlite):
    """Production mode: a real Redis (with its local cache), RQ, no worker listening."""
    return _schema(make_app(REDIS_URL=redis_url, WAREHOUSE_URL=scenario_sqlite))


@pytest.fixture
def outage_api(make_app):
    """Redis and the warehouse both refuse connections: 503 is the documented answer."""
    app = make_app(REDIS_URL=f"redis://127.0.0.1:{free_port()}/0",
                   WAREHOUSE_URL=f"postgresql://nobody@127.0.0.1:{free_port()}/warehouse")
    return _schema(app, expected_statuses=("2xx", "3xx", "4xx", "503"))


SETTINGS = settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                    suppress_health_check=list(HealthCheck))


@schemathesis.pytest.from_fixture("open_api").parametrize()
@SETTINGS
def test_every_answer_of_the_open_api_is_documented(case):
    case.call_and_validate(checks=CHECKS)


@schemathesis.pytest.from_fixture("keyed_api").parametrize()
@SETTINGS
def test_every_answer_with_api_keys_is_documented(case):
    for credentials in ({}, {"X-API-Key": "wrong"}, {"X-API-Key": READ}, {"Authorization": f"Bearer {ADMIN}"}):
        for name in ("X-API-Key", "Authorization"):
            (case.headers or {}).pop(name, None)
        case.call_and_validate(headers=credentials, checks=CHECKS)


@schemathesis.pytest.from_fixture("redis_api").parametrize()
@SETTINGS
def test_every_answer_on_redis_without_a_worker_is_documented(case):
    case.call_and_validate(checks=CHECKS)


@schemathesis.pytest.from_fixture("outage_api").parametrize()
@SETTINGS
def test_every_answer_while_redis_and_the_warehouse_are_down_is_documented(case):
    case.call_and_validate(checks=CHECKS)


# --- the document itself ----------------------------------------------------------------------------

REQUEST_SCHEMAS = {"FeatureRequest", "FeatureSetRequest", "TrainingRequest", "ExtractRequest"}


def test_every_route_is_documented_with_the_access_rules_it_enforces(make_app, scenario_sqlite):
    keyed = make_app(REDIS_URL=None, WAREHOUSE_URL=scenario_sqlite, EXTRACT_ON_START=False,
                     API_KEYS_READ=(READ,), API_KEYS_ADMIN=(ADMIN,))
    document = keyed.test_client().get("/api/v1/openapi.json").get_json()
    assert not [str(error) for error in OPENAPI_30_VALIDATOR.iter_errors(document)]
    routes = {}
    for rule in keyed.url_map.iter_rules():
        # Files, and the catalog page with its stylesheet (a page for people): not the API.
        if rule.endpoint == "static" or rule.endpoint.startswith("catalog.") or rule.rule.startswith("/docs/<"):
            continue
        path = re.sub(r"<(?:[^:>]+:)?([^>]+)>", r"{\1}", rule.rule)
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            routes[(path, method.lower())] = rule.endpoint
    assert {(path, method) for path, item in document["paths"].items() for method in item} == set(routes)
    for (path, method), endpoint in routes.items():
        operation = document["paths"][path][method]
        if endpoint.startswith("features."):  # access.py's gate: a key, admin for ADMIN_ENDPOINTS
            assert operation["security"] == [{"ApiKey": []}, {"Bearer": []}], endpoint
            assert "401" in operation["responses"]
            assert ("403" in operation["responses"]) == (endpoint in ADMIN_ENDPOINTS), endpoint
        else:
            assert operation["security"] == [] and "401" not in operation["responses"], endpoint
    schemes = document["components"]["securitySchemes"]
    assert schemes["ApiKey"] == {**schemes["ApiKey"], "type": "apiKey", "in": "header", "name": "X-API-Key"}
    assert schemes["Bearer"]["scheme"] == "bearer"
    # Every answer's shape is closed (apispec leaves additionalProperties out of a schema whose Meta
    # has a description: none may have one); requests may carry fields the API ignores.
    for name, schema in document["components"]["schemas"].items():
        assert schema.get("additionalProperties") is (None if name in REQUEST_SCHEMAS else False), name
    # Without keys the API is open, and the document says so: no scheme, no 401.
    open_document = make_app(REDIS_URL=None, WAREHOUSE_URL=scenario_sqlite, EXTRACT_ON_START=False) \
        .test_client().get("/api/v1/openapi.json").get_json()
    assert "securitySchemes" not in open_document["components"]
    for item in open_document["paths"].values():
        for operation in item.values():
            assert "security" not in operation and not {"401", "403"} & set(operation["responses"])


# --- answers that generated requests rarely reach -------------------------------------------------

def _call(schema, method: str, path: str, status: int, environ: dict | None = None, **case):
    """One request, validated against the document like the generated ones; returns its body."""
    extra = {"environ_overrides": environ} if environ else {}
    response = schema[path][method].Case(**case).call_and_validate(checks=CONFORMANCE, **extra)
    assert response.status_code == status, response.text
    return response.json()


def test_failed_runs_unreadable_rows_and_unexpected_errors_are_documented(make_app, scenario_sqlite,
                                                                          monkeypatch):
    # A bound_at the feature cannot read (another writer's row): 502 on the request path, a
    # partly failed extraction run.
    scenario.execute(scenario_sqlite, "INSERT INTO quotes VALUES (93, 4, 1, '2024-03-01 08:00:00', 'soon')")
    app = make_app(REDIS_URL=None, WAREHOUSE_URL=scenario_sqlite, EXTRACT_ON_START=False)
    api = _schema(app)
    unreadable = {"feature_type": "quote_creation_to_binding_time", "entity_id": 93}
    _call(api, "POST", f"{BASE}/inference", 502, body=unreadable, media_type="application/json")
    _call(api, "POST", f"{BASE}/training", 502, body={"features": [unreadable]}, media_type="application/json")
    failed = _call(api, "POST", f"{BASE}/extract", 500)
    assert list(failed["failed_features"]) == ["quote_creation_to_binding_time"]
    run = _call(api, "GET", f"{BASE}/extract/{{job_id}}", 200, path_parameters={"job_id": failed["job_id"]})
    assert run["status"] == "failed" and run["result"]["failed_features"]
    listed = _call(api, "GET", f"{BASE}/extract", 200)
    assert listed["runs"][0]["error"]
    report = _call(api, "GET", f"{BASE}/parity", 200, query={"sample": 5})
    assert report["features"]["payment_type"]["checked"] == 5
    # A run of the other features finishes; its status carries its result.
    finished = _call(api, "POST", f"{BASE}/extract", 200, body={"feature_types": ["payment_type"]},
                     media_type="application/json")
    run = _call(api, "GET", f"{BASE}/extract/{{job_id}}", 200, path_parameters={"job_id": finished["job_id"]})
    assert run["status"] == "finished" and run["result"]["features_extracted"]["payment_type"] > 0
    _call(api, "POST", f"{BASE}/extract", 202, query={"wait": "false"})
    # An unexpected error anywhere: 500 with nothing but "internal error".
    from feature_store.services import discovery

    def broken(registry):
        raise RuntimeError("a defect")

    monkeypatch.setattr(discovery, "catalog", broken)
    assert _call(api, "GET", f"{BASE}/discovery", 500)["error"] == "internal error"
    # A row the as-of path cannot read: 502 there too, before the table starts. (It reads the row
    # above as not yet bound, a null, so the failure is injected.)
    warehouse = app.extensions["feature_store"].warehouse

    def unreadable_as_of(feature, items):
        raise WarehouseDataError(f"the warehouse holds {feature.feature_type} data that cannot be read")

    monkeypatch.setattr(warehouse, "batch_as_of", unreadable_as_of)
    _call(api, "POST", f"{BASE}/training-sets", 502, media_type="application/json", body={
        "feature_set": "underwriting_v1", "spine": [{"entity_id": 3, "as_of": "2025-01-01"}]})
    assert "cannot be read" in _call(api, "GET", f"{BASE}/parity", 502)["error"]


def test_a_run_no_worker_takes_is_documented(make_app, redis_url, scenario_sqlite):
    api = _schema(make_app(REDIS_URL=redis_url, WAREHOUSE_URL=scenario_sqlite))
    accepted = _call(api, "POST", f"{BASE}/extract", 202)
    assert accepted["workers"] == 0 and accepted["status"] == "queued" and accepted["warning"]
    run = _call(api, "GET", f"{BASE}/extract/{{job_id}}", 200, path_parameters={"job_id": accepted["job_id"]})
    assert run["status"] == "queued"
    assert _call(api, "GET", f"{BASE}/extract", 200)["runs"][0]["job_id"] == accepted["job_id"]
    assert _call(api, "GET", "/ready", 200)["workers"] == 0
    _call(api, "POST", f"{BASE}/inference", 200, body={"feature_type": "payment_type", "entity_id": 2000},
          media_type="application/json")


def test_limits_and_body_timeouts_are_documented(make_app, scenario_sqlite):
    app = make_app(REDIS_URL=None, WAREHOUSE_URL=scenario_sqlite, EXTRACT_ON_START=False, MAX_CONTENT_LENGTH=4096,
                   TRAINING_MAX_ITEMS=2, TRAINING_SET_MAX_ROWS=2, TRAINING_SET_MAX_BYTES=4096)
    api = _schema(app)
    item = {"feature_type": "payment_type", "entity_id": "2000"}
    big = {**item, "padding": "x" * 5000}
    spine = [{"entity_id": 3, "as_of": "2025-01-01"}] * 3
    json_bodies = {
        f"{BASE}/inference": big, f"{BASE}/training": {"features": [big]}, f"{BASE}/extract": {"padding": "x" * 5000},
        f"{BASE}/training-sets": {"feature_set": "underwriting_v1", "spine": spine, "padding": "x" * 5000}}
    for path, body in json_bodies.items():
        _call(api, "POST", path, 413, body=body, media_type="application/json")
    _call(api, "POST", f"{BASE}/training", 413, body={"features": [item] * 3}, media_type="application/json")
    _call(api, "POST", f"{BASE}/training-sets", 413, body={"feature_set": "underwriting_v1", "spine": spine},
          media_type="application/json")
    csv = "entity_id,as_of\n" + "3,2025-01-01\n" * 400
    _call(api, "POST", f"{BASE}/training-sets", 413, body=csv, media_type="text/csv",
          query={"feature_set": "underwriting_v1"})
    # A body that stops arriving (gunicorn's socket timeout, as the inference fast path marks it).
    timed_out = {"feature_store.body_timed_out": True}
    for path in (f"{BASE}/inference", f"{BASE}/training", f"{BASE}/extract"):
        _call(api, "POST", path, 408, environ=timed_out, body={}, media_type="application/json")
