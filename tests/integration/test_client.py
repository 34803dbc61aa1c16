"""The Python client (client/, package feature_store_client) against a real deployment: gunicorn
(`python -m feature_store`) on a free port with API keys, a real rq worker and the session's
redis-server over a demo warehouse; its retries and errors against small scripted HTTP servers;
and `pip install ./client` into a fresh venv, where it imports without the server's dependencies.

The client is imported from the source tree (client/ on sys.path): nothing is installed here."""

from __future__ import annotations

import io
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import threading
import time
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import requests

from feature_store.warehouse import demo
from tests.conftest import PROJECT_DIR, Worker, free_port, wait_for, web_process

sys.path.insert(0, str(PROJECT_DIR / "client"))
import feature_store_client as fsc  # noqa: E402
from feature_store_client import FeatureStoreClient  # noqa: E402

ADMIN_KEY = "client-admin-key"
READ_KEY = "client-read-key"
FEATURES = ("user_policy_time_of_purchase", "quote_creation_to_binding_time", "user_failed_transaction_count",
            "payment_type")
USERS = 300


class Deployment:
    """gunicorn + one rq worker over a demo warehouse, for the whole module."""

    def __init__(self, base: str, warehouse: Path, redis_url: str, worker: Worker) -> None:
        self.base = base
        self.api = f"{base}/api/v1/features"
        self.warehouse = warehouse
        self.redis_url = redis_url
        self.worker = worker

    def raw(self, method: str, path: str, **kwargs) -> requests.Response:
        """The same call without the client (plain requests, admin key), to compare with."""
        headers = {"X-API-Key": ADMIN_KEY, **kwargs.pop("headers", {})}
        return requests.request(method, f"{self.api}{path}", headers=headers, timeout=30, **kwargs)

    def swap_worker(self, warehouse_url: str) -> None:
        self.worker.stop()
        self.worker = Worker(self.redis_url, warehouse_url)


@pytest.fixture(scope="module")
def deployment(redis_server, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("client")
    redis_server.client().flushall()
    warehouse = tmp / "demo.db"
    url = f"sqlite:///{warehouse}"
    demo.generate(url, users=USERS, seed=5)
    worker = Worker(redis_server.url, url)
    in_place = [worker]  # the worker to stop at the end (a test may swap it)
    try:
        with web_process(tmp, REDIS_URL=redis_server.url, WAREHOUSE_URL=url, WEB_CONCURRENCY=2,
                         API_KEYS_ADMIN=ADMIN_KEY, API_KEYS_READ=READ_KEY) as base:
            deployed = Deployment(base, warehouse, redis_server.url, worker)
            try:
                yield deployed
            finally:
                in_place[0] = deployed.worker
    finally:
        in_place[0].stop()


@pytest.fixture
def store(deployment):
    client = FeatureStoreClient(deployment.base, api_key=ADMIN_KEY, timeout=30)
    yield client
    client.close()


def responses_of(client: FeatureStoreClient) -> list[requests.Response]:
    """Every answer the client's session gets from now on."""
    seen: list[requests.Response] = []
    client.session.hooks["response"].append(lambda response, *args, **kwargs: seen.append(response))
    return seen


def table_count(warehouse: Path, table: str) -> int:
    with sqlite3.connect(warehouse) as rows:
        return rows.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]


# -- discovery and values -----------------------------------------------------------------------

def test_discovery_lists_the_catalog_and_the_feature_sets(store, deployment):
    features = store.features()
    raw = deployment.raw("GET", "/discovery").json()
    assert [f.feature_type for f in features] == list(FEATURES) == [e["feature_type"] for e in raw]
    by_type = {f.feature_type: f for f in features}
    assert by_type["quote_creation_to_binding_time"].entity_type == "quote_id"
    assert by_type["quote_creation_to_binding_time"].data_type == "integer"
    assert by_type["user_policy_time_of_purchase"].data_type == "datetime"
    assert "underwriting_v1" in by_type["user_failed_transaction_count"].feature_sets
    for feature, entry in zip(features, raw, strict=True):
        assert feature.raw == entry
        assert feature.name == entry["name"] and feature.description == entry["description"]
        assert feature.created_at == datetime.fromisoformat(entry["created_at"])

    sets = store.feature_sets()
    assert [s.name for s in sets] == [e["name"] for e in deployment.raw("GET", "/feature-sets").json()]
    underwriting = next(s for s in sets if s.name == "underwriting_v1")
    assert underwriting.entity_type == "user_id"
    assert set(underwriting.feature_types) <= set(FEATURES)


