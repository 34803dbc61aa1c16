"""The seed document's three usage examples, run unchanged from its text against a real
deployment on localhost:25000: gunicorn (the Procfile's web line), an rq worker, a private
redis-server, and a demo warehouse made by the project's generator."""

from __future__ import annotations

import os
import re
import socket
import sqlite3
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pytest
import requests

from feature_store.warehouse import demo
from tests.conftest import PROJECT_DIR, SHARED_DIR, wait_for

SEED = SHARED_DIR / "spec" / "seed-feature-store.md"
PORT = 25000  # the examples name it


def seed_examples() -> list[str]:
    if not SEED.exists():
        pytest.skip(f"the seed document is not beside this clone ({SEED}); it ships with the spec in ../shared")
    text = SEED.read_text()
    usage = text[text.index("## Usage Examples"):]
    return re.findall(r"```python\n(.*?)```", usage, flags=re.S)


def port_free(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


@pytest.fixture
def examples() -> list[str]:
    return seed_examples()


@pytest.fixture
def deployment(examples, redis_url, tmp_path, start_worker):
    if not port_free(PORT):
        pytest.fail(f"port {PORT} is taken: stop the running feature store (./run.sh) to run this test")
    warehouse = tmp_path / "demo.db"
    url = f"sqlite:///{warehouse}"
    demo.generate(url, users=500, seed=11)
    start_worker(url)
    env = {**os.environ, "REDIS_URL": redis_url, "WAREHOUSE_URL": url, "WEB_CONCURRENCY": "2"}
    log = open(tmp_path / "web.log", "w")  # noqa: SIM115 - closed below
    web = subprocess.Popen([sys.executable, "-m", "feature_store"], cwd=PROJECT_DIR, env=env,
                           stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def up():
        try:
            return requests.get(f"http://127.0.0.1:{PORT}/api/v1/features/discovery", timeout=5).ok
        except requests.RequestException:  # refused, or accepted while workers still boot
            return False

    try:
        wait_for(up, timeout=30, what="gunicorn on port 25000")
        yield warehouse
    finally:
        os.killpg(web.pid, 15)
        web.wait(20)
        log.close()
    first_line = (tmp_path / "web.log").read_text().splitlines()[0]
    assert "online store redis://" in first_line


def run_example(code: str, tmp_path: Path, epilogue: str = "") -> str:
    script = tmp_path / "example.py"
    script.write_text(code + epilogue)
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_the_seed_usage_examples_run_unchanged(examples, deployment, tmp_path):
    training, inference, extraction = examples
    rows = sqlite3.connect(deployment)
    users, quotes, payments = (rows.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0]
                               for t in ("users", "quotes", "payment_transactions"))

    out = run_example(extraction, tmp_path)
    assert out.strip() == f"Extracted {2 * users + quotes + payments} features"

    out = run_example(training, tmp_path, "\nprint(training_data['total_successful'])\n")
    assert out.splitlines()[0] == ("Available features: ['User Policy Time of Purchase', "
                                   "'Time from Quote Creation to Binding', 'Count of User Failed Transactions', "
                                   "'Type of Payment']")
    assert out.splitlines()[1] == "10"

    out = run_example(inference, tmp_path, "\nprint(repr(user_policy_time))\n")
    earliest = rows.execute(
        "SELECT MIN(pt.created_at) FROM payment_transactions pt JOIN policies p ON p.id = pt.policy_id "
        "WHERE p.user_id = 123 AND pt.status = 'succeeded'").fetchone()[0]
    rows.close()
    expected = None if earliest is None else datetime.fromisoformat(earliest).isoformat()
    assert out.strip() == repr(expected)
