"""The catalog page's view on the embedded app: an HTML page (open, like /docs/, whatever the API
keys) that still shows the catalog when the run history cannot be read. The browser test
(tests/integration/test_catalog_page.py) checks what it shows."""

from __future__ import annotations

from markupsafe import escape

from tests import scenario
from tests.conftest import free_port

READ, ADMIN = "catalog-read-key", "catalog-admin-key"


def test_the_page_lists_every_feature_and_the_runs(client, embedded_app):
    assert client.get("/").status_code == 200  # before any run
    assert b"No extraction run yet" in client.get("/").data
    extracted = client.post("/api/v1/features/extract").get_json()
    page = client.get("/")
    assert page.status_code == 200 and page.mimetype == "text/html"
    html = page.get_data(as_text=True)
    for feature in embedded_app.extensions["feature_store"].registry:
        assert f'data-feature-type="{feature.feature_type}"' in html and escape(feature.description) in html
    assert f'data-run="{extracted["job_id"]}"' in html
    assert f'data-summary="last-run-total">{extracted["total_features"]:,}<' in html
    css = client.get("/catalog/static/catalog.css")
    css.close()  # a file's answer holds the file open until closed
    assert css.status_code == 200 and css.mimetype == "text/css"


def test_the_page_is_open_when_api_keys_are_configured(make_app, scenario_sqlite):
    app = make_app(REDIS_URL=None, WAREHOUSE_URL=scenario_sqlite, EXTRACT_ON_START=False,
                   API_KEYS_READ=(READ,), API_KEYS_ADMIN=(ADMIN,))
    assert app.test_client().get("/").status_code == 200
    assert app.test_client().get("/api/v1/features/discovery").status_code == 401


def test_without_redis_the_page_still_shows_the_catalog(make_app, scenario_sqlite):
    app = make_app(REDIS_URL=f"redis://127.0.0.1:{free_port()}/0", WAREHOUSE_URL=scenario_sqlite)
    page = app.test_client().get("/")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert 'data-section="runs-unavailable"' in html and "unreachable" in html
    assert "Freshness unavailable" in html and "Statistics unavailable" in html
    assert html.count("data-feature-type=") == len(list(app.extensions["feature_store"].registry))


def test_a_feature_that_failed_in_the_last_run_says_why_and_keeps_its_last_refresh(client, scenario_sqlite):
    first = client.post("/api/v1/features/extract").get_json()
    scenario.execute(scenario_sqlite, "DROP TABLE quotes")
    failed = client.post("/api/v1/features/extract")
    assert failed.status_code == 500 and "quote_creation_to_binding_time" in failed.get_json()["failed_features"]
    html = client.get("/").get_data(as_text=True)
    card = html[html.index('data-feature-type="quote_creation_to_binding_time"'):]
    card = card[:card.index("</article>")]
    assert "status-failed" in card and "quotes" in card  # the reason names the missing table
    assert f'title="{first["job_id"]}"' in card  # refreshed last by the first run
