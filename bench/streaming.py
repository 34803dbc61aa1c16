"""Real-time updates, measured (BENCHMARKS.md, "Real-time updates"):

    python -m bench.streaming [--users 100000] [--rate 1000] [--seconds 60] [--stop-seconds 300]

On a private PostgreSQL cluster (wal_level = logical, started here as the tests start theirs) with
the demo warehouse of --users users, a private redis-server and the real streaming process:

- decoding: reading a backlog through the slot with test_decoding (text, parsed) and pgoutput
  (binary, its tuples unpacked), rows per second: the choice of plugin;
- write cost: an extraction's writes of every value, plain HSETs against conditional writes
  (ordering.py), over stored values as a refresh writes them;
- latency: --rate changed rows per second (transactions of 10 payments, each a new payment_type
  and status) for --seconds; from each commit's return to its value in Redis, p50 / p99;
- catch-up: the process stopped while --stop-seconds of changes at --rate commit, then started:
  rows applied per second until the slot is caught up.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import pwd
import random
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import redis
from sqlalchemy import create_engine, text

from bench.harness import PROJECT_DIR, free_port, wait_until
from feature_store.features import REGISTRY
from feature_store.online_store import OnlineStore
from feature_store.services.extraction import extract_all
from feature_store.streaming.decoding import parse_rows
from feature_store.versions import current_versions
from feature_store.warehouse import Warehouse, demo


def start_cluster(folder: Path) -> tuple[str, list[str]]:
    """A private cluster with wal_level = logical (as tests/conftest.py's logical_postgres)."""
    bindir = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True, check=True).stdout.strip()
    as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    if os.geteuid() == 0:
        entry = pwd.getpwnam("postgres")
        os.chown(folder, entry.pw_uid, entry.pw_gid)
    subprocess.run([*as_postgres, f"{bindir}/initdb", "-D", str(folder / "data"), "-A", "trust", "-U", "postgres",
                    "--no-sync"], check=True, capture_output=True)
    port = free_port()
    pg_ctl = [*as_postgres, f"{bindir}/pg_ctl", "-D", str(folder / "data"), "-l", str(folder / "log")]
    subprocess.run([*pg_ctl, "start", "-w", "-o", f"-c wal_level=logical -c listen_addresses=127.0.0.1 -p {port} "
                    f"-k {folder} -c max_wal_size=4GB"], check=True, capture_output=True)
    return f"postgresql://postgres@127.0.0.1:{port}/postgres", pg_ctl


def bench_decoding(url: str, payments: list[int], rows: int = 100_000) -> dict:
    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    out = {}
    with engine.connect() as conn:
        conn.execute(text("CREATE PUBLICATION bench_pub FOR ALL TABLES"))
        for slot, plugin in (("bench_text", "test_decoding"), ("bench_binary", "pgoutput")):
            conn.execute(text("SELECT pg_create_logical_replication_slot(:s, :p)"), {"s": slot, "p": plugin})
        for start in range(0, rows, 1000):
            conn.execute(text("UPDATE payment_transactions SET payment_type = 'Debit' WHERE id = ANY(:ids)"),
                         {"ids": payments[start:start + 1000]})
        began = time.perf_counter()
        fetched = conn.execute(text("SELECT lsn::text, xid::text, data FROM pg_logical_slot_peek_changes("
                                    "'bench_text', NULL, NULL, 'include-xids', '1', 'include-timestamp', '1', "
                                    "'skip-empty-xacts', '1')")).all()
        read = time.perf_counter() - began
        transactions, _ = parse_rows(fetched)
        changes = sum(len(t.changes) for t in transactions)
        out["test_decoding"] = {"changes": changes, "read_s": round(read, 3),
                                "parse_s": round(time.perf_counter() - began - read, 3),
                                "rows_per_s": round(changes / (time.perf_counter() - began))}
        began = time.perf_counter()
        fetched = conn.execute(text("SELECT data FROM pg_logical_slot_peek_binary_changes('bench_binary', NULL, "
                                    "NULL, 'proto_version', '1', 'publication_names', 'bench_pub')")).all()
        read = time.perf_counter() - began
        changes = sum(_pgoutput_rows(bytes(row[0])) for row in fetched)
        out["pgoutput"] = {"changes": changes, "read_s": round(read, 3),
                           "parse_s": round(time.perf_counter() - began - read, 3),
                           "rows_per_s": round(changes / (time.perf_counter() - began))}
        for slot in ("bench_text", "bench_binary"):
            conn.execute(text("SELECT pg_drop_replication_slot(:s)"), {"s": slot})
        conn.execute(text("DROP PUBLICATION bench_pub"))
    engine.dispose()
    return out


