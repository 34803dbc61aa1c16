"""Training sets (POST /training-sets) on SQLite and PostgreSQL: a spine in as JSON, CSV or
NDJSON, a table out as JSON, NDJSON, CSV or Parquet, every row's values as of its instant
(against tests/history.py's independent values), in spine order, chunked; and clear 4xx errors."""

from __future__ import annotations

import csv
import io
import json

import pyarrow.parquet as pq
import pytest

from tests import history

BASE = "/api/v1/features/training-sets"
USER_FEATURES = ["user_policy_time_of_purchase", "user_failed_transaction_count"]


@pytest.fixture(params=["sqlite", "postgresql"])
def history_client(request, tmp_path, make_app):
    url = (f"sqlite:///{tmp_path / 'history.db'}" if request.param == "sqlite"
           else request.getfixturevalue("postgres_server_url"))
    history.load(url)

    def make(**settings):
        return make_app(REDIS_URL=None, WAREHOUSE_URL=url, EXTRACT_ON_START=False, **settings).test_client()

    return make


def spine_rows() -> list[dict]:
    """Every user at every instant, twice for one of them (a spine may repeat rows), plus ids
    that never exist, with a label column."""
    rows = []
    for n, moment in enumerate(history.instants()):
        for user in ("10", "11", "12", "404"):
            rows.append({"entity_id": user, "as_of": moment.isoformat() + ("Z" if n % 2 else ""), "label": n % 3})
    rows.append(dict(rows[5]))
    return rows


def expected(rows: list[dict]) -> list[dict]:
    table = []
    for row in rows:
        moment = history.ts(row["as_of"])
        at = history.values_at(moment)
        existed = row["entity_id"] in at["user_failed_transaction_count"]
        table.append({"entity_id": row["entity_id"], "as_of": moment.isoformat(), "label": row["label"],
                      "entity_existed": existed,
                      **{ft: at[ft].get(row["entity_id"]) for ft in USER_FEATURES}})
    return table


@pytest.mark.parametrize("chunk_rows", [50_000, 7])
def test_a_json_spine_gives_every_row_as_of_its_instant(history_client, chunk_rows):
    client = history_client(TRAINING_SET_CHUNK_ROWS=chunk_rows)
    rows = spine_rows()
    response = client.post(BASE, json={"feature_set": "underwriting_v1", "spine": rows})
    assert response.status_code == 200 and response.headers["X-Total-Rows"] == str(len(rows))
    body = response.get_json()
    assert body["columns"] == ["entity_id", "as_of", "label", "entity_existed", *USER_FEATURES]
    assert body["total_rows"] == len(rows) and body["rows"] == expected(rows)


def test_csv_in_and_every_format_out(history_client):
    client = history_client(TRAINING_SET_CHUNK_ROWS=10)
    rows = spine_rows()
    text = "user_id,as_of,label\n" + "".join(f"{r['entity_id']},{r['as_of']},{r['label']}\n" for r in rows)
    want = [dict(row, label=str(row["label"])) for row in expected(rows)]
    query = "?feature_types=user_policy_time_of_purchase,user_failed_transaction_count"

    as_json = client.post(f"{BASE}{query}&format=json", data=text, content_type="text/csv").get_json()
    assert as_json["rows"] == want
    lines = client.post(f"{BASE}{query}&format=ndjson", data=text, content_type="text/csv").get_data().splitlines()
    assert [json.loads(line) for line in lines] == want
    table = list(csv.DictReader(io.StringIO(client.post(f"{BASE}{query}", data=text, content_type="text/csv",
                                                          headers={"Accept": "text/csv"}).get_data(as_text=True))))
    assert table == [{k: ("" if v is None else "true" if v is True else "false" if v is False else str(v))
                      for k, v in row.items()} for row in want]
    parquet = pq.read_table(io.BytesIO(client.post(f"{BASE}{query}&format=parquet", data=text,
                                                   content_type="text/csv").get_data()))
    assert [str(t) for t in parquet.schema.types] == ["string", "timestamp[us]", "string", "bool", "timestamp[us]",
                                                      "int64"]
    assert [{**r, "as_of": r["as_of"].isoformat(), "user_policy_time_of_purchase":
             r["user_policy_time_of_purchase"] and r["user_policy_time_of_purchase"].isoformat()}
            for r in parquet.to_pylist()] == want


