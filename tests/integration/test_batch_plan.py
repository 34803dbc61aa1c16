"""Batch reads on PostgreSQL are planned for every row they read: a server-side cursor is planned
for its first `cursor_tuple_fraction` of rows (0.1 by default), which on a warehouse without
statistics picked a plan 100 times slower than reading everything (BENCHMARKS.md, section 7).

The queries here report the setting they run under, from inside the batch read itself, on both
of its paths (rows read from the driver's named cursor, and SQLAlchemy's streamed result)."""

from __future__ import annotations

from datetime import datetime

import orjson
import pytest
from sqlalchemy import Boolean, bindparam, func, text

from feature_store.features import PAYMENT_TRANSACTION
from feature_store.registry import DataType, Feature
from feature_store.warehouse import Warehouse, _raw_rows
from feature_store.warehouse.models import PaymentTransaction
from feature_store.warehouse.statements import Current
from tests import scenario


def _reporting_feature(feature_type: str, *, sqlalchemy_path: bool) -> Feature:
    def query(q):
        statement = q.select(PaymentTransaction, func.current_setting("cursor_tuple_fraction"))
        if sqlalchemy_path:
            # A boolean parameter needs SQLAlchemy's bind processing on psycopg: the batch read
            # then goes through SQLAlchemy's stream_results instead of the driver's cursor.
            statement = statement.where(bindparam("always", True, type_=Boolean))
        return statement

    return Feature(feature_type=feature_type, name=feature_type, description="", entity=PAYMENT_TRANSACTION,
                   data_type=DataType.STRING, created_at=datetime(2025, 1, 1), query=query)


@pytest.fixture(scope="module")
def postgres_warehouse(postgres_server_url):
    scenario.load_scenario(postgres_server_url)
    warehouse = Warehouse(postgres_server_url)
    with warehouse.batch_engine.connect() as conn:
        default = conn.execute(text("SELECT current_setting('cursor_tuple_fraction')")).scalar_one()
    assert float(default) == 0.1, "the server's default is what the batch read must override"
    yield warehouse
    warehouse.dispose()


@pytest.mark.parametrize("sqlalchemy_path", [False, True], ids=["driver_cursor", "sqlalchemy_stream"])
def test_a_batch_read_is_planned_for_every_row(postgres_warehouse, sqlalchemy_path):
    feature = _reporting_feature("reports_cursor_tuple_fraction", sqlalchemy_path=sqlalchemy_path)
    with postgres_warehouse.batch_engine.connect() as conn:
        statement = feature.query(Current())
        assert (_raw_rows(conn, statement, 10) is None) == sqlalchemy_path  # the path meant is the one taken
    streamed = {eid: orjson.loads(value)
                for chunk in postgres_warehouse.stream(feature, chunk_size=2) for eid, value in chunk}
    assert sorted(streamed) == sorted(p[0] for p in scenario.PAYMENTS)
    assert {float(setting) for setting in streamed.values()} == {1.0}
    # Also with an id range (a partition's query).
    lo, hi = postgres_warehouse.id_bounds("payment_transactions")
    ranged = {eid: value for chunk in postgres_warehouse.stream(feature, chunk_size=2, id_range=(lo, hi))
              for eid, value in chunk}
    assert ranged and hi not in ranged and {float(orjson.loads(value)) for value in ranged.values()} == {1.0}


def test_the_setting_ends_with_the_batch_read(postgres_warehouse):
    feature = _reporting_feature("reports_cursor_tuple_fraction", sqlalchemy_path=False)
    for _ in postgres_warehouse.stream(feature, chunk_size=2):
        pass
    # SET LOCAL, not SET: the pooled connections (the batch read's own among them) and the
    # request path keep the server's default for anything else.
    with postgres_warehouse.batch_engine.connect() as first, postgres_warehouse.batch_engine.connect() as second:
        for conn in (first, second):
            assert float(conn.execute(text("SHOW cursor_tuple_fraction")).scalar_one()) == 0.1
    computed = postgres_warehouse.compute(feature, [p[0] for p in scenario.PAYMENTS])
    assert {float(orjson.loads(value)) for value in computed.values()} == {0.1}