def _pgoutput_rows(message: bytes) -> int:
    """Unpack one pgoutput message's tuples (as a consumer must); 1 for a row change, else 0."""
    kind = message[:1]
    if kind not in (b"I", b"U", b"D"):
        return 0
    pos = 5  # kind, relation id
    while pos < len(message):
        marker = message[pos:pos + 1]
        count = struct.unpack_from(">h", message, pos + 1)[0]
        pos += 3
        values = []
        for _ in range(count):
            column = message[pos:pos + 1]
            pos += 1
            if column == b"t":
                size = struct.unpack_from(">i", message, pos)[0]
                values.append(message[pos + 4:pos + 4 + size].decode())
                pos += 4 + size
        if marker == b"N":
            break
    return 1


def bench_write_cost(url: str, redis_url: str, rounds: int = 3) -> dict:
    client = redis.Redis.from_url(redis_url)
    store = OnlineStore(client, versions=current_versions(REGISTRY))
    warehouse = Warehouse(url)
    chunks, position = [], {}
    for feature in REGISTRY:
        for chunk in warehouse.stream(feature, chunk_size=10_000,
                                      on_position=lambda at: position.setdefault("at", at)):
            chunks.append((feature.feature_type, chunk))
    values = sum(len(c) for _, c in chunks)
    timings = {"hset": [], "conditional": []}
    for _ in range(rounds):
        for name, at in (("hset", None), ("conditional", position["at"])):
            began = time.perf_counter()
            with store.batch_writer(int(time.time())) as write:
                for feature_type, chunk in chunks:
                    write(feature_type, chunk, at)
            timings[name].append(time.perf_counter() - began)
    warehouse.dispose()
    client.close()
    return {"values": values, **{name: {"seconds": round(min(t), 3), "values_per_s": round(values / min(t))}
                                 for name, t in timings.items()}}


class Changes:
    """Commits `rate` changed payment rows per second (transactions of 10), each payment once,
    and remembers when each commit returned and what its marker value is."""

    def __init__(self, url: str, payments: list[int], rate: int) -> None:
        self.engine = create_engine(url)
        self.payments = iter(payments)
        self.rate = rate
        self.sequence = 0
        self.committed: list[tuple[float, int, bytes]] = []  # (commit returned, payment id, marker JSON)

    def run(self, seconds: float) -> int:
        began = time.perf_counter()
        rows = 0
        with self.engine.connect() as conn:
            while time.perf_counter() - began < seconds:
                due = began + rows / self.rate  # paced: never ahead of the rate
                if due > time.perf_counter():
                    time.sleep(max(0.0, due - time.perf_counter()))  # (the moment may have passed since)
                self.sequence += 1
                ids = [next(self.payments) for _ in range(10)]
                marker = f"c{self.sequence}"
                conn.execute(text("UPDATE payment_transactions SET payment_type = :m, status = CASE WHEN status = "
                                  "'failed' THEN 'succeeded' ELSE 'failed' END WHERE id = ANY(:ids)"),
                             {"m": marker, "ids": ids})
                conn.commit()
                self.committed.append((time.perf_counter(), ids[-1], json.dumps(marker).encode()))
                rows += 10
        self.engine.dispose()
        return rows


def bench_latency(url: str, redis_url: str, payments: list[int], rate: int, seconds: float) -> dict:
    changes = Changes(url, payments, rate)
    client = redis.Redis.from_url(redis_url)
    latencies: list[float] = []
    done = threading.Event()

    def poll():
        seen = 0
        while not done.is_set() or seen < len(changes.committed):
            pending = changes.committed[seen:seen + 2000]
            if not pending:
                time.sleep(0.002)
                continue
            with client.pipeline(transaction=False) as pipe:
                for _, payment, _ in pending:
                    pipe.hget(f"payment_type:{payment}", "value")
                values = pipe.execute()
            now = time.perf_counter()
            for (committed, _, marker), value in zip(pending, values, strict=True):
                if value != marker:
                    break
                latencies.append(now - committed)
                seen += 1
            else:
                continue
            time.sleep(0.002)

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    rows = changes.run(seconds)
    done.set()
    poller.join(120)
    latencies.sort()
    pick = lambda q: round(latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000, 1)  # noqa: E731
    return {"rows": rows, "transactions": len(changes.committed), "measured": len(latencies),
            "rows_per_s": round(rows / seconds), "p50_ms": pick(0.5), "p99_ms": pick(0.99), "max_ms": pick(1.0)}