def test_value_and_lookup_match_the_server(store, deployment):
    for feature_type, entity_id in [("user_failed_transaction_count", 24), ("payment_type", "7"),
                                    ("quote_creation_to_binding_time", 3), ("user_policy_time_of_purchase", 26)]:
        raw = deployment.raw("POST", "/inference", json={"feature_type": feature_type, "entity_id": entity_id}).json()
        assert store.value(feature_type, entity_id) == raw["feature_value"]
        found = store.lookup(feature_type, entity_id)
        assert found.ok and found.error is None
        assert (found.feature_type, found.entity_id, found.value) == (feature_type, str(entity_id),
                                                                     raw["feature_value"])
        assert isinstance(found.computed_at, datetime) and found.as_of is None

    # as_of: a datetime (naive is UTC), an aware one, or a string; the answer echoes it in UTC.
    raw = deployment.raw("POST", "/inference", json={"feature_type": "user_failed_transaction_count",
                                                     "entity_id": 24, "as_of": "2024-10-01T00:00:00Z"}).json()
    found = store.lookup("user_failed_transaction_count", 24, as_of=datetime(2024, 10, 1))
    assert found.value == raw["feature_value"] and found.as_of == datetime(2024, 10, 1)
    assert store.value("user_failed_transaction_count", 24, as_of=pd.Timestamp("2024-10-01T02:00:00+02:00")) \
        == raw["feature_value"]
    assert store.value("user_failed_transaction_count", 24, as_of="2024-10-01T00:00:00Z") == raw["feature_value"]


def test_unknown_features_and_entities_raise_not_found_with_the_servers_message(store):
    with pytest.raises(fsc.NotFound) as caught:
        store.value("payment_type", 999_999)
    assert caught.value.status == 404
    assert caught.value.message == "no payment_type value: entity '999999' does not exist"
    assert caught.value.request_id
    assert caught.value.request_id in str(caught.value) and "HTTP 404" in str(caught.value)

    with pytest.raises(fsc.NotFound) as caught:
        store.value("no_such_feature", 1)
    assert caught.value.message.startswith("unknown feature_type 'no_such_feature'; known feature types: ")
    assert caught.value.body["known_feature_types"] == list(FEATURES)

    with pytest.raises(fsc.NotFound, match="did not exist at 2000-01-01T00:00:00"):
        store.lookup("user_failed_transaction_count", 24, as_of="2000-01-01")
    with pytest.raises(fsc.NotFound, match="unknown feature_set 'nope'"):
        store.feature_set("nope", 24)
    with pytest.raises(fsc.NotFound, match="entity '999999' does not exist"):
        store.feature_set("underwriting_v1", 999_999)
    with pytest.raises(fsc.BadRequest, match="as_of: must be an ISO 8601 instant"):
        store.value("payment_type", 1, as_of="yesterday")
    with pytest.raises(TypeError, match="entity_id must be a string or an integer"):
        store.value("payment_type", True)


def test_feature_set_values_for_one_entity(store, deployment):
    for entity_id, as_of in [(26, None), (24, "2024-10-01T00:00:00")]:
        body = {"feature_set": "underwriting_v1", "entity_id": entity_id, **({"as_of": as_of} if as_of else {})}
        raw = deployment.raw("POST", "/inference", json=body).json()
        values = store.feature_set("underwriting_v1", entity_id, as_of=as_of)
        assert values == {name: entry["feature_value"] for name, entry in raw["values"].items()}
        assert list(values) == [f.feature_type for f in store.features() if "underwriting_v1" in f.feature_sets]


