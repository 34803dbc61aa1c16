"""`python test_feature_store.py` (the seed's "Testing" script) against a real deployment:
gunicorn (`python -m feature_store`) on a free port, an rq worker and a private redis-server over a
demo warehouse; and against servers that answer wrongly, or not at all."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from feature_store.warehouse import demo
from tests.conftest import PROJECT_DIR, free_port, web_process

SCRIPT = PROJECT_DIR / "test_feature_store.py"
ADMIN_KEY = "smoke-admin-key"
FEATURES = ("user_policy_time_of_purchase", "quote_creation_to_binding_time", "user_failed_transaction_count",
            "payment_type")


def run_script(*args: str, timeout: float = 90) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], cwd=PROJECT_DIR, capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture
def deployment(redis_url, tmp_path, start_worker):
    """(base URL, warehouse path): gunicorn on a free port with an admin API key, one rq worker."""
    warehouse = tmp_path / "demo.db"
    url = f"sqlite:///{warehouse}"
    demo.generate(url, users=300, seed=5)
    start_worker(url)
    with web_process(tmp_path, REDIS_URL=redis_url, WAREHOUSE_URL=url, WEB_CONCURRENCY=2,
                     API_KEYS_ADMIN=ADMIN_KEY) as base:
        yield base, warehouse


def expected_checks(warehouse) -> list[str]:
    """The name of every check the script runs against the demo warehouse (ids 1 and N of each table)."""
    with sqlite3.connect(warehouse) as rows:
        count = {t: rows.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0]
                 for t in ("users", "quotes", "payment_transactions")}
    last = {"user_policy_time_of_purchase": count["users"], "quote_creation_to_binding_time": count["quotes"],
            "user_failed_transaction_count": count["users"], "payment_type": count["payment_transactions"]}
    names = ["discovery", "extract"]
    names += [f"inference {t} {i}" for t in FEATURES for i in (1, last[t])]
    names += ["inference integer entity_id", "inference unknown feature_type"]
    names += [f"inference {t} nonexistent entity" for t in FEATURES]
    names += ["inference entity_id naming no row", "training"]
    names += [f"inference malformed body ({n})" for n in (
        "not JSON", "a JSON array", "no entity_id", "no feature_type", "feature_type not a string",
        "entity_id a boolean", "entity_id a float", "entity_id null", "entity_id a list")]
    names += [f"training malformed body ({n})" for n in (
        "not JSON", "no features", "features not a list", "an item not an object", "an item with a boolean entity_id")]
    return names


def passed(output: str) -> set[str]:
    return {line[len("PASS "):].split(": ", 1)[0] for line in output.splitlines() if line.startswith("PASS ")}


def test_the_script_passes_against_a_real_deployment(deployment):
    base, warehouse = deployment
    names = expected_checks(warehouse)

    done = run_script("--url", base, "--api-key", ADMIN_KEY)
    assert done.returncode == 0, done.stdout + done.stderr
    assert passed(done.stdout) == set(names), done.stdout
    assert "FAIL" not in done.stdout
    lines = done.stdout.splitlines()
    assert lines[-1] == f"OK: {len(names)} passed, 0 failed, 0 skipped"
    extract = next(line for line in lines if line.startswith("PASS extract: "))
    assert extract.startswith("PASS extract: 200, job extract-")

    # The 202 path: the run is followed at GET /extract/<job_id> until it finished.
    done = run_script("--url", base, "--api-key", ADMIN_KEY, "--no-wait")
    assert done.returncode == 0, done.stdout + done.stderr
    assert passed(done.stdout) == set(names), done.stdout
    assert "PASS extract: 202, then job extract-" in done.stdout

    # Without the key every check is refused (401): the script says so and fails.
    done = run_script("--url", base)
    assert done.returncode == 1, done.stdout
    assert "FAIL discovery: GET /discovery answered 401" in done.stdout
    assert passed(done.stdout) == set()


def test_the_script_fails_when_nothing_listens():
    done = run_script("--url", f"http://127.0.0.1:{free_port()}", "--timeout", "2")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "FAIL discovery: cannot connect to" in done.stdout
    assert done.stdout.splitlines()[-1] == "FAILED: 0 passed, 1 failed, 0 skipped"


class WrongAnswers(BaseHTTPRequestHandler):
    """A server that looks right at a glance: the catalog misses a feature, extraction miscounts,
    values come back for entities that do not exist, and malformed bodies are accepted."""

    def answer(self, body, status: int = 200) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        types = [("user_id", "datetime"), ("quote_id", "integer"), ("user_id", "integer")]
        self.answer([{"feature_type": t, "name": t, "description": t, "entity_type": e, "data_type": d,
                      "created_at": "2025-01-01T00:00:00"} for t, (e, d) in zip(FEATURES, types, strict=False)])

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        if self.path.startswith("/api/v1/features/extract"):
            self.answer({"message": "Feature extraction completed successfully", "job_id": "x",
                         "features_extracted": dict.fromkeys(FEATURES, 10), "total_features": 39})
        elif self.path == "/api/v1/features/training":
            self.answer({"results": [], "total_requested": 0, "total_successful": 0})
        else:
            self.answer({"feature_type": "payment_type", "entity_id": "1", "feature_value": "Credit",
                         "computed_at": "yesterday", "success": True})

    def log_message(self, *args):
        pass


def test_the_script_fails_against_wrong_answers():
    server = ThreadingHTTPServer(("127.0.0.1", 0), WrongAnswers)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        done = run_script("--url", f"http://127.0.0.1:{server.server_address[1]}")
    finally:
        server.shutdown()
        server.server_close()
    assert done.returncode == 1, done.stdout + done.stderr
    out = done.stdout
    assert "FAIL discovery: payment_type is not listed" in out
    assert "FAIL extract: total_features 39 is not the sum of features_extracted (40)" in out
    assert "FAIL inference unknown feature_type: answered 200, expected 404" in out
    assert "FAIL inference payment_type nonexistent entity: answered 200, expected 404" in out
    assert "FAIL inference malformed body (entity_id a boolean): answered 200, expected 400" in out
    assert "FAIL training malformed body (no features): answered 200, expected 400" in out
    assert out.splitlines()[-1].startswith("FAILED: ")