def stream_process(redis_url: str, url: str, log: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "workers.stream"], cwd=PROJECT_DIR,
                            env={**os.environ, "REDIS_URL": redis_url, "WAREHOUSE_URL": url},
                            stdout=open(log, "a"), stderr=subprocess.STDOUT)  # noqa: SIM115


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--rate", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--stop-seconds", type=float, default=300)
    parser.add_argument("--only", default="decoding,write_cost,latency,catch_up",
                        help="comma-separated: decoding, write_cost, latency, catch_up")
    args = parser.parse_args(argv)
    only = set(args.only.split(","))
    folder = Path(tempfile.mkdtemp(prefix="bench-stream-"))
    url, pg_ctl = start_cluster(folder)
    port = free_port()
    redis_server = subprocess.Popen(["redis-server", "--port", str(port), "--save", "", "--appendonly", "no"],
                                    stdout=subprocess.DEVNULL)
    redis_url = f"redis://127.0.0.1:{port}/0"
    report: dict = {"users": args.users}
    process = None
    try:
        wait_until(lambda: redis.Redis(port=port).ping(), 10, "redis")
        began = time.perf_counter()
        report["warehouse"] = demo.generate(url, args.users)
        report["generate_s"] = round(time.perf_counter() - began, 1)
        engine = create_engine(url)
        with engine.connect() as conn:
            payments = [row[0] for row in conn.execute(text("SELECT id FROM payment_transactions"))]
        engine.dispose()
        random.Random(5).shuffle(payments)
        if "decoding" in only:
            report["decoding"] = bench_decoding(url, payments[-100_000:])
        print(json.dumps(report, indent=1), flush=True)
        warehouse = Warehouse(url)
        extract_all(list(REGISTRY), warehouse, OnlineStore(redis.Redis(port=port),
                                                           versions=current_versions(REGISTRY)), chunk_size=10_000)
        warehouse.dispose()
        if "write_cost" in only:
            report["write_cost"] = bench_write_cost(url, redis_url)
        print(json.dumps(report, indent=1), flush=True)
        log = folder / "stream.log"
        process = stream_process(redis_url, url, log)
        wait_until(lambda: b"streaming" == (redis.Redis(port=port).hget("feature-store:stream:feature_store", "state")
                                            or b""), 60, "the streaming process")
        if "latency" in only:
            report["latency"] = bench_latency(url, redis_url, payments[:-100_000], args.rate, args.seconds)
        print(json.dumps(report, indent=1), flush=True)
        process.terminate()
        process.wait(30)
        if "catch_up" not in only:
            return
        backlog = Changes(url, payments, args.rate)
        backlog.payments = itertools.cycle(payments)  # each row changed again and again: only the rate matters
        rows = backlog.run(args.stop_seconds)
        with create_engine(url).connect() as conn:
            target = conn.execute(text("SELECT pg_current_wal_lsn()::text")).scalar()
        logged = log.stat().st_size  # the catch-up's batches are logged after this (the latency run's before)
        began = time.perf_counter()
        process = stream_process(redis_url, url, log)
        check = create_engine(url)

        def caught_up() -> bool:
            with check.connect() as conn:
                return conn.execute(text("SELECT confirmed_flush_lsn >= CAST(:t AS pg_lsn) FROM pg_replication_slots "
                                         "WHERE slot_name = 'feature_store'"), {"t": target}).scalar()
        wait_until(caught_up, 3600, "the catch-up")
        seconds = time.perf_counter() - began
        check.dispose()
        # The streaming process's peak memory (its batches' rows and changes), read before it stops.
        peak = re.search(r"VmHWM:\s+(\d+) kB", Path(f"/proc/{process.pid}/status").read_text())
        report["catch_up_peak_rss_mb"] = round(int(peak.group(1)) / 1024) if peak else None
        phases = {"read": 0.0, "decoding": 0.0, "apply": 0.0, "confirm": 0.0, "batches": 0, "changes": 0}
        report["catch_up_batches"] = []  # per batch: changes, then read, decoding, apply, confirm seconds
        with open(log, "rb") as lines:
            lines.seek(logged)
            catch_up_log = lines.read().decode()
        for line in catch_up_log.splitlines():
            if "applied" in line and "(read " in line:
                numbers = re.findall(r"(read|decoding|apply|confirm) ([0-9.]+)s", line)
                changes = re.search(r"\((\d+) changes\)", line).group(1)
                phases["batches"] += 1
                phases["changes"] += int(changes)
                for name, value in numbers:
                    phases[name] += float(value)
                report["catch_up_batches"].append(" ".join([changes] + [value for _, value in numbers]))
        report["catch_up_phases_s"] = {k: round(v, 2) if isinstance(v, float) else v for k, v in phases.items()}
        report["catch_up"] = {"rows": rows, "stopped_s": args.stop_seconds, "seconds": round(seconds, 1),
                              "rows_per_s": round(rows / seconds),
                              "x_change_rate": round(rows / seconds / args.rate, 1)}
        print(json.dumps(report, indent=1), flush=True)
    finally:
        if process is not None and process.poll() is None:
            process.terminate()
            process.wait(30)
        redis_server.terminate()
        subprocess.run([*pg_ctl, "stop", "-m", "immediate"], capture_output=True)
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