def test_values_are_chunked_under_max_items_and_come_back_in_request_order(deployment):
    quotes = table_count(deployment.warehouse, "quotes")
    items = []
    for n in range(1, 8):
        items += [("user_failed_transaction_count", n), ("payment_type", str(n)),
                  {"feature_type": "quote_creation_to_binding_time", "entity_id": quotes - n}]
    items += [("user_failed_transaction_count", 24, "2024-10-01T00:00:00Z"),   # as of an instant
              ("user_failed_transaction_count", 24, datetime(2000, 1, 1)),     # before the user existed
              ("payment_type", "no-such-id"), ("no_such_feature", 1), ("user_policy_time_of_purchase", 5)]
    assert len(items) == 26

    as_json = [{"feature_type": i["feature_type"], "entity_id": i["entity_id"]} if isinstance(i, dict) else
               {"feature_type": i[0], "entity_id": i[1],
                **({"as_of": i[2] if isinstance(i[2], str) else i[2].isoformat()} if len(i) == 3 else {})}
               for i in items]
    expected = deployment.raw("POST", "/training", json={"features": as_json}).json()["results"]

    with FeatureStoreClient(deployment.base, api_key=ADMIN_KEY, max_items=4) as store:
        seen = responses_of(store)
        results = store.values(items)
    sent = [json.loads(r.request.body)["features"] for r in seen]
    assert [len(chunk) for chunk in sent] == [4, 4, 4, 4, 4, 4, 2]  # ceil(26 / 4) requests, in order
    assert [item for chunk in sent for item in chunk] == as_json

    assert len(results) == len(items)
    for result, want in zip(results, expected, strict=True):
        assert (result.feature_type, result.entity_id, result.value, result.ok) == (
            want["feature_type"], want["entity_id"], want["feature_value"], want["success"])
        assert result.error == want.get("error")
    assert results[21].as_of == datetime(2024, 10, 1) and results[21].ok
    assert not results[22].ok and "did not exist at 2000-01-01T00:00:00" in results[22].error
    assert not results[23].ok and results[23].error == "no payment_type value: entity 'no-such-id' does not exist"
    assert not results[24].ok and results[24].error.startswith("unknown feature_type 'no_such_feature'")
    assert results[24].value is None

    # Bodies are kept within max_body_bytes too; one request when everything fits.
    with FeatureStoreClient(deployment.base, api_key=ADMIN_KEY, max_body_bytes=400) as store:
        seen = responses_of(store)
        again = store.values(items)
    assert len(seen) > 1 and all(len(r.request.body) <= 400 for r in seen)
    assert [r.value for r in again] == [r.value for r in results]
    with FeatureStoreClient(deployment.base, api_key=ADMIN_KEY) as store:
        seen = responses_of(store)
        assert [r.value for r in store.values(items)] == [r.value for r in results]
    assert len(seen) == 1
    assert store.values([]) == []

    with pytest.raises(TypeError, match=r"items\[1\]: entity_id must be a string or an integer"):
        store.values([("payment_type", 1), ("payment_type", 1.5)])


# -- training sets --------------------------------------------------------------------------------

def test_training_set_from_a_dataframe_as_a_dataframe(store, deployment):
    spine = pd.DataFrame({
        "user_id": [24, 24, 26, 99_999, 5, 1],
        "as_of": pd.to_datetime(["2024-10-01T00:00:00Z", "2025-06-01", "2025-01-01", "2025-01-01",
                                 "2024-06-01T12:30:00.5", "2030-01-01"], utc=True, format="ISO8601"),
        "label": [0, 1, 1, 0, 1, 0],
        "weight": [0.5, 1.0, 1.5, 2.0, 2.5, 3.0],
        "note": ["a", "b,c", 'd "quoted"', "", "e", "f"],
    }, index=[10, 11, 12, 13, 14, 15])
    frame = store.training_set(spine, feature_set="underwriting_v1")

    set_types = [f.feature_type for f in store.features() if "underwriting_v1" in f.feature_sets]
    assert list(frame.columns) == ["entity_id", "as_of", "label", "weight", "note", "entity_existed", *set_types]
    assert list(frame.index) == list(spine.index)
    assert frame["label"].dtype == spine["label"].dtype and frame["weight"].dtype == spine["weight"].dtype
    assert list(frame["label"]) == list(spine["label"]) and list(frame["note"]) == list(spine["note"])
    assert frame["entity_existed"].dtype == bool
    assert str(frame["user_failed_transaction_count"].dtype) == "Int64"
    assert frame["as_of"].dtype.kind == "M" and frame["user_policy_time_of_purchase"].dtype.kind == "M"

    # The same table as the server's own JSON output.
    rows = [{"entity_id": int(r.user_id), "as_of": r.as_of.isoformat(), "label": int(r.label)}
            for r in spine.itertuples()]
    expected = deployment.raw("POST", "/training-sets", json={"feature_set": "underwriting_v1",
                                                              "spine": rows}).json()["rows"]
    assert list(frame["entity_id"]) == [row["entity_id"] for row in expected]
    assert list(frame["entity_existed"]) == [row["entity_existed"] for row in expected]
    assert [t.isoformat() for t in frame["as_of"]] == [datetime.fromisoformat(row["as_of"]).isoformat()
                                                       for row in expected]
    for name in set_types:
        got = [None if pd.isna(v) else v for v in frame[name]]
        if name == "user_policy_time_of_purchase":
            got = [None if v is None else v.isoformat() for v in got]
            want = [None if row[name] is None else datetime.fromisoformat(row[name]).isoformat() for row in expected]
        else:
            want = [row[name] for row in expected]
        assert got == want, name
    assert expected[3]["entity_existed"] is False and pd.isna(frame["user_failed_transaction_count"].iloc[3])

    # feature_types instead of a set; the spine may name its id column entity_id.
    other = store.training_set(spine.rename(columns={"user_id": "entity_id"})[["entity_id", "as_of"]],
                               feature_types=["user_failed_transaction_count"])
    assert list(other.columns) == ["entity_id", "as_of", "entity_existed", "user_failed_transaction_count"]
    assert other["user_failed_transaction_count"].equals(frame["user_failed_transaction_count"])


