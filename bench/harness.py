"""Start a real deployment on this machine for benchmarks and chaos runs: a private
redis-server, a warehouse, gunicorn with the Procfile's settings, and rq workers.

Every process is started the way the Procfile starts it, on free local ports, and stopped
(process group) on exit. Nothing here is used by the product itself.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import redis
import requests

PROJECT_DIR = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except Exception:  # noqa: BLE001 - not up yet
            pass
        time.sleep(0.05)
    raise RuntimeError(f"timed out waiting for {what}")


def cluster_ports(count: int) -> list[int]:
    """Free ports whose cluster bus port (port + 10000) is free too (ephemeral ports may have none)."""
    found: list[int] = []
    for port in random.Random().sample(range(20000, 29000), 400):
        try:
            with socket.socket() as a, socket.socket() as b:
                a.bind(("127.0.0.1", port))
                b.bind(("127.0.0.1", port + 10000))
        except OSError:
            continue
        found.append(port)
        if len(found) == count:
            return found
    raise RuntimeError("no free ports for a Redis Cluster")


def rss_mb(pid: int) -> float:
    """Resident memory of a process and all its descendants, in MB."""
    total = 0
    pending = [pid]
    while pending:
        current = pending.pop()
        try:
            for line in Path(f"/proc/{current}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
            children = Path(f"/proc/{current}/task/{current}/children").read_text().split()
            pending.extend(int(c) for c in children)
        except (FileNotFoundError, ProcessLookupError):
            continue
    return total / 1024


class Deployment:
    """A running feature store; use as a context manager."""

    def __init__(self, workdir: Path | None = None) -> None:
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="feature-store-"))
        self.processes: list[subprocess.Popen] = []
        self.redis_url: str | None = None
        self.redis_port: int | None = None
        self.redis_process: subprocess.Popen | None = None
        self.warehouse_url: str | None = None
        self.web_port: int | None = None
        self.web: subprocess.Popen | None = None
        self.workers: list[subprocess.Popen] = []
        self.cluster_ports: list[int] = []

    # --- services -------------------------------------------------------------------------------
    def start_redis(self, port: int | None = None, *extra: str) -> str:
        binary = shutil.which("redis-server")
        if not binary:
            raise SystemExit("redis-server is not installed (apt-get install -y redis-server)")
        self.redis_port = port or self.redis_port or free_port()
        self.redis_process = self._spawn([binary, "--port", str(self.redis_port), "--bind", "127.0.0.1", "--save", "",
                                          "--appendonly", "no", "--loglevel", "warning", *extra], "redis.log")
        self.redis_url = f"redis://127.0.0.1:{self.redis_port}/0"
        client = redis.Redis.from_url(self.redis_url, socket_connect_timeout=0.2)
        wait_until(client.ping, 10, "redis-server")
        client.close()
        return self.redis_url

    def stop_redis(self, sig=signal.SIGTERM) -> None:
        if self.redis_process and self.redis_process.poll() is None:
            os.killpg(self.redis_process.pid, sig)
            if sig in (signal.SIGTERM, signal.SIGKILL):
                self.redis_process.wait(10)

    def start_redis_cluster(self, nodes: int = 3) -> str:
        """A private Redis Cluster of `nodes` primaries (no replicas), as tests/conftest.py starts
        one: each node on a port whose cluster bus port (port + 10000) is free too, slots spread by
        `redis-cli --cluster create`, then CLUSTER INFO polled until every node says
        cluster_state:ok. Returns the URL of the first node (the others are discovered)."""
        binary, cli = shutil.which("redis-server"), shutil.which("redis-cli")
        if not binary or not cli:
            raise SystemExit("redis-server and redis-cli are needed (apt-get install -y redis-server)")
        ports = cluster_ports(nodes)
        for port in ports:
            folder = self.workdir / f"cluster-{port}"
            folder.mkdir(exist_ok=True)
            self._spawn([binary, "--port", str(port), "--bind", "127.0.0.1", "--cluster-enabled", "yes",
                         "--cluster-config-file", "nodes.conf", "--dir", str(folder), "--save", "",
                         "--appendonly", "no", "--protected-mode", "no", "--loglevel", "warning"],
                        f"cluster-{port}.log")
        for port in ports:
            client = redis.Redis(port=port, socket_connect_timeout=0.2)
            wait_until(client.ping, 10, f"cluster node {port}")
            client.close()
        subprocess.run([cli, "--cluster", "create", *(f"127.0.0.1:{p}" for p in ports), "--cluster-replicas", "0",
                        "--cluster-yes"], check=True, capture_output=True, timeout=60)
        for port in ports:
            client = redis.Redis(port=port)
            wait_until(lambda client=client: b"cluster_state:ok" in client.execute_command("CLUSTER", "INFO"), 30,
                       f"cluster_state:ok on {port}")
            client.close()
        self.cluster_ports = ports
        return f"redis://127.0.0.1:{ports[0]}/0"

    def make_sqlite_warehouse(self, users: int, seed: int = 7, path: Path | None = None) -> str:
        from feature_store.warehouse import demo

        path = path or self.workdir / f"warehouse-{users}.db"
        url = f"sqlite:///{path}"
        if not path.exists():
            demo.generate(url, users=users, seed=seed)
        self.warehouse_url = url
        return url

    def env(self, **extra) -> dict:
        env = {**os.environ, "PYTHONPATH": str(PROJECT_DIR)}
        if self.redis_url:
            env["REDIS_URL"] = self.redis_url
        if self.warehouse_url:
            env["WAREHOUSE_URL"] = self.warehouse_url
        env.update({k: str(v) for k, v in extra.items()})
        return env

    def start_web(self, app: str = "wsgi:app", port: int | None = None, **env) -> str:
        """gunicorn with gunicorn.conf.py (the Procfile's web line), serving `app`."""
        self.web_port = port or free_port()
        self.web = self._spawn([str(BIN / "gunicorn"), "-c", "gunicorn.conf.py", "--bind",
                                f"127.0.0.1:{self.web_port}", app], "web.log", env=self.env(**env))
        base = f"http://127.0.0.1:{self.web_port}"
        wait_until(lambda: requests.get(f"{base}/api/v1/openapi.json" if app == "wsgi:app" else base,
                                        timeout=5).status_code < 500, 60, "gunicorn")
        return base

    def stop_web(self) -> None:
        if self.web and self.web.poll() is None:
            os.killpg(self.web.pid, signal.SIGTERM)
            self.web.wait(30)

    def start_worker(self, *extra: str, **env) -> subprocess.Popen:
        """An rq worker as the Procfile's worker line starts it."""
        queue = env.pop("EXTRACT_QUEUE", "feature-extraction")
        worker = self._spawn([str(BIN / "rq"), "worker", "--url", self.redis_url, "--serializer", "json", "--path",
                              str(PROJECT_DIR), "--maintenance-interval", "30", *extra, queue],
                             f"worker-{len(self.workers)}.log", env=self.env(**env))
        self.workers.append(worker)
        client = redis.Redis.from_url(self.redis_url)
        alive = sum(1 for w in self.workers if w.poll() is None)
        wait_until(lambda: client.scard("rq:workers") >= alive, 30, "rq worker")
        client.close()
        return worker

    # --- plumbing -------------------------------------------------------------------------------
    def _spawn(self, argv: list[str], log: str, env: dict | None = None) -> subprocess.Popen:
        out = open(self.workdir / log, "ab")  # noqa: SIM115 - lives as long as the process
        process = subprocess.Popen(argv, cwd=PROJECT_DIR, env=env or self.env(), stdout=out,
                                   stderr=subprocess.STDOUT, start_new_session=True)
        out.close()
        self.processes.append(process)
        return process

    def close(self) -> None:
        for process in reversed(self.processes):
            if process.poll() is None:
                try:
                    os.killpg(process.pid, signal.SIGTERM)
                except ProcessLookupError:
                    continue
        for process in self.processes:
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)

    def __enter__(self) -> Deployment:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