def test_ndjson_in_keeps_the_labels_types(history_client):
    client = history_client()
    lines = b'{"entity_id": 10, "as_of": "2024-02-01", "y": 1.5, "ok": true}\n\n' \
            b'{"entity_id": "12", "as_of": "2024-01-03T00:00:00Z", "y": 2, "ok": false}\n'
    body = client.post(f"{BASE}?feature_set=underwriting_v1", data=lines, content_type="application/x-ndjson")
    rows = body.get_json()["rows"]
    assert [(r["entity_id"], r["y"], r["ok"], r["user_failed_transaction_count"]) for r in rows] == [
        ("10", 1.5, True, 2), ("12", 2, False, 0)]
    table = pq.read_table(io.BytesIO(client.post(f"{BASE}?feature_set=underwriting_v1&format=parquet", data=lines,
                                                 content_type="application/x-ndjson").get_data()))
    assert str(table.schema.field("y").type) == "double" and str(table.schema.field("ok").type) == "bool"


@pytest.mark.parametrize(("kwargs", "status", "error"), [
    ({"json": {"feature_types": ["payment_type", "user_failed_transaction_count"], "spine": [
        {"entity_id": 1, "as_of": "2024-01-01"}]}}, 400, "a training set's features must share"),
    ({"json": {"feature_types": ["nope"], "spine": []}}, 400, "feature_types[0]: unknown feature_type 'nope'"),
    ({"json": {"feature_set": "nope", "spine": []}}, 400, "unknown feature_set 'nope'"),
    ({"json": {"spine": []}}, 400, "give either feature_types"),
    ({"json": {"feature_set": "underwriting_v1", "feature_types": ["payment_type"], "spine": []}}, 400,
     "give either feature_types"),
    ({"json": {"feature_set": "underwriting_v1", "spine": {"entity_id": 1}}}, 400, "spine: must be a list"),
    ({"json": {"feature_set": "underwriting_v1", "spine": [{"entity_id": 1, "as_of": "2024-01-01"}, 5]}}, 400,
     "spine[1]: must be an object"),
    ({"json": {"feature_set": "underwriting_v1", "spine": [{"entity_id": 1, "as_of": "2024-01-01"},
                                                           {"entity_id": True, "as_of": "2024-01-01"}]}}, 400,
     "spine[1].entity_id: must be a string or an integer"),
    ({"json": {"feature_set": "underwriting_v1", "spine": [{"entity_id": 1, "as_of": "yesterday"}]}}, 400,
     "spine[0].as_of: must be an ISO 8601 instant"),
    ({"json": {"feature_set": "underwriting_v1", "spine": [{"entity_id": 1, "as_of": "2024-01-01"},
                                                           {"entity_id": 1, "as_of": "2024-01-01", "z": 1}]}}, 400,
     "spine[1]: column 'z' is not in the spine's first row"),
    ({"json": {"feature_set": "underwriting_v1", "spine": [{"entity_id": 1, "as_of": "2024-01-01",
                                                            "user_failed_transaction_count": 3}]}}, 400,
     "spine[0]: column 'user_failed_transaction_count' would clash with an output column"),
    ({"data": "entity_id,as_of\n1,2024-01-01\n2\n", "content_type": "text/csv"}, 400,
     "spine line 3: 1 fields, the header has 2"),
    ({"data": "id,when\n1,2024-01-01\n", "content_type": "text/csv"}, 400, "the CSV header: the spine needs an"),
    ({"data": "", "content_type": "text/csv"}, 400, "the spine is empty"),
    ({"data": b"entity_id,as_of\n\xff,2024-01-01\n", "content_type": "text/csv"}, 400, "the spine is not UTF-8"),
    ({"data": '{"entity_id": 1, "as_of": "2024-01-01"}\n{oops\n', "content_type": "application/x-ndjson"}, 400,
     "spine line 2: not valid JSON"),
    ({"json": {"feature_set": "underwriting_v1", "spine": [{"entity_id": 1, "as_of": "2024-01-01", "y": 2**64}]}},
     400, "spine[0].y: integers must fit in 64 bits"),
    ({"json": {"feature_set": "underwriting_v1", "spine": [{"entity_id": "", "as_of": "2024-01-01"}]}}, 400,
     "spine[0].entity_id: must not be empty"),
    ({"data": "entity_id,as_of\n,2024-01-01\n", "content_type": "text/csv"}, 400,
     "spine line 2.entity_id: must not be empty"),
    ({"data": "entity_id,user_id,as_of\n1,1,2024-01-01\n", "content_type": "text/csv"}, 400,
     "the CSV header: both entity_id and user_id columns"),
])
def test_malformed_training_set_requests_are_400s_naming_what_is_wrong(history_client, kwargs, status, error):
    client = history_client()
    query = "" if "json" in kwargs else "?feature_set=underwriting_v1"
    response = client.post(BASE + query, **kwargs)
    assert response.status_code == status
    body = response.get_json()
    assert body["success"] is False and body["error"].startswith(error), body["error"]


