"""What the real web server (gunicorn with gunicorn.conf.py) answers to requests that never reach
a view: oversized request lines and headers, malformed HTTP, a body that never arrives. Every
answer is JSON, and no request holds a thread for longer than REQUEST_BODY_TIMEOUT."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest
import requests

from tests.conftest import PROJECT_DIR, free_port, wait_for

BASE = "/api/v1/features"
BODY_TIMEOUT = 0.5  # REQUEST_BODY_TIMEOUT of the server under test, in seconds


@pytest.fixture
def web(scenario_sqlite, tmp_path):
    port = free_port()
    env = {key: value for key, value in os.environ.items() if key != "REDIS_URL"}  # embedded mode
    env.update(WAREHOUSE_URL=scenario_sqlite, REQUEST_BODY_TIMEOUT=str(BODY_TIMEOUT), EXTRACT_ON_START="0")
    log = open(tmp_path / "web.log", "w")  # noqa: SIM115 - closed below
    process = subprocess.Popen([sys.executable, "-m", "feature_store", "--bind", f"127.0.0.1:{port}"],
                               cwd=PROJECT_DIR, env=env, stdout=log, stderr=subprocess.STDOUT,
                               start_new_session=True)

    def up():
        try:
            return requests.get(f"http://127.0.0.1:{port}{BASE}/discovery", timeout=5).ok
        except requests.RequestException:
            return False

    try:
        wait_for(up, timeout=30, what="gunicorn")
        yield port
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(15)
        log.close()


def exchange(port: int, raw: bytes, wait: float = 10.0) -> tuple[int, dict, str]:
    """Send `raw` on a new connection; return (status, JSON body, content type) of the answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=wait) as sock:
        sock.sendall(raw)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            assert chunk, f"connection closed without an answer: {data!r}"
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = {name.lower(): value.strip() for name, _, value in (line.partition(":") for line in lines[1:])}
        while len(body) < int(headers["content-length"]):
            chunk = sock.recv(65536)
            assert chunk, "connection closed mid-body"
            body += chunk
    return int(lines[0].split()[1]), json.loads(body), headers["content-type"]


@pytest.mark.parametrize("raw, status", [
    (b"GET " + BASE.encode() + b"/extract/" + b"x" * 5000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414),
    (b"GET " + BASE.encode() + b"/discovery HTTP/1.1\r\nHost: x\r\nX-Big: " + b"y" * 9000 + b"\r\n\r\n", 431),
    (b"NOT HTTP AT ALL\r\n\r\n", 400),
], ids=["request line too long", "header too large", "malformed"])
def test_requests_the_server_refuses_itself_are_answered_in_json(web, raw, status):
    answer_status, body, content_type = exchange(web, raw)
    assert (answer_status, content_type, body["success"]) == (status, "application/json", False)
    assert body["error"]


@pytest.mark.parametrize("path", ["inference", "training"])
def test_a_body_that_never_arrives_is_408_after_the_timeout(web, path):
    started = time.monotonic()
    status, body, content_type = exchange(web, (
        f"POST {BASE}/{path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Content-Length: 100\r\n\r\n").encode() + b'{"feature_type": ')
    assert (status, content_type, body["success"]) == (408, "application/json", False)
    assert "did not arrive in time" in body["error"]
    assert time.monotonic() - started < 5
    # The server is free for the next caller.
    response = requests.post(f"http://127.0.0.1:{web}{BASE}/inference",
                             json={"feature_type": "payment_type", "entity_id": "3010"}, timeout=5)
    assert response.status_code == 200 and response.json()["feature_value"] == "Prepaid"


@pytest.mark.parametrize("path", ["inference", "training"])
def test_the_access_line_of_a_408_covers_the_wait_for_the_body(web, tmp_path, path):
    rid = f"slow-body-{path}"
    status, body, _ = exchange(web, (
        f"POST {BASE}/{path} HTTP/1.1\r\nHost: x\r\nX-Request-ID: {rid}\r\nContent-Type: application/json\r\n"
        f"Content-Length: 100\r\n\r\n").encode() + b'{"feature_type": ')
    assert (status, body["request_id"]) == (408, rid)

    def access_line():
        lines = [line for line in (tmp_path / "web.log").read_text().splitlines()
                 if "feature_store.access" in line and f" {rid} " in line]
        return lines[-1] if lines else None

    line = wait_for(access_line, timeout=5, what=f"the access line of {rid}")
    assert f" {rid} POST {BASE}/{path} 408 " in line
    milliseconds = float(line.rsplit(" ", 1)[1].removesuffix("ms"))
    assert BODY_TIMEOUT * 1000 <= milliseconds < BODY_TIMEOUT * 1000 + 2000, line
