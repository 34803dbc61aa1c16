"""Lineage derived from each feature's statement: what it reads (tables, columns and their roles),
how a row of each table reaches the entity (what the real-time updates rely on), which features
read a table or column, and the same through discovery, GET /lineage and `features lineage`."""

from __future__ import annotations

import json
from datetime import datetime

import pytest
from sqlalchemy import and_, create_engine, func, select

from feature_store.cli import features as cli_features
from feature_store.features import PAYMENT_TRANSACTION, QUOTE, REGISTRY, USER
from feature_store.lineage import Lookup, Route, Step, features_reading, lineage
from feature_store.registry import DataType, Feature, Registry
from feature_store.warehouse.models import PaymentTransaction, Policy, Quote, User

USER_KEY = {"table": "users", "column": "id"}
USER_PATHS = {
    "users": [],
    "policies": [{"table": "policies", "column": "user_id", "to_table": "users", "to_column": "id"}],
    "payment_transactions": [
        {"table": "payment_transactions", "column": "policy_id", "to_table": "policies", "to_column": "id"},
        {"table": "policies", "column": "user_id", "to_table": "users", "to_column": "id"}],
}
DECLARED = {
    "user_policy_time_of_purchase": {
        "entity": USER_KEY,
        "tables": ["users", "policies", "payment_transactions"],
        "columns": {"users": {"id": ["selected", "joined_on", "grouped_by"]},
                    "policies": {"id": ["joined_on"], "user_id": ["joined_on"]},
                    "payment_transactions": {"created_at": ["selected"], "policy_id": ["joined_on"],
                                             "status": ["filtered_on"]}},
        "paths": USER_PATHS,
    },
    "quote_creation_to_binding_time": {
        "entity": {"table": "quotes", "column": "id"},
        "tables": ["quotes"],
        "columns": {"quotes": {"bound_at": ["selected"], "created_at": ["selected"], "id": ["selected"]}},
        "paths": {"quotes": []},
    },
    "user_failed_transaction_count": {
        "entity": USER_KEY,
        "tables": ["users", "policies", "payment_transactions"],
        "columns": {"users": {"id": ["selected", "joined_on", "grouped_by"]},
                    "policies": {"id": ["joined_on"], "user_id": ["joined_on"]},
                    "payment_transactions": {"id": ["selected"], "policy_id": ["joined_on"],
                                             "status": ["filtered_on"]}},
        "paths": USER_PATHS,
    },
    "payment_type": {
        "entity": {"table": "payment_transactions", "column": "id"},
        "tables": ["payment_transactions"],
        "columns": {"payment_transactions": {"id": ["selected"], "payment_type": ["selected"]}},
        "paths": {"payment_transactions": []},
    },
}


def _feature(feature_type: str, entity, query) -> Feature:
    return Feature(feature_type=feature_type, name=feature_type, description=feature_type, entity=entity,
                   data_type=DataType.INTEGER, created_at=datetime(2026, 12, 1), query=query)


def test_each_declared_feature_reads_exactly_what_its_statement_reads():
    assert [f.feature_type for f in REGISTRY] == list(DECLARED)
    for feature in REGISTRY:
        assert lineage(feature).describe() == DECLARED[feature.feature_type], feature.feature_type
    failed = lineage(REGISTRY.get("user_failed_transaction_count"))
    assert failed.tables == ("users", "policies", "payment_transactions")
    assert failed.columns["payment_transactions"]["status"] == ("filtered_on",)
    assert failed.paths["payment_transactions"] == (Step("payment_transactions", "policy_id", "policies", "id"),
                                                    Step("policies", "user_id", "users", "id"))
    assert failed.paths["users"] == ()
    assert lineage(REGISTRY.get("payment_type")) is lineage(REGISTRY.get("payment_type"))  # derived once


def test_a_new_declaration_gets_its_lineage_with_no_extra_code():
    # The README's example feature, declared here only.
    quote_count = _feature("user_quote_count", USER, lambda q: (
        q.select(User, func.count(Quote.id)).outerjoin(Quote, q.on(Quote, Quote.user_id == User.id))
        .group_by(q.key(User))))
    registry = Registry([*REGISTRY, quote_count])
    assert lineage(quote_count).describe() == {
        "entity": USER_KEY, "tables": ["users", "quotes"],
        "columns": {"users": {"id": ["selected", "joined_on", "grouped_by"]},
                    "quotes": {"id": ["selected"], "user_id": ["joined_on"]}},
        "paths": {"users": [], "quotes": [{"table": "quotes", "column": "user_id", "to_table": "users",
                                           "to_column": "id"}]}}
    assert features_reading(registry, "quotes") == [REGISTRY.get("quote_creation_to_binding_time"), quote_count]
    assert features_reading(registry, "quotes", "user_id") == [quote_count]


