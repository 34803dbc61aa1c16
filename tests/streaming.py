"""Helpers of the streaming tests: the real streaming process as a subprocess, and the values a
full extraction run would store, to compare the streamed ones with."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import redis

from feature_store.features import REGISTRY
from feature_store.online_store import OnlineStore
from feature_store.services.extraction import extract_all
from feature_store.streaming import status
from feature_store.warehouse import Warehouse
from tests.conftest import PROJECT_DIR, wait_for


class StreamProcess:
    """`python -m workers.stream`, started as the Procfile starts it."""

    def __init__(self, redis_url: str, warehouse_url: str, *, slot: str = "feature_store", **env) -> None:
        self.slot = slot
        self.redis_url = redis_url
        self.log = tempfile.NamedTemporaryFile("w+", prefix="stream-", suffix=".log", delete=False)
        environment = {**os.environ, "REDIS_URL": redis_url, "WAREHOUSE_URL": warehouse_url, "STREAM_SLOT": slot,
                       "STREAM_POLL_INTERVAL": "0.05", **{k: str(v) for k, v in env.items()}}
        environment.pop("RQ_REDIS_URL", None)
        self.process = subprocess.Popen([sys.executable, "-m", "workers.stream"], cwd=PROJECT_DIR, env=environment,
                                        stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)

    def output(self) -> str:
        return Path(self.log.name).read_text()

    def report(self) -> dict | None:
        client = redis.Redis.from_url(self.redis_url, socket_timeout=2)
        try:
            return status.read(client, self.slot)
        finally:
            client.close()

    def wait_state(self, state: str, timeout: float = 30) -> dict:
        def reported():
            if self.process.poll() is not None:
                raise AssertionError(f"the streaming process exited ({self.process.returncode}): {self.output()}")
            report = self.report()
            return report if report and report["state"] == state and report["reported_seconds_ago"] is not None \
                and self._reported_by_me() else None
        return wait_for(reported, timeout=timeout, interval=0.05, what=f"the streaming process to be {state}")

    def _reported_by_me(self) -> bool:
        client = redis.Redis.from_url(self.redis_url, socket_timeout=2)
        try:
            return client.hget(status.status_key(self.slot), "pid") == str(self.process.pid).encode()
        finally:
            client.close()

    def kill(self, sig=signal.SIGKILL) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, sig)
            self.process.wait(20)

    def stop(self) -> None:
        try:
            self.kill(signal.SIGTERM)
        except subprocess.TimeoutExpired:
            self.kill(signal.SIGKILL)
        if not self.log.closed:
            self.log.close()
            os.unlink(self.log.name)


def stored_values(client: redis.Redis) -> dict[str, bytes]:
    """{key: value JSON} of every feature value stored in `client`'s database."""
    found = {}
    for feature_type in REGISTRY.feature_types():
        keys = sorted(client.scan_iter(match=f"{feature_type}:*", count=1000))
        with client.pipeline(transaction=False) as pipe:
            for name in keys:
                pipe.hget(name, "value")
            # A removed value's tombstone (online_store/ordering.py) holds no value.
            found.update({name.decode(): value for name, value in zip(keys, pipe.execute(), strict=True)
                          if value is not None})
    return found


def extract(warehouse_url: str, redis_url: str) -> None:
    """A full extraction run of every feature into `redis_url`."""
    client = redis.Redis.from_url(redis_url)
    warehouse = Warehouse(warehouse_url)
    try:
        extract_all(list(REGISTRY), warehouse, OnlineStore(client), chunk_size=1000)
    finally:
        warehouse.dispose()
        client.close()


def extracted_values(warehouse_url: str, scratch_redis_url: str) -> dict[str, bytes]:
    """The values a full extraction run stores now, run into the empty database `scratch_redis_url`."""
    client = redis.Redis.from_url(scratch_redis_url)
    try:
        client.flushdb()
        extract(warehouse_url, scratch_redis_url)
        return stored_values(client)
    finally:
        client.close()
