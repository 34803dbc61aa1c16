"""GET /health and GET /ready against a real Redis that goes away."""

from __future__ import annotations

from tests.conftest import start_redis_server


def test_ready_names_redis_when_it_is_down_and_health_still_answers(make_app, scenario_sqlite):
    server = start_redis_server()
    try:
        app = make_app(REDIS_URL=server.url, WAREHOUSE_URL=scenario_sqlite, REDIS_LOCAL_CACHE=False)
        client = app.test_client()
        ready = client.get("/ready").get_json()
        assert ready["status"] == "ready" and ready["workers"] == 0 and ready["embedded"] is False
    finally:
        server.stop()
    response = client.get("/ready")
    assert response.status_code == 503
    body = response.get_json()
    assert body["checks"]["redis"] != "ok" and body["checks"]["warehouse"] == "ok" and body["workers"] is None
    assert body["error"].startswith("not ready: redis:")
    assert client.get("/health").get_json() == {"status": "ok"}