def test_subqueries_filters_and_having_are_walked_too():
    latest = select(func.max(Policy.created_at)).where(Policy.user_id == User.id).scalar_subquery()
    latest_policy = _feature("user_latest_policy_at", USER, lambda q: (
        q.select(User, latest).where(User.email.like("%@example.com"))))
    assert lineage(latest_policy).describe()["columns"] == {
        "users": {"email": ["filtered_on"], "id": ["selected", "joined_on"]},
        "policies": {"created_at": ["selected"], "user_id": ["joined_on"]}}
    assert lineage(latest_policy).route("policies") == Route("policies", "user_id", ())

    counts = (select(Policy.user_id, func.count(Policy.id).label("n")).group_by(Policy.user_id)
              .having(func.count(Policy.id) > 0).subquery())
    policy_count = _feature("user_policy_count", USER, lambda q: (
        q.select(User, counts.c.n).outerjoin(counts, q.on(Policy, counts.c.user_id == User.id))))
    described = lineage(policy_count).describe()
    assert described["columns"] == {"users": {"id": ["selected", "joined_on"]},
                                    "policies": {"id": ["selected", "filtered_on"],
                                                 "user_id": ["selected", "joined_on", "grouped_by"]}}
    assert described["paths"]["policies"] == USER_PATHS["policies"]


def test_a_table_no_join_key_links_has_no_path_and_no_route():
    unlinked = _feature("user_costly_quote_count", USER, lambda q: (
        q.select(User, func.count(Quote.id)).outerjoin(Quote, q.on(Quote, Quote.premium_cents > 100_000))
        .group_by(q.key(User))))
    assert lineage(unlinked).paths == {"users": (), "quotes": None}
    assert lineage(unlinked).route("quotes") is None  # any user may be affected
    assert lineage(unlinked).columns["quotes"] == {"id": ("selected",), "premium_cents": ("filtered_on",)}


def test_routes_say_which_column_of_a_changed_row_names_its_entities(scenario_sqlite):
    failed = lineage(REGISTRY.get("user_failed_transaction_count"))
    assert failed.route("users") == Route("users", "id", ())
    assert failed.route("policies") == Route("policies", "user_id", ())
    assert failed.route("policies").direct
    payments = failed.route("payment_transactions")
    assert payments == Route("payment_transactions", "policy_id", (Lookup("policies", "id", "user_id"),))
    assert lineage(REGISTRY.get("quote_creation_to_binding_time")).route("quotes") == Route("quotes", "id", ())
    assert lineage(REGISTRY.get("payment_type")).route("payment_transactions").column == "id"
    assert failed.route("quotes") is None  # not read
    with pytest.raises(ValueError):
        failed.route("policies").statement()

    # Through quotes: two lookups, chained in one statement.
    via_quotes = _feature("user_paid_through_quotes", USER, lambda q: (
        q.select(User, func.count(PaymentTransaction.id))
        .outerjoin(Quote, q.on(Quote, Quote.user_id == User.id))
        .outerjoin(Policy, q.on(Policy, Policy.quote_id == Quote.id))
        .outerjoin(PaymentTransaction, q.on(PaymentTransaction, and_(PaymentTransaction.policy_id == Policy.id)))
        .group_by(q.key(User))))
    chained = lineage(via_quotes).route("payment_transactions")
    assert chained == Route("payment_transactions", "policy_id",
                            (Lookup("policies", "id", "quote_id"), Lookup("quotes", "id", "user_id")))
    engine = create_engine(scenario_sqlite)
    try:
        with engine.connect() as connection:
            # policy_id values of payments 2000 (policy 200, user 2) and 3010 (policy 301, user 3)
            assert {row[0] for row in connection.execute(payments.statement(), {"values": [200, 301]})} == {2, 3}
            assert {row[0] for row in connection.execute(chained.statement(), {"values": [200, 301]})} == {2, 3}
    finally:
        engine.dispose()


