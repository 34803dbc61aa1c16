"""Point-in-time values (`as_of` on /training items), on SQLite and PostgreSQL: every value at
every instant of a warehouse with a history, against values computed independently from its rows
(tests/history.py); one statement per feature type; and the as-of path at a late instant equal
to batch extraction for every entity."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import event

from feature_store.errors import WarehouseDataError
from feature_store.features import REGISTRY
from feature_store.warehouse import Warehouse, demo
from tests import history, scenario

BASE = "/api/v1/features"
LATE = datetime(2999, 1, 1)


def written(moment: datetime, form: int) -> str:
    """`moment` (UTC) as a client may write it: naive, with Z, with an offset, a space, a date."""
    if form == 0:
        return moment.isoformat()
    if form == 1:
        return moment.isoformat() + "Z"
    if form == 2:
        return moment.replace(tzinfo=UTC).astimezone(timezone(timedelta(hours=5, minutes=30))).isoformat()
    if form == 3:
        return moment.replace(tzinfo=UTC).astimezone(timezone(-timedelta(hours=8))).isoformat()
    return moment.isoformat(sep=" ")


def test_every_value_at_every_instant_matches_the_rows(history_url, make_app, monkeypatch):
    import feature_store.warehouse as warehouse_module

    app = make_app(REDIS_URL=None, WAREHOUSE_URL=history_url, EXTRACT_ON_START=False)
    client = app.test_client()
    statements: list[str] = []
    engine = app.extensions["feature_store"].warehouse.request_engine
    event.listen(engine, "before_cursor_execute", lambda conn, cursor, sql, *args: statements.append(sql))
    read_cursor = warehouse_module._read_cursor  # statements read straight from the driver's cursor

    def counted(conn, sql, *args, **kwargs):
        statements.append(sql)
        return read_cursor(conn, sql, *args, **kwargs)

    monkeypatch.setattr(warehouse_module, "_read_cursor", counted)

    entities = history.entities()
    items, expected = [], []
    for n, moment in enumerate(history.instants()):
        at = history.values_at(moment)
        for feature_type, ids in entities.items():
            for entity_id in ids:
                items.append({"feature_type": feature_type, "entity_id": entity_id,
                              "as_of": written(moment, (n + len(items)) % 5)})
                expected.append((feature_type, entity_id, moment.isoformat(), at[feature_type].get(entity_id, "gone")
                                 if entity_id in at[feature_type] else "did not exist"))
    response = client.post(f"{BASE}/training", json={"features": items})
    assert response.status_code == 200
    body = response.get_json()
    assert body["total_requested"] == len(items)
    assert body["total_successful"] == sum(1 for *_, value in expected if value != "did not exist")
    for result, (feature_type, entity_id, as_of, value) in zip(body["results"], expected, strict=True):
        assert (result["feature_type"], result["entity_id"], result["as_of"]) == (feature_type, entity_id, as_of)
        if value == "did not exist":
            assert result["success"] is False and "did not exist at " + as_of in result["error"], result
        else:
            assert result["success"] is True and result["feature_value"] == value, (result, value)
    # Set-based: one statement per feature type for all items, whatever their instants.
    assert len([sql for sql in statements if "spine" in sql]) == len(REGISTRY)


def test_as_of_items_mix_with_current_items_in_request_order(history_url, make_app):
    client = make_app(REDIS_URL=None, WAREHOUSE_URL=history_url, EXTRACT_ON_START=False).test_client()
    items = [
        {"feature_type": "user_failed_transaction_count", "entity_id": 10},
        {"feature_type": "user_failed_transaction_count", "entity_id": 10, "as_of": "2024-01-10T00:00:00"},
        {"feature_type": "user_policy_time_of_purchase", "entity_id": "10", "as_of": "2024-01-31T23:59:59Z"},
        {"feature_type": "user_policy_time_of_purchase", "entity_id": "10", "as_of": "2024-02-01T01:00:00+01:00"},
        {"feature_type": "quote_creation_to_binding_time", "entity_id": 110, "as_of": "2024-03-02T00:00:01.749999"},
        {"feature_type": "quote_creation_to_binding_time", "entity_id": 110, "as_of": "2024-03-02T00:00:01.75"},
        {"feature_type": "payment_type", "entity_id": 5100, "as_of": "2024-02-29T23:59:59.999999"},
        {"feature_type": "payment_type", "entity_id": "no-such-id", "as_of": "2024-02-29"},
        {"feature_type": "no_such_feature", "entity_id": 1, "as_of": "2024-02-29"},
    ]
    results = client.post(f"{BASE}/training", json={"features": items}).get_json()["results"]
    assert [r.get("feature_value") for r in results] == [3, 1, "2024-01-10T00:00:00.000001", "2024-01-08T00:00:00",
                                                       None, 1, None, None, None]
    assert [r["success"] for r in results] == [True, True, True, True, True, True, False, False, False]
    assert "as_of" not in results[0]
    assert results[3]["as_of"] == "2024-02-01T00:00:00"  # the offset converted to UTC
    assert results[4]["as_of"] == "2024-03-02T00:00:01.749999"
    assert "did not exist at 2024-02-29T23:59:59.999999" in results[6]["error"]
    assert "unknown feature_type" in results[8]["error"]


@pytest.mark.parametrize("as_of", ["soon", "2024-13-01", "", 20240101, None, True, ["2024-01-01"],
                                   "2024-01-01T25:00:00", "0001-01-01T00:00:00+01:00"])
def test_a_malformed_instant_is_a_400_naming_the_item(embedded_app, as_of):
    client = embedded_app.test_client()
    items = [{"feature_type": "payment_type", "entity_id": 2000},
             {"feature_type": "payment_type", "entity_id": 2000, "as_of": as_of}]
    response = client.post(f"{BASE}/training", json={"features": items})
    assert response.status_code == 400
    assert response.get_json()["error"].startswith("features[1].as_of: must be an ISO 8601 instant")


def test_inference_takes_an_instant_too(history_url, make_app):
    client = make_app(REDIS_URL=None, WAREHOUSE_URL=history_url, EXTRACT_ON_START=False).test_client()
    answer = client.post(f"{BASE}/inference", json={"feature_type": "user_failed_transaction_count",
                                                    "entity_id": 11, "as_of": "2024-03-04"})
    assert answer.status_code == 200 and answer.get_json()["feature_value"] == 1
    assert answer.get_json()["as_of"] == "2024-03-04T00:00:00"
    early = client.post(f"{BASE}/inference", json={"feature_type": "user_failed_transaction_count",
                                                   "entity_id": 11, "as_of": "2024-03-01T12:00:00.4"})
    assert early.status_code == 404 and "did not exist at 2024-03-01T12:00:00.400000" in early.get_json()["error"]


def test_the_scenario_at_a_late_instant_is_its_latest_value(warehouse_url):
    warehouse = Warehouse(warehouse_url)
    try:
        for feature in REGISTRY:
            expected = scenario.expected_values()[feature.feature_type]
            ids = [int(i) for i in expected]
            values = warehouse.compute_as_of(feature, [(n, entity_id, LATE) for n, entity_id in enumerate(ids)])
            assert {str(ids[n]): orjson.loads(value) for n, value in values.items()} == expected
    finally:
        warehouse.dispose()


def late_equals_batch(url: str) -> None:
    warehouse = Warehouse(url)
    try:
        for feature in REGISTRY:
            batch = dict(pair for chunk in warehouse.stream(feature, chunk_size=500) for pair in chunk)
            ids = sorted(batch)
            late = warehouse.compute_as_of(feature, [(n, entity_id, LATE) for n, entity_id in enumerate(ids)])
            assert {ids[n]: value for n, value in late.items()} == batch, feature.feature_type
    finally:
        warehouse.dispose()


@settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**32 - 1))
def test_as_of_after_every_change_equals_batch_extraction_for_every_entity_on_sqlite(seed, tmp_path_factory):
    url = f"sqlite:///{tmp_path_factory.mktemp('late') / 'demo.db'}"
    demo.generate(url, users=150, seed=seed)
    late_equals_batch(url)


@settings(max_examples=2, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**32 - 1))
def test_as_of_after_every_change_equals_batch_extraction_for_every_entity_on_postgresql(seed,
                                                                                         postgres_server_url):
    demo.generate(postgres_server_url, users=150, seed=seed, replace=True)
    late_equals_batch(postgres_server_url)


def test_every_table_a_feature_reads_is_read_as_it_existed_at_the_instant():
    # A guard for new declarations: in the as-of statement, every table with an existence
    # column is compared with the spine's instant (a join written without q.on would leak).
    from sqlalchemy import Table
    from sqlalchemy.dialects import postgresql
    from sqlalchemy.sql.util import find_tables

    from feature_store.warehouse.statements import AsOf, as_of_statement, spine

    for feature in REGISTRY:
        statement, _ = as_of_statement(feature, "postgresql", [(0, 1, LATE)])
        sql = str(statement.compile(dialect=postgresql.dialect()))
        tables = {t.name for t in find_tables(statement, include_joins=True) if isinstance(t, Table)
                  and any(c.info.get("event_time") == "exists_from" for c in t.columns)}
        assert tables, feature.feature_type
        for table in tables:
            assert f"{table}.created_at <= spine.as_of" in sql, (feature.feature_type, table)
        # An event column is read only behind its instant (selected, or through q.event).
        scope = AsOf(spine("postgresql", [(0, 1, LATE)])[0])
        for table in find_tables(statement, include_joins=True):
            for column in getattr(table, "columns", []) if isinstance(table, Table) else []:
                if column.info.get("event_time") == "event":
                    name = f"{table.name}.{column.name}"
                    guarded = str(scope.guarded(column).compile(dialect=postgresql.dialect()))
                    assert sql.count(name) == guarded.count(name) * sql.count(guarded), (feature.feature_type, name)


def test_a_fifth_feature_gets_its_as_of_values_from_its_declaration_alone(history_url):
    from sqlalchemy import func

    from feature_store.features import USER
    from feature_store.registry import DataType, Feature
    from feature_store.warehouse.models import Quote, User

    quotes = Feature(feature_type="user_quote_count", name="Count of User Quotes", description="", entity=USER,
                     data_type=DataType.INTEGER, created_at=datetime(2026, 12, 1),
                     query=lambda q: q.select(User, func.count(Quote.id))
                     .outerjoin(Quote, q.on(Quote, Quote.user_id == User.id)).group_by(q.key(User)))
    warehouse = Warehouse(history_url)
    try:
        items = [(n, user[0], moment) for n, (user, moment) in enumerate(
            (user, moment) for user in history.USERS for moment in history.instants())]
        values = warehouse.compute_as_of(quotes, items)
    finally:
        warehouse.dispose()
    for pos, user_id, moment in items:
        if history.ts(next(u for u in history.USERS if u[0] == user_id)[2]) > moment:
            assert pos not in values
        else:
            expected = sum(1 for q in history.QUOTES if q[1] == user_id and history.ts(q[3]) <= moment)
            assert orjson.loads(values[pos]) == expected


def test_sqlite_timestamps_in_every_form_the_reader_accepts_exist_from_their_utc_instant(tmp_path):
    # Text forms other writers leave in SQLite: offsets (with and without colon), unpadded fields,
    # a comma fraction, a date alone. Each exists from its UTC instant on, and earliest() reads
    # an offset once (it was applied twice).
    url = f"sqlite:///{tmp_path / 'forms.db'}"
    forms = {1: ("2024-03-01 12:00:00.5+02:00", datetime(2024, 3, 1, 10, 0, 0, 500000)),
             2: ("2024-03-01T12:00:00+0530", datetime(2024, 3, 1, 6, 30)),
             3: ("2024-3-1 9:05", datetime(2024, 3, 1, 9, 5)),
             4: ("2024-03-01 08:00:00,25", datetime(2024, 3, 1, 8, 0, 0, 250000)),
             5: ("2024-03-02", datetime(2024, 3, 2)),
             6: ("2024-03-01T07:00:00.123456789Z", datetime(2024, 3, 1, 7, 0, 0, 123456))}
    scenario.load_rows(url, {
        "users": [(uid, f"u{uid}@example.com", text) for uid, (text, _) in forms.items()],
        "quotes": [(10 * uid, uid, 1, "2024-01-01 00:00:00", None) for uid in forms],
        "policies": [(10 * uid, uid, 10 * uid, "active", "2024-01-01 00:00:00") for uid in forms],
        "payment_transactions": [(10 * uid, 10 * uid, 1, "Credit", "succeeded", text)
                                 for uid, (text, _) in forms.items()],
    })
    warehouse = Warehouse(url)
    try:
        count = REGISTRY.get("user_failed_transaction_count")
        purchase = REGISTRY.get("user_policy_time_of_purchase")
        for uid, (_, utc) in forms.items():
            tiny = timedelta(microseconds=1)
            got = warehouse.compute_as_of(count, [(0, uid, utc - tiny), (1, uid, utc), (2, uid, LATE)])
            assert set(got) == {1, 2}, (uid, got)
            latest = warehouse.compute(purchase, [uid])[uid]
            assert orjson.loads(latest) == utc.isoformat(), uid
            assert orjson.loads(warehouse.compute_as_of(purchase, [(0, uid, LATE)])[0]) == utc.isoformat()
    finally:
        warehouse.dispose()


def test_an_unreadable_event_time_fails_as_of_as_it_fails_now(tmp_path):
    # A quote whose bound_at is no timestamp: 502 on the current path, and not "unbound" as of.
    url = f"sqlite:///{tmp_path / 'bad.db'}"
    scenario.load_scenario(url)
    scenario.execute(url, "UPDATE quotes SET bound_at = 'soon' WHERE id = 42")
    warehouse = Warehouse(url)
    feature = REGISTRY.get("quote_creation_to_binding_time")
    try:
        with pytest.raises(WarehouseDataError):
            warehouse.compute(feature, [42])
        with pytest.raises(WarehouseDataError):
            warehouse.compute_as_of(feature, [(0, 42, LATE)])
        assert orjson.loads(warehouse.compute_as_of(feature, [(0, 41, LATE)])[0]) is None  # unbound: null
    finally:
        warehouse.dispose()

