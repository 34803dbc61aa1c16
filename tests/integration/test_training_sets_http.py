"""Training sets over real HTTP (gunicorn, the Procfile's web process): a large spine uploaded
with and without Content-Length (chunked), streamed back, every row there and right."""

from __future__ import annotations

import csv
import io
import random
from datetime import datetime, timedelta

import pyarrow.parquet as pq
import pytest
import requests

from feature_store.warehouse import demo
from tests.conftest import web_process

ROWS = 30_000


@pytest.fixture
def web(redis_url, tmp_path):
    url = f"sqlite:///{tmp_path / 'demo.db'}"
    demo.generate(url, users=400, seed=3)
    with web_process(tmp_path, REDIS_URL=redis_url, WAREHOUSE_URL=url, WEB_CONCURRENCY=1,
                     TRAINING_SET_CHUNK_ROWS=4000) as base:
        yield f"{base}/api/v1/features"


def spine_csv() -> bytes:
    rng = random.Random(7)
    start = datetime(2024, 1, 1)
    lines = ["user_id,as_of,label"]
    for n in range(ROWS):
        moment = start + timedelta(seconds=rng.randrange(0, 400 * 86400), microseconds=rng.randrange(10**6))
        lines.append(f"{rng.randrange(1, 420)},{moment.isoformat()},{n}")
    return ("\n".join(lines) + "\n").encode()


def test_a_large_spine_streams_both_ways(web):
    body = spine_csv()
    query = f"{web}/training-sets?feature_set=underwriting_v1"
    sized = requests.post(query + "&format=csv", data=body, headers={"Content-Type": "text/csv"}, timeout=120,
                          stream=True)
    assert sized.status_code == 200 and sized.headers["X-Total-Rows"] == str(ROWS)
    table = list(csv.DictReader(io.StringIO(sized.content.decode())))
    assert [row["label"] for row in table] == [str(n) for n in range(ROWS)]  # every row, in spine order

    def chunked():  # no Content-Length: the body arrives chunked
        for start in range(0, len(body), 65_536):
            yield body[start:start + 65_536]

    parquet = requests.post(query + "&format=parquet", data=chunked(), headers={"Content-Type": "text/csv"},
                            timeout=120)
    assert parquet.status_code == 200
    rows = pq.read_table(io.BytesIO(parquet.content)).to_pylist()
    assert len(rows) == ROWS and [str(r["label"]) for r in rows] == [str(n) for n in range(ROWS)]
    # The same values as /training's as-of items, for a sample.
    sample = random.Random(1).sample(range(ROWS), 200)
    items = [{"feature_type": "user_failed_transaction_count", "entity_id": table[i]["entity_id"],
              "as_of": table[i]["as_of"]} for i in sample]
    answers = requests.post(f"{web}/training", json={"features": items}, timeout=60).json()["results"]
    for i, answer in zip(sample, answers, strict=True):
        expected = answer["feature_value"] if answer["success"] else None
        assert rows[i]["user_failed_transaction_count"] == expected
        assert table[i]["entity_existed"] == ("true" if answer["success"] else "false")