def test_training_set_streams_a_spine_iterator_and_returns_an_arrow_table(store, deployment):
    rows = 30_000
    generated = 0

    def spine():
        nonlocal generated
        for n in range(rows):
            generated += 1
            yield {"entity_id": n % (USERS + 20) + 1, "as_of": f"2024-{n % 12 + 1:02d}-15T08:00:00", "label": n}

    seen = responses_of(store)
    table = store.training_set(spine(), feature_types=["user_failed_transaction_count", "user_policy_time_of_purchase"],
                               format="arrow", chunk_rows=2_000)
    assert isinstance(table, pa.Table) and table.num_rows == rows == generated
    request = seen[-1].request
    assert request.headers.get("Transfer-Encoding") == "chunked" and "Content-Length" not in request.headers
    assert request.headers["Content-Type"] == "application/x-ndjson"
    assert seen[-1].headers["X-Total-Rows"] == str(rows)
    assert table.schema.field("label").type == pa.int64()  # typed by the server from the JSON values
    assert table.schema.field("as_of").type == pa.timestamp("us")
    assert table.column("label").to_pylist() == list(range(rows))
    assert table.column("entity_id").to_pylist() == [str(n % (USERS + 20) + 1) for n in range(rows)]
    assert table.column("entity_existed").to_pylist()[USERS - 1:USERS + 1] == [True, False]

    # The same values as the server's CSV for the same spine.
    csv_spine = "entity_id,as_of,label\n" + "".join(
        f"{n % (USERS + 20) + 1},2024-{n % 12 + 1:02d}-15T08:00:00,{n}\n" for n in range(rows))
    answer = deployment.raw("POST", "/training-sets", params={
        "feature_types": "user_failed_transaction_count,user_policy_time_of_purchase", "format": "parquet"},
        data=csv_spine.encode(), headers={"Content-Type": "text/csv"})
    expected = pq.read_table(io.BytesIO(answer.content))
    for name in ("entity_id", "as_of", "entity_existed", "user_failed_transaction_count",
                 "user_policy_time_of_purchase"):
        assert table.column(name).equals(expected.column(name)), name

    # A DataFrame spine to Arrow keeps its own column types (CSV carries text).
    small = pd.DataFrame({"user_id": [1, 2], "as_of": ["2025-01-01", "2025-01-02"], "flag": [True, False]})
    table = store.training_set(small, feature_set="underwriting_v1", format="arrow")
    assert table.schema.field("flag").type == pa.bool_() and table.column("flag").to_pylist() == [True, False]
    assert seen[-1].request.headers["Content-Type"] == "text/csv"


def test_training_set_errors(store):
    spine = pd.DataFrame({"user_id": [1], "as_of": ["2025-01-01"]})
    with pytest.raises(fsc.BadRequest, match="unknown feature_set 'nope'") as caught:
        store.training_set(spine, feature_set="nope")
    assert caught.value.status == 400 and caught.value.request_id
    with pytest.raises(fsc.BadRequest, match="must share the spine's entity type"):
        store.training_set(spine, feature_types=["payment_type", "user_failed_transaction_count"])
    with pytest.raises(fsc.BadRequest, match=r"spine line 2\.as_of: must be an ISO 8601 instant"):
        store.training_set(pd.DataFrame({"user_id": [1], "as_of": ["soon"]}), feature_set="underwriting_v1")
    with pytest.raises(fsc.BadRequest, match="needs an as_of column"):
        store.training_set([{"user_id": 1}], feature_set="underwriting_v1")
    with pytest.raises(ValueError, match="either feature_set"):
        store.training_set(spine)
    with pytest.raises(ValueError, match="format must be"):
        store.training_set(spine, feature_set="underwriting_v1", format="csv")


