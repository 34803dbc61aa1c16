"""GET /metrics under gunicorn with several worker processes: counts aggregated over every
process (prometheus_client's multiprocess mode), the inference fast path counted too, and the
store's own figures (queue depth, workers listening, recent runs, each feature's age)."""

from __future__ import annotations

import re
import time

import pytest
import requests

from feature_store.metrics_buffer import FLUSH_SECONDS
from feature_store.warehouse import demo
from tests.conftest import web_process


@pytest.fixture
def web(redis_url, tmp_path, start_worker):
    url = f"sqlite:///{tmp_path / 'demo.db'}"
    demo.generate(url, users=200, seed=4)
    start_worker(url)
    with web_process(tmp_path, REDIS_URL=redis_url, WAREHOUSE_URL=url, WEB_CONCURRENCY=3, WEB_THREADS=2,
                     PROMETHEUS_MULTIPROC_DIR=tmp_path / "metrics") as base:
        yield base


def sample(text: str, name: str, **labels) -> float | None:
    wanted = ",".join(f'{k}="{v}"' for k, v in labels.items())
    pattern = re.escape(name) + (r"\{" + re.escape(wanted) + r"\}" if wanted else "") + r" ([0-9.e+-]+)$"
    match = re.search(pattern, text, flags=re.M)
    return float(match.group(1)) if match else None


def test_metrics_aggregate_every_web_process(web):
    api = f"{web}/api/v1/features"
    assert requests.post(f"{api}/extract", timeout=60).status_code == 200
    session = requests.Session()
    for n in range(60):  # over keep-alive and new connections: several processes answer
        client = session if n % 2 else requests
        assert client.post(f"{api}/inference", json={"feature_type": "payment_type", "entity_id": 1 + n % 5},
                           timeout=5, headers={"Connection": "close"} if n % 3 == 0 else {}).status_code == 200
    assert requests.post(f"{api}/inference", json={"feature_type": "nope", "entity_id": 1}, timeout=5).status_code \
        == 404
    # Each process hands its requests' figures to the library within FLUSH_SECONDS (metrics_buffer.py).
    time.sleep(2 * FLUSH_SECONDS + 0.2)
    for _ in range(4):  # whichever process answers the scrape, the totals are the same
        text = requests.get(f"{web}/metrics", timeout=10).text
        assert sample(text, "feature_store_http_requests_total", endpoint="/api/v1/features/inference",
                      method="POST", status="200") == 60
        assert sample(text, "feature_store_http_requests_total", endpoint="/api/v1/features/inference",
                      method="POST", status="404") == 1
        assert sample(text, "feature_store_http_request_duration_seconds_count",
                      endpoint="/api/v1/features/inference") == 61
        assert sample(text, "feature_store_values_served_total", source="cache") >= 55
        assert sample(text, "feature_store_extraction_workers") == 1
        assert sample(text, "feature_store_extraction_queue_depth") == 0
        assert sample(text, "feature_store_extraction_recent_runs", status="finished", trigger="api") == 1
        assert sample(text, "feature_store_extraction_run_duration_seconds_count") == 1
        assert 0 <= sample(text, "feature_store_feature_age_seconds", feature_type="payment_type") < 120
        assert sample(text, "feature_store_feature_max_age_seconds", feature_type="payment_type") == 7 * 86400
        assert sample(text, "feature_store_feature_fresh", feature_type="payment_type") == 1
        assert sample(text, "feature_store_online_store_up") == 1
