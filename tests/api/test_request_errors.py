"""How malformed /inference and /training requests are worded (null fields, empty bodies, bodies
nested too deeply), alike on the inference fast path and the Flask view, and how long the access
line says a request whose body stopped arriving took."""

from __future__ import annotations

import io
import logging
import time

import pytest

from feature_store.api.fast import FastInference

BASE = "/api/v1/features"

EMPTY = "the request body is empty (expected a JSON object)"
TOO_DEEP = "the request body is nested too deeply to parse (expected a JSON object)"
NOT_JSON = "the request body is not valid JSON (expected a JSON object)"


def fast_and_flask(app, client, path: str, **kwargs):
    """The answer through the app as served (the fast path in front), then through Flask alone."""
    assert isinstance(app.wsgi_app, FastInference)
    fast = client.post(f"{BASE}/{path}", headers={"X-Request-ID": "same"}, **kwargs)
    app.wsgi_app = app.wsgi_app.flask
    try:
        flask = client.post(f"{BASE}/{path}", headers={"X-Request-ID": "same"}, **kwargs)
    finally:
        app.wsgi_app = FastInference(app)
    return fast, flask


def assert_400(app, client, path: str, error: str, **kwargs) -> None:
    fast, flask = fast_and_flask(app, client, path, **kwargs)
    for response in (fast, flask):
        assert response.status_code == 400
        assert response.get_json() == {"success": False, "error": error, "request_id": "same"}
    assert fast.get_data() == flask.get_data()


@pytest.mark.parametrize("path, body, error", [
    ("inference", {"feature_type": None, "entity_id": 1}, "feature_type: must be a string"),
    ("inference", {"feature_type": "payment_type", "entity_id": None}, "entity_id: must be a string or an integer"),
    ("training", {"features": None}, "features: must be a list"),
    ("training", {"features": [None]}, "features[0]: must be an object"),
    ("training", {"features": [{"feature_type": "payment_type", "entity_id": "1"}, None]},
     "features[1]: must be an object"),
    ("training", {"features": [{"feature_type": None, "entity_id": "1"}]},
     "features[0].feature_type: must be a string"),
    ("training", {"features": [{"feature_type": "payment_type", "entity_id": None}]},
     "features[0].entity_id: must be a string or an integer"),
], ids=["inference feature_type", "inference entity_id", "features", "item", "second item", "item feature_type",
        "item entity_id"])
def test_a_null_field_is_worded_like_any_other_wrong_type(embedded_app, client, path, body, error):
    assert_400(embedded_app, client, path, error, json=body)


@pytest.mark.parametrize("path", ["inference", "training"])
@pytest.mark.parametrize("data", [b"", b" ", b"\r\n\t "], ids=["nothing", "a space", "whitespace"])
def test_an_empty_body_is_called_empty(embedded_app, client, path, data):
    assert_400(embedded_app, client, path, EMPTY, data=data, content_type="application/json")


def test_a_request_without_a_body_is_called_empty(client):
    for path in ("inference", "training"):
        response = client.post(f"{BASE}/{path}")
        assert (response.status_code, response.get_json()["error"]) == (400, EMPTY)


@pytest.mark.parametrize("path", ["inference", "training"])
@pytest.mark.parametrize("data", [
    b"[" * 100_000,                                   # unfinished too
    b"[" * 5_000 + b"]" * 5_000,                      # well-formed JSON
    b'{"features": ' + b"[" * 1_100 + b"]" * 1_100 + b"}",
    b'{"feature_type": "payment_type", "entity_id": "1", "extra": ' + b'{"a": ' * 3_000 + b"1" + b"}" * 3_001,
], ids=["unclosed", "closed", "in features", "in an unknown field"])
def test_a_body_nested_too_deeply_is_called_so(embedded_app, client, path, data):
    assert_400(embedded_app, client, path, TOO_DEEP, data=data, content_type="application/json")


@pytest.mark.parametrize("path", ["inference", "training"])
@pytest.mark.parametrize("data", [b'{"feature_type": ', b"{" * 3_000, b"\x0c", b"nope"])
def test_a_body_that_is_not_json_is_still_called_so(embedded_app, client, path, data):
    assert_400(embedded_app, client, path, NOT_JSON, data=data, content_type="application/json")


class StalledBody(io.BytesIO):
    """A 100-byte request body that stops arriving: each read waits, then times out as a socket
    with REQUEST_BODY_TIMEOUT set does (bodies.body_deadline)."""

    def __init__(self, wait: float) -> None:
        super().__init__(b" " * 100)
        self.wait = wait

    def read(self, *args):
        time.sleep(self.wait)
        raise TimeoutError("timed out")

    readline = read1 = readinto = read


@pytest.mark.parametrize("path", ["inference", "training"])
def test_the_access_line_of_a_408_covers_the_wait_for_the_body(client, caplog, path):
    wait = 0.3
    with caplog.at_level(logging.INFO, logger="feature_store.access"):
        response = client.post(f"{BASE}/{path}", input_stream=StalledBody(wait),
                               content_type="application/json", headers={"X-Request-ID": f"stalled-{path}"})
    assert response.status_code == 408 and "did not arrive in time" in response.get_json()["error"]
    [line] = [r.getMessage() for r in caplog.records
              if r.name == "feature_store.access" and r.getMessage().startswith(f"stalled-{path} ")]
    assert line.startswith(f"stalled-{path} POST {BASE}/{path} 408 ")
    assert float(line.rsplit(" ", 1)[1].removesuffix("ms")) >= wait * 1000