# -- extraction -----------------------------------------------------------------------------------

def test_extract_waits_for_the_run_with_a_progress_line(store, deployment, capsys):
    run = store.extract(progress=True)
    assert run.status == "finished" and run.ok and run.done
    assert set(run.features_extracted) == set(FEATURES)
    assert run.features_extracted["user_failed_transaction_count"] == table_count(deployment.warehouse, "users")
    assert run.features_extracted["payment_type"] == table_count(deployment.warehouse, "payment_transactions")
    assert run.total_features == sum(run.features_extracted.values())
    assert run.failed_features == {} and run.result["stages"]
    err = capsys.readouterr().err
    assert f"extraction {run.job_id}: finished, {run.total_features:,} values of 4 features in " in err

    assert store.run(run.job_id) == run
    assert store.runs(limit=5)[0].job_id == run.job_id
    assert store.runs(limit=5)[0].features_extracted == run.features_extracted

    some = store.extract(feature_types=["payment_type"])
    assert set(some.features_extracted) == {"payment_type"} and some.feature_types == ("payment_type",)

    accepted = store.extract(wait=False)
    assert accepted.job_id.startswith("extract-") and accepted.workers == 1
    assert accepted.status in ("queued", "started", "finished")
    wait_for(lambda: store.run(accepted.job_id).done, timeout=30, what="the run to end")
    assert store.run(accepted.job_id).status == "finished"

    with pytest.raises(fsc.NotFound, match="no extraction job 'extract-nope'"):
        store.run("extract-nope")
    with pytest.raises(fsc.BadRequest, match=r"feature_types\[0\]: unknown feature_type 'nope'"):
        store.extract(feature_types=["nope"])


def test_a_failed_extraction_raises_extraction_failed(store, deployment, tmp_path):
    broken = tmp_path / "no-quotes.db"
    shutil.copy(deployment.warehouse, broken)
    with sqlite3.connect(broken) as rows:
        rows.execute("DROP TABLE quotes")
    deployment.swap_worker(f"sqlite:///{broken}")
    try:
        with pytest.raises(fsc.ExtractionFailed) as caught:
            store.extract(timeout=60)
    finally:
        deployment.swap_worker(f"sqlite:///{deployment.warehouse}")
    failed = caught.value
    assert set(failed.failed_features) == {"quote_creation_to_binding_time"}
    assert "no such table: quotes" in failed.failed_features["quote_creation_to_binding_time"]
    assert set(failed.features_extracted) == set(FEATURES) - {"quote_creation_to_binding_time"}
    assert failed.total_features == sum(failed.features_extracted.values())
    assert failed.message.startswith("extraction failed for 1 feature (quote_creation_to_binding_time")
    assert failed.job_id.startswith("extract-") and failed.run.status == "failed"
    assert isinstance(failed, fsc.ServerError)
    assert store.runs(limit=1)[0].status == "failed"
    assert store.extract().ok  # the good worker again


def test_extract_timeout_leaves_the_run_going(deployment):
    deployment.worker.stop()  # nothing takes the run
    try:
        with FeatureStoreClient(deployment.base, api_key=ADMIN_KEY) as store:
            with pytest.warns(fsc.FeatureStoreWarning, match="no worker listens on the extraction queue"):
                with pytest.raises(fsc.ExtractionTimeout, match="still queued after 0.5 s") as caught:
                    store.extract(timeout=0.5)
            assert store.run(caught.value.job_id).status == "queued"
    finally:
        deployment.worker = Worker(deployment.redis_url, f"sqlite:///{deployment.warehouse}")
    with FeatureStoreClient(deployment.base, api_key=ADMIN_KEY) as store:
        wait_for(lambda: store.run(caught.value.job_id).done, timeout=30, what="the queued run to end")


# -- API keys -------------------------------------------------------------------------------------

