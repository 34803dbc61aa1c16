"""Generated bad input against every endpoint (hypothesis): never a 5xx, always a JSON answer,
every error `success: false`; no entity id reads or writes a key other than its own, and none
reaches the warehouse except as a bound integer parameter."""

from __future__ import annotations

import json
import re
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import event

from feature_store import create_app
from feature_store.features import REGISTRY
from feature_store.online_store.id_records import on_demand_key
from tests import scenario

BASE = "/api/v1/features"
FEATURE_TYPES = REGISTRY.feature_types()
OUR_KEY = re.compile(rb"(%s):(0|-?[1-9][0-9]*)" % b"|".join(t.encode() for t in FEATURE_TYPES))
EXISTING = {(ft, eid) for ft, values in scenario.expected_values().items() for eid in values}
FUZZ = settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                        HealthCheck.too_slow])

nasty_text = st.one_of(
    st.text(max_size=40),
    st.sampled_from(scenario.NON_IDS + ["\ud800", "\udfff",
                                        "*", "?", "[a-z]", "\\", "payment_type:*", "1 2", "1;DEL x", "%s", "'",
                                        "' OR '1'='1", "\u202e1", "1\x00", "x" * 10_000]),
    st.from_regex(r"-?[0-9]{1,25}", fullmatch=True),
)
entity_ids = st.one_of(nasty_text, st.integers(min_value=-(2**70), max_value=2**70),
                       st.sampled_from([2000, 3, 7, scenario.BIG, scenario.HUGE]))
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
items = st.one_of(
    st.fixed_dictionaries({"feature_type": st.sampled_from(FEATURE_TYPES) | nasty_text, "entity_id": entity_ids},
                          optional={"extra": json_values}),
    st.fixed_dictionaries({"feature_type": json_values, "entity_id": json_values}),
    json_values,
)
bodies = st.one_of(
    items.map(lambda value: json.dumps(value).encode()),
    st.lists(items, max_size=6).map(lambda features: json.dumps({"features": features}).encode()),
    json_values.map(lambda value: json.dumps({"features": value}).encode()),
    st.binary(max_size=200),
)


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory):
    url = f"sqlite:///{tmp_path_factory.mktemp('fuzz') / 'warehouse.db'}"
    scenario.load_scenario(url)
    app = create_app({"REDIS_URL": None, "WAREHOUSE_URL": url, "EXTRACT_ON_START": False})
    statements: list[tuple[str, object]] = []
    event.listen(app.extensions["feature_store"].warehouse.request_engine, "before_cursor_execute",
                 lambda conn, cursor, statement, parameters, context, executemany:
                 statements.append((statement, parameters)))
    # The declared queries, as the warehouse sees them: the only SQL any request may send.
    for feature in REGISTRY:
        app.extensions["feature_store"].warehouse.compute(feature, [1, 2])
    ALLOWED_SQL.update(_shape(statement) for statement, _ in statements)
    statements.clear()
    yield app, statements
    app.extensions["feature_store"].close()


ALLOWED_SQL: set[str] = set()


def _shape(statement: str) -> str:
    return re.sub(r"\(\?(?:, \?)*\)", "(?)", statement)


def check_answer(response):
    assert response.status_code < 500, response.get_data(as_text=True)
    assert response.is_json, response.get_data(as_text=True)[:200]
    body = response.get_json()
    if response.status_code >= 400:
        assert body["success"] is False and isinstance(body["error"], str) and body["error"]
        assert "Traceback" not in body["error"]


def check_store(app):
    redis = app.extensions["feature_store"].store.redis
    for key in redis.scan_iter(count=1000):
        if key.startswith((b"rq:", b"feature-store:")):
            continue
        match = OUR_KEY.fullmatch(key)
        assert match, key
        assert (match.group(1).decode(), match.group(2).decode()) in EXISTING, key


def check_warehouse(statements):
    for statement, parameters in statements:
        # Ids travel as bound integers only: the SQL text is one of the declared queries.
        assert _shape(statement) in ALLOWED_SQL, statement
        values = parameters.values() if isinstance(parameters, dict) else parameters
        assert all(isinstance(v, int | str) for v in values)
        assert all(isinstance(v, int) or v in ("succeeded", "failed") for v in values), parameters
    statements.clear()


@FUZZ
@given(body=bodies, path=st.sampled_from(["inference", "training"]))
def test_generated_bodies_never_break_inference_or_training(fuzzed, body, path):
    app, statements = fuzzed
    response = app.test_client().post(f"{BASE}/{path}", data=body, content_type="application/json")
    check_answer(response)
    check_store(app)
    check_warehouse(statements)


@FUZZ
@given(feature_type=st.sampled_from(FEATURE_TYPES), entity_id=entity_ids)
def test_any_entity_id_touches_only_its_own_key(fuzzed, feature_type, entity_id):
    app, statements = fuzzed
    redis = app.extensions["feature_store"].store.redis
    before = set(redis.keys("*"))
    response = app.test_client().post(f"{BASE}/inference", json={"feature_type": feature_type, "entity_id": entity_id})
    check_answer(response)
    written = set(redis.keys("*")) - before
    if isinstance(entity_id, bool) or not isinstance(entity_id, int | str):
        assert response.status_code == 400
    value_key = f"{feature_type}:{entity_id}".encode("utf-8", "surrogatepass")
    # Its value, and its id in the feature's on-demand id set (which the next run checks).
    assert written <= {value_key, on_demand_key(feature_type).encode()}
    if value_key in written:
        assert redis.sismember(on_demand_key(feature_type), str(entity_id))
    if response.status_code == 200:
        assert (feature_type, str(entity_id)) in EXISTING
    check_store(app)
    check_warehouse(statements)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(method=st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH"]),
       path=st.one_of(st.sampled_from(["discovery", "inference", "training", "extract/extract-abc", "extract/"]),
                      st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=30)),
       query=st.text(max_size=20), body=st.binary(max_size=100))
def test_generated_paths_and_methods_answer_json(fuzzed, method, path, query, body):
    app, _ = fuzzed
    if method == "POST" and path == "extract":
        return  # extraction itself is exercised elsewhere; here it would only be slow
    response = app.test_client().open(f"{BASE}/{quote(path)}", method=method, query_string={"wait": query}, data=body)
    check_answer(response)
