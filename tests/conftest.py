"""Shared fixtures: a private redis-server, PostgreSQL databases of our own, scenario warehouses,
apps in embedded (fakeredis) and real (Redis + RQ worker) modes.

Service tests skip with a reason when a service is missing, except under
FEATURE_STORE_REQUIRE_SERVICES=1 (CI), where a missing service fails the run.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from feature_store import create_app
from tests import history, scenario

# Access lines are written synchronously in tests, so a test can read the line of its request.
os.environ.setdefault("FEATURE_STORE_SYNC_ACCESS_LOG", "1")

PROJECT_DIR = Path(__file__).resolve().parents[1]
SHARED_DIR = PROJECT_DIR.parent / "shared"
REQUIRE_SERVICES = os.environ.get("FEATURE_STORE_REQUIRE_SERVICES") == "1"
POSTGRES_ADMIN_URL = os.environ.get("TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")


def service_missing(reason: str):
    if REQUIRE_SERVICES:
        pytest.fail(f"required service missing: {reason}", pytrace=False)
    pytest.skip(reason)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(predicate, timeout: float = 10.0, interval: float = 0.05, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


@dataclass
class RedisServer:
    url: str
    port: int
    process: subprocess.Popen
    _client: redis.Redis | None = None

    def client(self) -> redis.Redis:
        """A client of this server (one, closed by stop())."""
        if self._client is None:
            self._client = redis.Redis.from_url(self.url)
        return self._client

    def stop(self) -> None:
        if self._client is not None:
            self._client.close()
        if self.process.poll() is None:
            self.process.terminate()
        self.process.wait(10)


def start_redis_server(port: int | None = None) -> RedisServer:
    binary = shutil.which("redis-server")
    if binary is None:
        service_missing("redis-server is not installed (apt-get install -y redis-server)")
    port = port or free_port()
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--protected-mode", "no", "--loglevel", "warning"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url, socket_connect_timeout=0.2)

    def up():
        try:
            return client.ping()
        except redis.ConnectionError:
            return False

    try:
        wait_for(up, what=f"redis-server on port {port}")
    finally:
        client.close()
    return RedisServer(url, port, process)


@pytest.fixture(scope="session")
def redis_server():
    """A private redis-server on a free port, for the whole test session."""
    server = start_redis_server()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis_cluster_server(tmp_path_factory):
    """A private 3-node Redis Cluster (no replicas) on free ports, for the whole session; yields
    the URL of one node."""
    binary, cli = shutil.which("redis-server"), shutil.which("redis-cli")
    if binary is None or cli is None:
        service_missing("redis-server and redis-cli are needed for the cluster tests")
    folder = tmp_path_factory.mktemp("cluster")
    ports = _cluster_ports(3)
    processes = [subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--cluster-enabled", "yes",
         "--cluster-config-file", f"nodes-{port}.conf", "--dir", str(folder), "--save", "", "--appendonly", "no",
         "--protected-mode", "no", "--loglevel", "warning"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for port in ports]
    try:
        for port in ports:
            client = redis.Redis(port=port, socket_connect_timeout=0.2)
            wait_for(lambda client=client: _pings(client), what=f"cluster node {port}")
            client.close()
        subprocess.run([cli, "--cluster", "create", *(f"127.0.0.1:{p}" for p in ports), "--cluster-replicas", "0",
                        "--cluster-yes"], check=True, capture_output=True, timeout=60)
        for port in ports:
            client = redis.Redis(port=port)
            wait_for(lambda client=client: b"cluster_state:ok" in client.execute_command("CLUSTER", "INFO"),
                     timeout=30, what=f"cluster_state:ok on {port}")
            client.close()
        yield f"redis://127.0.0.1:{ports[0]}/0"
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(10)


def _cluster_ports(count: int) -> list[int]:
    """Ports whose cluster bus port (port + 10000) is free too (ephemeral ports may have none)."""
    import random

    found: list[int] = []
    for port in random.Random().sample(range(20000, 29000), 400):
        if len(found) == count:
            break
        try:
            with socket.socket() as a, socket.socket() as b:
                a.bind(("127.0.0.1", port))
                b.bind(("127.0.0.1", port + 10000))
            found.append(port)
        except OSError:
            continue
    return found


def _pings(client) -> bool:
    try:
        return client.ping()
    except redis.ConnectionError:
        return False


@pytest.fixture
def redis_cluster_url(redis_cluster_server) -> str:
    """The private cluster, emptied before the test."""
    from redis.cluster import RedisCluster

    client = RedisCluster.from_url(redis_cluster_server)
    client.flushall()
    client.close()
    return redis_cluster_server


@pytest.fixture
def redis_url(redis_server) -> str:
    """The private Redis, emptied before the test."""
    redis_server.client().flushall()
    return redis_server.url


@pytest.fixture(scope="session")
def postgres_server_url():
    """A database of our own on the local PostgreSQL, dropped at the end of the session."""
    try:
        admin = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT",
                              connect_args={"connect_timeout": 3})
        with admin.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as exc:  # noqa: BLE001 - any failure means no PostgreSQL to test against
        service_missing(f"PostgreSQL not reachable at {POSTGRES_ADMIN_URL} ({exc.__class__.__name__})")
    name = f"feature_store_test_{uuid.uuid4().hex[:12]}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(POSTGRES_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    yield url
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture
def sqlite_url(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'warehouse.db'}"


@pytest.fixture(params=["sqlite", "postgresql"])
def warehouse_url(request, tmp_path) -> str:
    """A scenario warehouse on each dialect."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'warehouse.db'}"
    else:
        url = request.getfixturevalue("postgres_server_url")
    scenario.load_scenario(url)
    return url