def test_api_key_errors_raise_unauthorized_with_the_servers_message_and_request_id(deployment):
    with FeatureStoreClient(deployment.base) as anonymous:
        seen = responses_of(anonymous)
        with pytest.raises(fsc.Unauthorized) as caught:
            anonymous.features()
    assert caught.value.status == 401 and type(caught.value) is fsc.Unauthorized
    assert caught.value.message == "missing API key: send it in the X-API-Key header"
    assert len(seen) == 1  # a 401 is not retried
    assert caught.value.request_id == seen[0].headers["X-Request-ID"] == seen[0].json()["request_id"]

    with FeatureStoreClient(deployment.base, api_key="wrong") as wrong:
        with pytest.raises(fsc.Unauthorized, match="invalid API key"):
            wrong.value("payment_type", 1)

    with FeatureStoreClient(deployment.base, api_key=READ_KEY) as reader:
        assert reader.value("payment_type", 1) is not None
        assert len(reader.features()) == len(FEATURES)
        with pytest.raises(fsc.Forbidden) as caught:
            reader.extract()
        assert caught.value.status == 403 and "admin scope needed" in caught.value.message
        assert isinstance(caught.value, fsc.Unauthorized) and caught.value.request_id
        with pytest.raises(fsc.Forbidden):
            reader.runs()


# -- retries and errors, against scripted servers -------------------------------------------------

class Scripted:
    """A local HTTP server answering from a script: each entry is (status, body, headers), or
    "close" (read the request, then close the connection without answering), or ("sleep", s)."""

    def __init__(self, script: list) -> None:
        self.script = list(script)
        self.requests: list[tuple[str, str, bytes]] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def body(self) -> bytes:
                if self.headers.get("Transfer-Encoding") == "chunked":
                    data = b""
                    while (size := int(self.rfile.readline().strip() or b"0", 16)) > 0:
                        data += self.rfile.read(size)
                        self.rfile.readline()
                    self.rfile.readline()
                    return data
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def handle_one(self):
                owner.requests.append((self.command, self.path, self.body()))
                step = owner.script.pop(0) if owner.script else (500, {"error": "script ran out"}, {})
                if step == "close":
                    self.close_connection = True
                    return
                if step[0] == "sleep":
                    time.sleep(step[1])
                    step = (200, [], {})
                status, body, headers = step
                data = body if isinstance(body, bytes) else json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                for name, value in headers.items():
                    self.send_header(name, value)
                if "Content-Length" not in headers:
                    self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = handle_one

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def __enter__(self) -> Scripted:
        self.thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.server.shutdown()
        self.server.server_close()


UNAVAILABLE = (503, {"success": False, "error": "the online store is unavailable", "request_id": "rid-503"}, {})
CATALOG = [{"feature_type": "payment_type", "name": "Payment Type", "description": "d",
            "entity_type": "payment_transaction_id", "data_type": "string", "created_at": "2025-01-01T00:00:00",
            "version": 1, "feature_sets": []}]


def scripted_client(url: str, **kwargs) -> tuple[FeatureStoreClient, list[float]]:
    client = FeatureStoreClient(url, **{"timeout": 5, **kwargs})
    slept: list[float] = []
    client._sleep = slept.append
    return client, slept


def test_503_is_retried_with_exponential_backoff_then_succeeds():
    with Scripted([UNAVAILABLE, UNAVAILABLE, (200, CATALOG, {})]) as server:
        client, slept = scripted_client(server.url, retries=3, backoff=0.5)
        with client:
            features = client.features()
    assert [f.feature_type for f in features] == ["payment_type"]
    assert len(server.requests) == 3 and slept == [0.5, 1.0]

    # Retry-After is honoured; the delay still doubles after it.
    with Scripted([(503, {"error": "busy"}, {"Retry-After": "3"}), UNAVAILABLE, (200, CATALOG, {})]) as server:
        client, slept = scripted_client(server.url, retries=3, backoff=0.5)
        with client:
            client.features()
    assert slept == [3.0, 1.0]

    # Reads sent as POST are retried the same way.
    value = {"feature_type": "payment_type", "entity_id": "1", "feature_value": "Credit",
             "computed_at": "2026-01-01T00:00:00", "success": True}
    with Scripted([UNAVAILABLE, (200, value, {})]) as server:
        client, slept = scripted_client(server.url)
        with client:
            assert client.value("payment_type", 1) == "Credit"
    assert [r[:2] for r in server.requests] == [("POST", "/api/v1/features/inference")] * 2