def test_features_reading_a_table_or_column():
    by_type = REGISTRY.get
    user_features = [by_type("user_policy_time_of_purchase"), by_type("user_failed_transaction_count")]
    assert features_reading(REGISTRY, "policies") == user_features
    assert features_reading(REGISTRY, "policies", "user_id") == user_features
    assert features_reading(REGISTRY, "policies", "status") == []
    assert features_reading(REGISTRY, "payment_transactions") == [*user_features, by_type("payment_type")]
    assert features_reading(REGISTRY, "payment_transactions", "payment_type") == [by_type("payment_type")]
    assert features_reading(REGISTRY, "users", "email") == []
    assert features_reading(REGISTRY, "no_such_table") == []
    assert {f.entity for f in features_reading(REGISTRY, "quotes")} == {QUOTE}
    assert {f.entity for f in features_reading(REGISTRY, "payment_transactions", "id")} == {USER, PAYMENT_TRANSACTION}


def test_discovery_shows_each_features_lineage(client):
    entries = client.get("/api/v1/features/discovery").get_json()
    assert {entry["feature_type"]: entry["lineage"] for entry in entries} == DECLARED


def test_the_endpoint_lists_the_features_reading_a_column(client):
    answer = client.get("/api/v1/features/lineage?table=policies&column=user_id")
    assert answer.status_code == 200
    path = USER_PATHS["policies"]
    assert answer.get_json() == {"table": "policies", "column": "user_id", "features": [
        {"feature_type": "user_policy_time_of_purchase", "entity_type": "user_id",
         "columns": {"user_id": ["joined_on"]}, "path": path},
        {"feature_type": "user_failed_transaction_count", "entity_type": "user_id",
         "columns": {"user_id": ["joined_on"]}, "path": path}]}
    whole = client.get("/api/v1/features/lineage?table=quotes").get_json()
    assert whole == {"table": "quotes", "column": None, "features": [
        {"feature_type": "quote_creation_to_binding_time", "entity_type": "quote_id",
         "columns": DECLARED["quote_creation_to_binding_time"]["columns"]["quotes"], "path": []}]}
    # A warehouse column no feature reads: known, and read by none.
    assert client.get("/api/v1/features/lineage?table=users&column=email").get_json()["features"] == []


@pytest.mark.parametrize("query, status, words", [
    ("table=nope", 404, "unknown table 'nope'"),
    ("table=policies&column=nope", 404, "unknown column 'nope' of table 'policies'"),
    ("", 400, "table is required"),
    ("column=user_id", 400, "table is required"),
    ("table=policies&column=", 400, "column must not be empty"),
])
def test_the_endpoint_refuses_unknown_and_missing_sources(client, query, status, words):
    answer = client.get(f"/api/v1/features/lineage?{query}")
    assert answer.status_code == status
    body = answer.get_json()
    assert body["success"] is False and words in body["error"] and body["request_id"]


def test_the_cli_shows_lineage_and_readers(embedded_app):
    runner = embedded_app.test_cli_runner()
    shown = runner.invoke(cli_features, ["lineage"])
    assert shown.exit_code == 0
    assert ("  payment_transactions: id [selected], policy_id [joined_on], status [filtered_on]; via "
            "payment_transactions.policy_id = policies.id -> policies.user_id = users.id") in shown.stdout
    assert json.loads(runner.invoke(cli_features, ["lineage", "--json"]).stdout) == DECLARED
    readers = runner.invoke(cli_features, ["lineage", "--table", "policies", "--column", "user_id"])
    assert readers.exit_code == 0
    assert [line.split()[0] for line in readers.stdout.splitlines()] == ["user_policy_time_of_purchase",
                                                                         "user_failed_transaction_count"]
    as_json = json.loads(runner.invoke(cli_features, ["lineage", "--table", "quotes", "--json"]).stdout)
    assert [f["feature_type"] for f in as_json["features"]] == ["quote_creation_to_binding_time"]
    assert "no feature reads users.email" in runner.invoke(cli_features, ["lineage", "--table", "users",
                                                                          "--column", "email"]).stdout
    unknown = runner.invoke(cli_features, ["lineage", "--table", "nope"])
    assert unknown.exit_code == 2 and "unknown table 'nope'" in unknown.stderr
    assert runner.invoke(cli_features, ["lineage", "--column", "user_id"]).exit_code == 2