@pytest.fixture
def scenario_sqlite(sqlite_url) -> str:
    scenario.load_scenario(sqlite_url)
    return sqlite_url


@pytest.fixture
def embedded_app(scenario_sqlite):
    """The app in embedded mode (fakeredis, inline jobs) over the SQLite scenario warehouse."""
    app = create_app({"REDIS_URL": None, "WAREHOUSE_URL": scenario_sqlite, "EXTRACT_ON_START": False})
    yield app
    app.extensions["feature_store"].close()


@pytest.fixture
def make_app():
    """Build apps from settings (make_app(REDIS_URL=..., ...)); each is closed after the test."""
    apps = []

    def make(**settings):
        app = create_app(settings)
        apps.append(app)
        return app

    yield make
    for app in apps:
        app.extensions["feature_store"].close()


@pytest.fixture
def client(embedded_app):
    return embedded_app.test_client()


@pytest.fixture
def fake_redis(embedded_app) -> redis.Redis:
    """The embedded app's in-process Redis."""
    return embedded_app.extensions["feature_store"].store.redis


def descendants(pid: int) -> list[int]:
    """The ids of every process below `pid` (from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    parent = int(stat.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            children.setdefault(parent, []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


@contextmanager
def web_process(tmp_path, **env):
    """The web process as the Procfile starts it (`python -m feature_store`, gunicorn) on a free
    port, with `env` on top of this environment; yields its base URL once it answers /health."""
    import requests

    port = free_port()
    log_path = tmp_path / f"web-{port}.log"
    log = open(log_path, "w")  # noqa: SIM115 - closed below
    process = subprocess.Popen([sys.executable, "-m", "feature_store", "--bind", f"127.0.0.1:{port}"],
                               cwd=PROJECT_DIR, env={**os.environ, **{k: str(v) for k, v in env.items()}},
                               stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"

    def up():
        if process.poll() is not None:
            raise AssertionError(f"gunicorn exited: {log_path.read_text()}")
        try:
            return requests.get(f"{base}/health", timeout=5).ok
        except requests.RequestException:  # refused, or accepted while workers still boot
            return False

    try:
        wait_for(up, timeout=30, what=f"gunicorn on port {port}")
        yield base
    finally:
        try:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
                process.wait(20)
        finally:
            log.close()


class Worker:
    """A real `rq worker` process, started the way the Procfile starts one."""

    def __init__(self, redis_url: str, warehouse_url: str, *extra: str, queue: str = "feature-extraction",
                 env: dict | None = None):
        env = {**os.environ, "WAREHOUSE_URL": warehouse_url, "REDIS_URL": redis_url, "PYTHONPATH": str(PROJECT_DIR),
               **(env or {})}
        rq = str(Path(sys.executable).with_name("rq"))
        self.log = tempfile.NamedTemporaryFile("w+", prefix="rq-worker-", suffix=".log", delete=False)
        self.process = subprocess.Popen(
            [rq, "worker", "--url", redis_url, "--serializer", "json", "--path", str(PROJECT_DIR),
             "--worker-ttl", "10", *extra, queue],
            cwd=PROJECT_DIR, env=env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        self.client = redis.Redis.from_url(redis_url)
        try:
            # Registered when a worker with this process's pid is listed (a count of the workers is
            # not enough: a new worker may also clean a dead one's registration away).
            wait_for(lambda: self.process.poll() is not None or self._registered(), timeout=30,
                     what="the rq worker to register")
            if self.process.poll() is not None:
                raise AssertionError(f"rq worker exited: {self.output()}")
        except BaseException:
            self.kill(signal.SIGKILL)  # never leave it running: it would take the next tests' jobs
            self.client.close()
            raise

    def _registered(self) -> bool:
        pid = str(self.process.pid).encode()
        with self.client.pipeline(transaction=False) as pipe:
            names = list(self.client.smembers("rq:workers"))
            for name in names:
                pipe.hget(name, "pid")
            return pid in pipe.execute()

    def output(self) -> str:
        return Path(self.log.name).read_text()

    def kill(self, sig=signal.SIGKILL) -> None:
        """Signal the worker's process group and, with SIGKILL, its work horse too (RQ's horse
        leaves the group with setpgrp(), so it would survive its worker and finish the job)."""
        if self.process.poll() is None:
            horses = descendants(self.process.pid) if sig == signal.SIGKILL else []
            os.killpg(self.process.pid, sig)
            for pid in horses:
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
            self.process.wait(20)

    def stop(self) -> None:
        """A warm shutdown (the job in progress finishes); one that does not end in 10 s (a SIGTERM
        caught by a work horse still forking, say) is a kill: no worker may outlive its test and
        write into the next one's Redis."""
        try:
            if self.process.poll() is None:
                os.killpg(self.process.pid, signal.SIGTERM)
                self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.kill(signal.SIGKILL)
        self.client.close()
        if not self.log.closed:
            self.log.close()
            os.unlink(self.log.name)