def test_503_after_the_last_retry_raises_unavailable_with_the_servers_message():
    with Scripted([UNAVAILABLE, UNAVAILABLE, UNAVAILABLE]) as server:
        client, slept = scripted_client(server.url, retries=1)
        with client, pytest.raises(fsc.Unavailable) as caught:
            client.features()
    assert len(server.requests) == 2 and slept == [0.5]
    assert caught.value.status == 503 and caught.value.message == "the online store is unavailable"
    assert caught.value.request_id == "rid-503"
    assert str(caught.value) == "the online store is unavailable (HTTP 503, request rid-503)"


@pytest.mark.parametrize(("status", "error"), [(400, fsc.BadRequest), (404, fsc.NotFound), (413, fsc.TooLarge),
                                               (500, fsc.ServerError), (502, fsc.ServerError)])
def test_other_errors_are_not_retried(status, error):
    with Scripted([(status, {"success": False, "error": f"said {status}", "request_id": "r1"}, {})] * 3) as server:
        client, slept = scripted_client(server.url)
        with client, pytest.raises(error) as caught:
            client.features()
    assert len(server.requests) == 1 and slept == []
    assert (caught.value.status, caught.value.message, caught.value.request_id) == (status, f"said {status}", "r1")

    # An error that is not JSON (a proxy's page) still raises, with what it said.
    with Scripted([(status, b"<html>bad gateway</html>", {"X-Request-ID": "r2"})]) as server:
        client, _ = scripted_client(server.url)
        with client, pytest.raises(error) as caught:
            client.features()
    assert "<html>bad gateway</html>" in caught.value.message and caught.value.request_id == "r2"


def test_which_calls_are_retried_when_the_connection_fails():
    accepted = (202, {"job_id": "extract-1", "status": "queued", "joined": False, "workers": 1}, {})
    finished = (200, {"job_id": "extract-1", "status": "finished", "result": {
        "features_extracted": {"payment_type": 3}, "total_features": 3, "failed_features": {}}}, {})

    # A read whose connection is lost after it was sent is retried ...
    with Scripted(["close", (200, CATALOG, {})]) as server:
        client, slept = scripted_client(server.url)
        with client:
            assert len(client.features()) == 1
    assert len(server.requests) == 2 and slept == [0.5]

    # ... POST /extract is not: the server may have started a run.
    with Scripted(["close", accepted, finished]) as server:
        client, slept = scripted_client(server.url)
        with client, pytest.raises(fsc.Unavailable, match="POST /api/v1/features/extract: the connection to "
                                                          ".* broke before an answer"):
            client.extract()
    assert len(server.requests) == 1 and slept == []

    # POST /extract is retried on 503 (the server did not start it) ...
    with Scripted([UNAVAILABLE, accepted, finished]) as server:
        client, slept = scripted_client(server.url)
        with client:
            run = client.extract()
    assert run.features_extracted == {"payment_type": 3} and run.total_features == 3
    assert [r[:2] for r in server.requests] == [("POST", "/api/v1/features/extract?wait=false")] * 2 + [
        ("GET", "/api/v1/features/extract/extract-1")]

    # ... and when nothing was sent (connection refused), like every call.
    client, slept = scripted_client(f"http://127.0.0.1:{free_port()}", retries=2)
    with client, pytest.raises(fsc.Unavailable, match=r"cannot connect to .* \(after 3 attempts\)") as caught:
        client.extract()
    assert slept == [0.5, 1.0] and caught.value.status is None


def test_timeouts_raise_request_timeout():
    with Scripted([("sleep", 1.0), ("sleep", 1.0)]) as server:
        client, slept = scripted_client(server.url, timeout=0.2, retries=1)
        with client, pytest.raises(fsc.RequestTimeout, match="no answer from .* within 0.2 s"):
            client.features()
    assert len(server.requests) == 2 and isinstance(fsc.RequestTimeout("x"), fsc.Unavailable)


def parquet(rows: int) -> bytes:
    table = pa.table({"entity_id": [str(n) for n in range(rows)], "as_of": pa.array([datetime(2025, 1, 1)] * rows),
                      "entity_existed": [True] * rows, "payment_type": ["Credit"] * rows})
    sink = io.BytesIO()
    pq.write_table(table, sink)
    return sink.getvalue()