def test_a_spine_over_the_limits_is_413(history_client):
    client = history_client(TRAINING_SET_MAX_ROWS=3, TRAINING_SET_MAX_BYTES=200)
    rows = "".join(f"10,2024-02-0{d}\n" for d in range(1, 5))
    response = client.post(f"{BASE}?feature_set=underwriting_v1", data="entity_id,as_of\n" + rows,
                           content_type="text/csv")
    assert response.status_code == 413 and "more than 3 rows" in response.get_json()["error"]
    big = "entity_id,as_of\n" + "10,2024-02-01\n" * 20
    response = client.post(f"{BASE}?feature_set=underwriting_v1", data=big, content_type="text/csv")
    assert response.status_code == 413 and "larger than 200 bytes" in response.get_json()["error"]


def test_an_unknown_format_is_a_400(history_client):
    response = history_client().post(f"{BASE}?format=xml", json={"feature_set": "underwriting_v1", "spine": []})
    assert response.status_code == 400 and "format must be one of json, ndjson, csv, parquet" in \
        response.get_json()["error"]


def test_an_excel_csv_with_a_byte_order_mark_and_json_labels_in_csv_out(history_client):
    client = history_client()
    text = "\ufeffentity_id,as_of\n10,2024-02-01\n".encode()
    response = client.post(f"{BASE}?feature_set=underwriting_v1&format=json", data=text, content_type="text/csv")
    assert response.status_code == 200 and response.get_json()["rows"][0]["user_failed_transaction_count"] == 2
    lines = b'{"entity_id": 10, "as_of": "2024-02-01", "y": {"a": 1}, "z": 1e16}\n'
    out = client.post(f"{BASE}?feature_set=underwriting_v1&format=csv", data=lines,
                      content_type="application/x-ndjson").get_data(as_text=True)
    assert list(csv.DictReader(io.StringIO(out)))[0] | {} == {
        "entity_id": "10", "as_of": "2024-02-01T00:00:00", "y": '{"a":1}', "z": "1e+16", "entity_existed": "true",
        "user_policy_time_of_purchase": "2024-01-08T00:00:00", "user_failed_transaction_count": "2"}



def test_a_web_process_builds_at_most_its_limit_of_training_sets_at_once(history_client):
    client = history_client(TRAINING_SET_CONCURRENCY=1)
    services = client.application.extensions["feature_store"]
    body = {"feature_set": "underwriting_v1", "spine": [{"entity_id": 10, "as_of": "2024-02-01"}]}
    assert services.heavy.acquire(blocking=False)  # one being built
    try:
        busy = client.post(BASE, json=body)
        assert busy.status_code == 503 and "TRAINING_SET_CONCURRENCY" in busy.get_json()["error"]
        assert client.get("/api/v1/features/parity").status_code == 503
    finally:
        services.heavy.release()
    response = client.post(BASE, json=body)
    assert response.status_code == 200 and response.get_json()["rows"][0]["user_failed_transaction_count"] == 2
    assert services.heavy.acquire(blocking=False)  # released once the table was written
    services.heavy.release()