@pytest.fixture
def start_worker(redis_url):
    """Start real rq worker processes: start_worker(warehouse_url, *extra_cli_args)."""
    workers: list[Worker] = []

    def start(warehouse_url: str, *extra: str, env: dict | None = None) -> Worker:
        worker = Worker(redis_url, warehouse_url, *extra, env=env)
        workers.append(worker)
        return worker

    yield start
    for worker in workers:
        worker.stop()


@dataclass
class LogicalPostgres:
    """A private PostgreSQL cluster with wal_level = logical (the streaming tests' warehouse)."""

    folder: Path
    port: int
    pg_ctl: list[str]

    def url(self, database: str = "postgres", user: str = "postgres") -> str:
        return f"postgresql://{user}@127.0.0.1:{self.port}/{database}"

    def restart(self) -> None:
        """A warehouse restart (every connection is dropped), back up when this returns."""
        subprocess.run([*self.pg_ctl, "restart", "-m", "fast", "-w", "-t", "60", "-o", self._options()],
                       check=True, capture_output=True, timeout=90)

    def _options(self) -> str:
        return (f"-c wal_level=logical -c listen_addresses=127.0.0.1 -p {self.port} -k {self.folder} "
                "-c fsync=off -c max_replication_slots=20 -c max_connections=60 "
                # The WAL writer at its slowest (PostgreSQL allows up to 10 s): a record written
                # without a flush stays cut by the flushed position that long (test_streaming.py).
                "-c wal_writer_delay=10s")


def _as_postgres(argv: list[str]) -> list[str]:
    # initdb refuses to run as root: as root, run the server binaries as the postgres user.
    return ["runuser", "-u", "postgres", "--", *argv] if os.geteuid() == 0 else argv


@pytest.fixture(scope="session")
def logical_postgres():
    """A private PostgreSQL cluster (initdb, pg_ctl) with wal_level = logical on a free port, for
    the whole session; the shared PostgreSQL keeps its own wal_level. Each streaming test takes a
    database of its own (logical_database)."""
    pg_config = shutil.which("pg_config")
    bindir = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True).stdout.strip() \
        if pg_config else ""
    if not bindir or not Path(bindir, "initdb").exists():
        service_missing("PostgreSQL server binaries are not installed (pg_config --bindir names no initdb)")
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        service_missing("runuser is needed to run initdb as the postgres user")
    folder = Path(tempfile.mkdtemp(prefix="feature-store-pg-"))  # under /tmp: the postgres user can reach it
    if os.geteuid() == 0:
        import pwd

        entry = pwd.getpwnam("postgres")
        os.chown(folder, entry.pw_uid, entry.pw_gid)
    data = folder / "data"
    subprocess.run(_as_postgres([f"{bindir}/initdb", "-D", str(data), "-A", "trust", "-U", "postgres", "--no-sync",
                                 "-E", "UTF8"]), check=True, capture_output=True, timeout=120)
    server = LogicalPostgres(folder, free_port(), _as_postgres([f"{bindir}/pg_ctl", "-D", str(data), "-l",
                                                                 str(folder / "server.log")]))
    subprocess.run([*server.pg_ctl, "start", "-w", "-t", "60", "-o", server._options()], check=True,
                   capture_output=True, timeout=90)
    try:
        yield server
    finally:
        subprocess.run([*server.pg_ctl, "stop", "-m", "immediate", "-w"], capture_output=True, timeout=60)
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def logical_database(logical_postgres):
    """A database of its own on the private logical cluster, with the scenario's tables and rows
    and REPLICA IDENTITY FULL on them; its replication slots and itself are dropped afterwards."""
    from sqlalchemy.pool import NullPool

    name = f"stream_{uuid.uuid4().hex[:12]}"
    # A fresh connection per use: a test may restart the cluster under a pooled one.
    admin = create_engine(logical_postgres.url(), isolation_level="AUTOCOMMIT", poolclass=NullPool)
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = logical_postgres.url(name)
    scenario.load_scenario(url)
    for table in scenario.TABLE_ROWS:
        scenario.execute(url, f"ALTER TABLE {table} REPLICA IDENTITY FULL")
    yield url
    for _ in range(50):  # a slot in use (a process still reading it) cannot be dropped yet
        try:
            with admin.connect() as conn:
                conn.execute(text("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
                                  "WHERE database = :name"), {"name": name})
            break
        except Exception:  # noqa: BLE001 - retried until the reader lets go
            time.sleep(0.2)
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def history_url(request, tmp_path) -> str:
    """The warehouse with a history (tests/history.py), on each dialect."""
    url = (f"sqlite:///{tmp_path / 'history.db'}" if request.param == "sqlite"
           else request.getfixturevalue("postgres_server_url"))
    history.load(url)
    return url