def test_training_sets_that_come_back_short_raise_incomplete_response():
    spine = [{"entity_id": n, "as_of": "2025-01-01"} for n in range(3)]
    # The server announces 3 rows; the table has 2.
    with Scripted([(200, parquet(2), {"X-Total-Rows": "3"})]) as server:
        client, _ = scripted_client(server.url)
        with client, pytest.raises(fsc.IncompleteResponse, match="has 2 rows; the server announced 3"):
            client.training_set(spine, feature_types=["payment_type"], format="arrow")
    assert server.requests[0][2].count(b"\n") == 3  # the spine went as NDJSON, one line per row

    # Cut off mid-stream: the file ends before its declared length.
    data = parquet(3)
    with Scripted([(200, data[:-40], {"X-Total-Rows": "3", "Content-Length": str(len(data))})]) as server:
        client, _ = scripted_client(server.url)
        with client, pytest.raises(fsc.IncompleteResponse, match="cut off mid-stream"):
            client.training_set(spine, feature_types=["payment_type"], format="arrow")

    with Scripted([(200, parquet(3), {"X-Total-Rows": "3"})]) as server:
        client, _ = scripted_client(server.url)
        with client:
            assert client.training_set(spine, feature_types=["payment_type"], format="arrow").num_rows == 3


def test_a_one_shot_spine_is_not_sent_twice():
    spine = [{"entity_id": n, "as_of": "2025-01-01"} for n in range(3)]
    ok = (200, parquet(3), {"X-Total-Rows": "3"})
    # A list is sent again from the start after a 503 ...
    with Scripted([UNAVAILABLE, ok]) as server:
        client, _ = scripted_client(server.url)
        with client:
            assert client.training_set(spine, feature_types=["payment_type"], format="arrow").num_rows == 3
    assert len(server.requests) == 2 and server.requests[0][2] == server.requests[1][2]
    # ... a generator, once consumed, cannot be.
    with Scripted([UNAVAILABLE, ok]) as server:
        client, _ = scripted_client(server.url)
        with client, pytest.raises(fsc.Unavailable):
            client.training_set(iter(spine), feature_types=["payment_type"], format="arrow")
    assert len(server.requests) == 1


# -- installed on its own -------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.timeout(300)
def test_pip_install_client_into_a_fresh_venv_needs_only_requests(deployment, tmp_path):
    """`pip install ./client` (from PyPI: requests and its own dependencies, nothing else) in a new
    venv; the package imports without Flask, pandas or the server, and talks to the deployment."""
    source = tmp_path / "client"
    shutil.copytree(PROJECT_DIR / "client", source, ignore=shutil.ignore_patterns("build", "*.egg-info",
                                                                                   "__pycache__"))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = str(venv / "bin" / "python")
    installed = subprocess.run([python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                                str(source)], capture_output=True, text=True, timeout=240)
    assert installed.returncode == 0, installed.stdout + installed.stderr
    listed = subprocess.run([python, "-m", "pip", "list", "--format=json", "--disable-pip-version-check"],
                            capture_output=True, text=True, check=True, timeout=60)
    names = {p["name"].lower() for p in json.loads(listed.stdout)}
    assert "feature-store-client" in names and "requests" in names
    assert names <= {"feature-store-client", "requests", "urllib3", "idna", "certifi", "charset-normalizer",
                     "pip", "setuptools", "wheel"}, names

    script = f"""
import sys
import feature_store_client
from feature_store_client import FeatureStoreClient, Unauthorized
assert "site-packages" in feature_store_client.__file__, feature_store_client.__file__
loaded = {{m.split(".")[0] for m in sys.modules}}
assert not loaded & {{"flask", "feature_store", "pandas", "pyarrow", "redis", "sqlalchemy", "numpy"}}, loaded
store = FeatureStoreClient({deployment.base!r}, api_key={READ_KEY!r})
print(len(store.features()), store.value("payment_type", 1))
try:
    FeatureStoreClient({deployment.base!r}).features()
except Unauthorized as exc:
    print(exc.status)
try:
    store.training_set([{{"user_id": 1, "as_of": "2025-01-01"}}], feature_set="underwriting_v1")
except ImportError as exc:
    print("ImportError:", exc)
"""
    done = subprocess.run([python, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=60,
                          env={"PATH": os.environ.get("PATH", "")})
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith(f"{len(FEATURES)} ") and lines[1] == "401"
    assert lines[2].startswith("ImportError: training_set() reads Parquet with pyarrow: pip install "
                               "'feature-store-client[arrow]'")
