"""GET /docs: Swagger UI over the app's own OpenAPI document, every asset served by the app."""

from __future__ import annotations

import re


def test_the_docs_page_and_every_asset_it_loads_come_from_the_app(client):
    page = client.get("/docs/")
    assert page.status_code == 200 and page.mimetype == "text/html"
    html = page.get_data(as_text=True)
    assert '"url": "/api/v1/openapi.json"' in html and '"validatorUrl": null' in html
    assets = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert {a.rsplit("/", 1)[-1] for a in assets} >= {"swagger-ui-bundle.js", "swagger-ui.css"}
    for asset in assets:
        assert asset.startswith("/docs/"), asset  # nothing from elsewhere
        response = client.get(asset)
        assert response.status_code == 200 and response.get_data(), asset
        response.close()
    # The one absolute URL is the app's own (the OAuth2 redirect page, unused without OAuth).
    assert set(re.findall(r"https?://[^\"'\s]+", html)) == {"http://localhost/docs/oauth2-redirect.html"}
    assert client.get("/api/v1/openapi.json").status_code == 200


def test_docs_without_the_slash_lead_to_the_page(client):
    response = client.get("/docs")
    assert response.status_code in (301, 308) and response.headers["Location"].endswith("/docs/")
