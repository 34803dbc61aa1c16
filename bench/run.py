"""The benchmark suite (BENCHMARKS.md). Every figure is measured beside its floor in the same run.

    python -m bench.run [--full] [--only inference,training,extraction,scaleout,memory,cold,cursor_plan,
                                as_of,training_sets,feature_set,metrics_cost,cluster,statistics_cost]

Quick (default, a few minutes): 20,000-user warehouse for serving, 100,000 users for extraction.
--full: 1,000,000 users for extraction (about 6 million values), longer wrk runs.
Load generator: wrk (apt-get install -y wrk), sharing this machine's 2 cores with the server.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import platform
import random
import re
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from datetime import datetime, timedelta
from pathlib import Path
from unittest import mock

import orjson
import redis
import requests

from bench.harness import Deployment, rss_mb
from bench.statistics_cost import bench_statistics_cost
from feature_store.features import REGISTRY
from feature_store.metrics_buffer import FLUSH_SECONDS
from feature_store.online_store import OnlineStore, now_seconds
from feature_store.warehouse import Warehouse, demo
from feature_store.warehouse.statements import Current

API = "/api/v1/features"
RESULTS = Path(__file__).with_name("results")
PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/test"

WRK_SCRIPT = """
local bodies = {%s}
local i = 0
request = function()
  i = i %% #bodies + 1
  return wrk.format("POST", "%s", {["Content-Type"] = "application/json"}, bodies[i])
end
"""


def lua_string(text: str) -> str:
    return "[==[" + text + "]==]"


def wrk(url: str, path: str, bodies: list[str], connections: int, seconds: int) -> dict:
    script = Path(tempfile.mkstemp(suffix=".lua")[1])
    script.write_text(WRK_SCRIPT % (", ".join(lua_string(b) for b in bodies), path))
    threads = min(2, connections)
    out = subprocess.run(["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(script),
                          url], capture_output=True, text=True, check=True).stdout
    script.unlink()

    def latency(label):
        match = re.search(rf"^\s+{label}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        value, unit = float(match.group(1)), match.group(2)
        return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value

    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket_errors = re.search(r"Socket errors: (.*)", out)
    return {"rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
            "requests": int(re.search(r"(\d+) requests in", out).group(1)),
            "p50_ms": round(latency("50"), 2), "p99_ms": round(latency("99"), 2),
            "non_2xx": int(errors.group(1)) if errors else 0,
            "socket_errors": socket_errors.group(1) if socket_errors else None}


def sample_keys(warehouse_url: str, count: int, seed: int = 1) -> list[tuple[str, str]]:
    warehouse = Warehouse(warehouse_url)
    try:
        keys = [(f.feature_type, str(eid)) for f in REGISTRY
                for chunk in warehouse.stream(f, chunk_size=50_000) for eid, _ in chunk]
    finally:
        warehouse.dispose()
    return random.Random(seed).sample(keys, count)


def extract(base: str, timeout: float = 3600) -> dict:
    job = requests.post(f"{base}{API}/extract?wait=false", timeout=30).json()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = requests.get(job["status_url"], timeout=30).json()
        if status["status"] in ("finished", "failed"):
            return status
        time.sleep(0.2)
    raise RuntimeError("extraction did not finish")


# --- 1. inference --------------------------------------------------------------------------------
def bench_inference(args, report) -> None:
    with Deployment() as deployment:
        deployment.start_redis()
        deployment.make_sqlite_warehouse(20_000)
        base = deployment.start_web()
        deployment.start_worker()
        assert extract(base)["status"] == "finished"
        deployment.stop_web()
        keys = sample_keys(deployment.warehouse_url, 1000)
        bodies = [json.dumps({"feature_type": ft, "entity_id": eid}) for ft, eid in keys]
        results = {}
        for name, app in [("floor_a_constant", "bench.floors:constant"), ("floor_b_hgetall", "bench.floors:hgetall"),
                          ("feature_store", "wsgi:app")]:
            base = deployment.start_web(app)
            wrk(base, API + "/inference", bodies, 16, 3)  # warm-up
            for connections in (16, 64):
                results[f"{name}@{connections}"] = wrk(base, API + "/inference", bodies, connections, args.seconds)
            deployment.stop_web()
        for connections in (16, 64):
            ours = results[f"feature_store@{connections}"]
            a, b = results[f"floor_a_constant@{connections}"], results[f"floor_b_hgetall@{connections}"]
            results[f"ratios@{connections}"] = {"vs_floor_a_rps": round(ours["rps"] / a["rps"], 2),
                                                "vs_floor_b_rps": round(ours["rps"] / b["rps"], 2),
                                                "p99_vs_floor_b": round(ours["p99_ms"] / b["p99_ms"], 2)}
        report["inference"] = results


# --- 2. training ---------------------------------------------------------------------------------
def pipelined_hgetall_floor(redis_url: str, keys: list[tuple[str, str]], seconds: float = 3.0) -> float:
    client = redis.Redis.from_url(redis_url, socket_timeout=None)
    names = [f"{ft}:{eid}" for ft, eid in keys]
    done = 0
    started = time.perf_counter()
    while time.perf_counter() - started < seconds:
        with client.pipeline(transaction=False) as pipe:
            for name in names:
                pipe.hgetall(name)
            replies = pipe.execute()
        decoded = [{k.decode(): v.decode() for k, v in reply.items()} for reply in replies]
        done += len(decoded)
    client.close()
    return done / (time.perf_counter() - started)


def bench_training(args, report) -> None:
    with Deployment() as deployment:
        deployment.start_redis()
        deployment.make_sqlite_warehouse(20_000)
        base = deployment.start_web()
        deployment.start_worker()
        assert extract(base)["status"] == "finished"
        results = {}
        for items in (1000, 10_000):
            keys = sample_keys(deployment.warehouse_url, items, seed=items)
            body = json.dumps({"features": [{"feature_type": ft, "entity_id": eid} for ft, eid in keys]})
            floor = pipelined_hgetall_floor(deployment.redis_url, keys)
            results[f"floor_pipelined_hgetall@{items}"] = {"features_per_s": round(floor)}
            for connections in (1, 16):
                run = wrk(base, API + "/training", [body], connections, args.seconds)
                fps = run["rps"] * items
                results[f"feature_store@{items}x{connections}"] = {**run, "features_per_s": round(fps),
                                                                    "vs_floor": round(fps / floor, 2)}
        report["training"] = results


# --- 3. extraction -------------------------------------------------------------------------------
def hset_floor(redis_url: str, values: int, chunk: int = 10_000) -> float:
    """Values/s of pipelined HSETs of `values` precomputed values from one Python process."""
    client = redis.Redis.from_url(redis_url, socket_timeout=None)
    client.flushall()
    computed_at = now_seconds()
    rows = [(f"user_failed_transaction_count:{i}", b"3") for i in range(values)]
    started = time.perf_counter()
    for start in range(0, values, chunk):
        with client.pipeline(transaction=False) as pipe:
            for key, value in rows[start:start + chunk]:
                pipe.execute_command("HSET", key, "value", value, "computed_at", computed_at)
            pipe.execute()
    elapsed = time.perf_counter() - started
    client.flushall()
    client.close()
    return values / elapsed


def make_pg_warehouse(users: int) -> str:
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    name = f"feature_store_bench_{users}"
    admin = create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        exists = conn.execute(text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": name}).first()
        if not exists:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    url = make_url(PG_ADMIN).set(database=name).render_as_string(hide_password=False)
    demo.generate(url, users=users, seed=7, if_missing=True)
    return url


def bench_extraction(args, report) -> None:
    users = 1_000_000 if args.full else 100_000
    results = {}
    with Deployment() as deployment:
        deployment.start_redis()
        started = time.perf_counter()
        sqlite_url = deployment.make_sqlite_warehouse(users, path=RESULTS.parent.parent / "var" / f"bench-{users}.db")
        results["generate_sqlite_s"] = round(time.perf_counter() - started, 1)
        started = time.perf_counter()
        pg_url = make_pg_warehouse(users)
        results["generate_postgresql_s"] = round(time.perf_counter() - started, 1)
        for dialect, url in [("sqlite", sqlite_url), ("postgresql", pg_url)]:
            redis.Redis.from_url(deployment.redis_url, socket_timeout=None).flushall()
            deployment.warehouse_url = url
            base = deployment.start_web(EXTRACT_WAIT_SECONDS=1)
            worker = deployment.start_worker()
            peak = [0.0]
            stop = threading.Event()

            def sample(worker=worker, peak=peak, stop=stop):
                while not stop.wait(0.2):
                    peak[0] = max(peak[0], rss_mb(worker.pid))

            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            started = time.perf_counter()
            status = extract(base)
            elapsed = time.perf_counter() - started
            assert status["status"] == "finished", status
            values = status["result"]["total_features"]
            client = redis.Redis.from_url(deployment.redis_url, socket_timeout=None)
            record_bytes = sum(client.memory_usage(key, samples=0) for key in client.scan_iter("feature-store:ids:*"))
            # A second run over the populated store: every value overwritten, stale values looked
            # up in the id records (the first run's store was empty).
            peak_first = peak[0]
            started = time.perf_counter()
            again = extract(base)
            elapsed_again = time.perf_counter() - started
            stop.set()
            sampler.join()
            assert again["status"] == "finished", again
            floor = hset_floor(deployment.redis_url, values)
            results[dialect] = {"users": users, "values": values, "seconds": round(elapsed, 1),
                                "values_per_s": round(values / elapsed), "floor_hset_values_per_s": round(floor),
                                "vs_floor": round(values / elapsed / floor, 2),
                                "worker_peak_rss_mb": round(peak_first, 1), "stages_s": status["result"]["stages"],
                                "second_run": {"seconds": round(elapsed_again, 1),
                                               "vs_floor": round(values / elapsed_again / floor, 2),
                                               "stages_s": again["result"]["stages"],
                                               "worker_peak_rss_mb": round(peak[0], 1)},
                                "id_record_bytes_per_value": round(record_bytes / values, 3)}
            print(dialect, json.dumps(results[dialect]), flush=True)
            deployment.stop_web()
            deployment.workers[-1].terminate()
            deployment.workers[-1].wait(30)
    report["extraction"] = results


# --- 4. scale-out -------------------------------------------------------------------------------
def bench_scaleout(args, report) -> None:
    users = 1_000_000 if args.full else 100_000
    results = {}
    with Deployment() as deployment:
        deployment.start_redis()
        deployment.make_sqlite_warehouse(users, path=RESULTS.parent.parent / "var" / f"bench-{users}.db")
        for name, partitions, workers in [("1 job, 1 worker", 1, 1), ("2 partitions, 1 worker", 2, 1),
                                          ("2 partitions, 2 workers", 2, 2)]:
            redis.Redis.from_url(deployment.redis_url, socket_timeout=None).flushall()
            base = deployment.start_web(EXTRACT_WAIT_SECONDS=1)
            for _ in range(workers):
                deployment.start_worker(EXTRACT_PARTITIONS=partitions)
            started = time.perf_counter()
            status = extract(base)
            elapsed = time.perf_counter() - started
            assert status["status"] == "finished", status
            values = status["result"]["total_features"]
            results[name] = {"users": users, "values": values, "seconds": round(elapsed, 1),
                             "values_per_s": round(values / elapsed)}
            print(name, json.dumps(results[name]), flush=True)
            deployment.stop_web()
            for worker in deployment.workers:
                if worker.poll() is None:
                    worker.terminate()
                    worker.wait(30)
        base_rate = results["1 job, 1 worker"]["values_per_s"]
        for result in results.values():
            result["vs_1_job_1_worker"] = round(result["values_per_s"] / base_rate, 2)
    report["scaleout"] = results


# --- 5. memory per value -------------------------------------------------------------------------
# The least a value can cost above the floor's key in the contract's layout. The floor's one-field
# listpack is 13 bytes (6 header + 3 "v" + 3 "x" + 1 end), a 16-byte jemalloc allocation. Ours holds
# the field names "value" (7 bytes as an entry) and "computed_at" (13), a computed_at of this
# century's epoch seconds (a 32-bit integer entry: 6) and a value of at least 2 bytes: 6 + 7 + 2 +
# 13 + 6 + 1 = 35 bytes, a 48-byte allocation. Everything else per key is the same for both.
MIN_EXTRA_BYTES = 48 - 16


def stored_bytes(client: redis.Redis) -> int:
    """INFO memory's used_memory without the clients' buffers (which come and go with the
    writer's pipeline, and would make a figure depend on when INFO was asked)."""
    memory = client.info("memory")
    return memory["used_memory"] - memory.get("mem_clients_normal", 0)


def sample_usage(client: redis.Redis, feature_type: str, chunks: list, sample: int = 500) -> float:
    """Mean MEMORY USAGE (key, object, allocation) of the first `sample` keys."""
    keys = [f"{feature_type}:{entity_id}" for chunk in chunks for entity_id, _ in chunk][:sample]
    return round(sum(client.memory_usage(key, samples=0) for key in keys) / len(keys), 1)


def bench_memory(args, report) -> None:
    results = {}
    with Deployment() as deployment:
        deployment.start_redis()
        url = deployment.make_sqlite_warehouse(20_000)
        client = redis.Redis.from_url(deployment.redis_url, socket_timeout=None)
        store = OnlineStore(client)
        warehouse = Warehouse(url)
        computed_at = now_seconds()
        total_ours = total_floor = total_keys = 0
        for feature in REGISTRY:
            chunks = list(warehouse.stream(feature, chunk_size=10_000))
            count = sum(len(c) for c in chunks)
            client.flushall()
            before = stored_bytes(client)
            for chunk in chunks:
                store.write(feature.feature_type, chunk, computed_at)
            ours = stored_bytes(client) - before
            encoding = client.object("encoding", f"{feature.feature_type}:{chunks[0][0][0]}")
            client.flushall()
            before = stored_bytes(client)
            with client.pipeline(transaction=False) as pipe:
                for chunk in chunks:
                    for entity_id, _ in chunk:
                        pipe.hset(f"{feature.feature_type}:{entity_id}", "v", "x")
                pipe.execute()
            floor = stored_bytes(client) - before
            floor_usage = sample_usage(client, feature.feature_type, chunks)
            client.flushall()
            for chunk in chunks:
                store.write(feature.feature_type, chunk, computed_at)
            ours_usage = sample_usage(client, feature.feature_type, chunks)
            results[feature.feature_type] = {"keys": count, "bytes_per_value": round(ours / count, 1),
                                             "floor_bytes_per_key": round(floor / count, 1),
                                             "ratio": round(ours / floor, 2), "encoding": encoding.decode(),
                                             "memory_usage_per_key": {"ours": ours_usage, "floor": floor_usage},
                                             "best_possible_ratio": round((floor + MIN_EXTRA_BYTES * count) / floor, 3)}
            total_ours, total_floor, total_keys = total_ours + ours, total_floor + floor, total_keys + count
        warehouse.dispose()
        client.flushall()
        results["all"] = {"keys": total_keys, "bytes_per_value": round(total_ours / total_keys, 1),
                          "floor_bytes_per_key": round(total_floor / total_keys, 1),
                          "ratio": round(total_ours / total_floor, 2),
                          "best_possible_ratio": round((total_floor + MIN_EXTRA_BYTES * total_keys) / total_floor, 3)}
    report["memory"] = results


# --- 6. cold path --------------------------------------------------------------------------------
def bench_cold(args, report) -> None:
    results = {}
    with Deployment() as deployment:
        deployment.start_redis()
        sqlite_url = deployment.make_sqlite_warehouse(20_000)
        pg_url = make_pg_warehouse(20_000)
        client = redis.Redis.from_url(deployment.redis_url, socket_timeout=None)
        for dialect, url in [("sqlite", sqlite_url), ("postgresql", pg_url)]:
            deployment.warehouse_url = url
            base = deployment.start_web()
            keys = sample_keys(url, 3000, seed=5)
            session = requests.Session()
            client.flushall()
            latencies = []
            for ft, eid in keys[:500]:
                started = time.perf_counter()
                response = session.post(f"{base}{API}/inference", json={"feature_type": ft, "entity_id": eid})
                latencies.append((time.perf_counter() - started) * 1000)
                assert response.status_code == 200
            latencies.sort()
            training = []
            for round_ in range(2):
                client.flushall()
                batch = keys[1000 + round_ * 1000:2000 + round_ * 1000]
                started = time.perf_counter()
                response = session.post(f"{base}{API}/training", json={
                    "features": [{"feature_type": ft, "entity_id": eid} for ft, eid in batch]})
                training.append((time.perf_counter() - started) * 1000)
                assert response.json()["total_successful"] == 1000
            results[dialect] = {"inference_miss_p50_ms": round(latencies[len(latencies) // 2], 2),
                                "inference_miss_p99_ms": round(latencies[int(len(latencies) * 0.99)], 2),
                                "training_1000_missing_ms": round(min(training), 1)}
            deployment.stop_web()
    report["cold"] = results


# --- 7. batch plans on a warehouse without statistics --------------------------------------------
def make_unanalyzed_pg_warehouse(users: int, payments: int, seed: int = 7) -> str:
    """A fresh PostgreSQL warehouse (the project's schema) that has never been analyzed: `users`
    users, one of them with one policy holding `payments` payment transactions (demo.py's shapes,
    loaded by COPY like demo.load), autovacuum (and so autoanalyze) off on every table."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    name = f"feature_store_bench_cursor_plan_{uuid.uuid4().hex[:8]}"
    admin = create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    url = make_url(PG_ADMIN).set(database=name).render_as_string(hide_password=False)
    engine = create_engine(url)
    try:
        demo.create_schema(engine)
        with engine.begin() as conn:
            for table in demo.TABLES:
                conn.exec_driver_sql(f"ALTER TABLE {table} SET (autovacuum_enabled = false)")
        rng = random.Random(seed)
        statuses, weights = zip(*demo.PAYMENT_STATUSES, strict=True)
        bound_at = demo.START
        raw = engine.raw_connection()
        try:
            cursor = raw.cursor()
            with cursor.copy("COPY users FROM STDIN") as copy:
                for user_id in range(1, users + 1):
                    copy.write_row((user_id, f"user{user_id}@example.com", demo.START))
            with cursor.copy("COPY quotes FROM STDIN") as copy:
                copy.write_row((1, 1, 100_000, demo.START, bound_at))
            with cursor.copy("COPY policies FROM STDIN") as copy:
                copy.write_row((1, 1, 1, "active", bound_at))
            with cursor.copy("COPY payment_transactions FROM STDIN") as copy:
                for payment_id in range(1, payments + 1):
                    copy.write_row((payment_id, 1, rng.randint(1_000, 50_000), rng.choice(demo.PAYMENT_TYPES),
                                    rng.choices(statuses, weights)[0], bound_at + timedelta(seconds=payment_id)))
            raw.commit()
        finally:
            raw.close()
    except BaseException:
        drop_pg_database(url)
        raise
    finally:
        engine.dispose()
    return url


def drop_pg_database(url: str) -> None:
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    admin = create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{make_url(url).database}" WITH (FORCE)'))
    admin.dispose()


def stream_query_stage(url: str, cursor_tuple_fraction: float, chunk_size: int = 10_000) -> dict:
    """Seconds of extraction's query stage (Warehouse.stream over every feature, less encoding),
    with batch reads planned for `cursor_tuple_fraction` of their rows."""
    import feature_store.warehouse as warehouse_module

    results = {}
    with mock.patch.object(warehouse_module, "_BATCH_CURSOR_TUPLE_FRACTION", cursor_tuple_fraction):
        warehouse = Warehouse(url)
        try:
            for feature in REGISTRY:
                timings: dict[str, float] = {}
                rows = 0
                started = time.perf_counter()
                for chunk in warehouse.stream(feature, chunk_size=chunk_size, timings=timings):
                    rows += len(chunk)
                elapsed = time.perf_counter() - started
                query = elapsed - timings.get("encode", 0.0)
                results[feature.feature_type] = {"rows": rows, "query_s": round(query, 3)}
        finally:
            warehouse.dispose()
    results["total_query_s"] = round(sum(r["query_s"] for r in results.values()), 3)
    return results


def plain_statements(url: str) -> dict:
    """The floor: the same statements (as the batch read compiles them), run on a plain
    client-side psycopg cursor (no server-side cursor, so planned for all rows), fetchall."""
    results = {}
    warehouse = Warehouse(url)
    try:
        with warehouse.batch_engine.connect() as conn:
            dialect = conn.dialect
            driver = conn.connection.driver_connection
            for feature in REGISTRY:
                statement = feature.query(Current())
                compiled = statement.compile(dialect=dialect, compile_kwargs={"render_postcompile": True})
                params = compiled.construct_params()
                if compiled.positional:
                    params = tuple(params[name] for name in compiled.positiontup)
                started = time.perf_counter()
                with driver.cursor() as cursor:
                    cursor.execute(compiled.string, params)
                    rows = len(cursor.fetchall())
                results[feature.feature_type] = {"rows": rows, "seconds": round(time.perf_counter() - started, 3)}
    finally:
        warehouse.dispose()
    results["total_s"] = round(sum(r["seconds"] for r in results.values()), 3)
    return results


def explain_cursor(url: str, feature_type: str, cursor_tuple_fraction: float) -> dict:
    """The plan PostgreSQL picks for `feature_type`'s query declared as a cursor (EXPLAIN DECLARE,
    without running it) at `cursor_tuple_fraction`: its top nodes and estimated total cost."""
    feature = REGISTRY.get(feature_type)
    warehouse = Warehouse(url)
    try:
        with warehouse.batch_engine.connect() as conn:
            sql = str(feature.query(Current()).compile(dialect=conn.dialect, compile_kwargs={"literal_binds": True}))
            conn.exec_driver_sql(f"SET LOCAL cursor_tuple_fraction = {cursor_tuple_fraction!r}")
            plan = conn.exec_driver_sql(f"EXPLAIN (FORMAT JSON) DECLARE c CURSOR FOR {sql}").scalar_one()
    finally:
        warehouse.dispose()
    plan = plan[0]["Plan"] if isinstance(plan, list) else orjson.loads(plan)[0]["Plan"]
    nodes = []
    pending = [plan]
    while pending and len(nodes) < 8:
        node = pending.pop(0)
        nodes.append(node["Node Type"] + (f" ({node['Join Type']})" if "Join Type" in node else ""))
        pending.extend(node.get("Plans", []))
    return {"nodes": nodes, "total_cost": plan["Total Cost"]}


def bench_cursor_plan(args, report) -> None:
    from sqlalchemy import create_engine, text

    users, payments = 2_000, 400_000
    started = time.perf_counter()
    url = make_unanalyzed_pg_warehouse(users, payments)
    results = {"users": users, "payments": payments, "load_s": round(time.perf_counter() - started, 1)}
    try:
        engine = create_engine(url)
        with engine.connect() as conn:
            results["server_default_cursor_tuple_fraction"] = float(
                conn.execute(text("SHOW cursor_tuple_fraction")).scalar_one())
            results["never_analyzed"] = not conn.execute(text(
                "SELECT count(*) FROM pg_stat_user_tables WHERE last_analyze IS NOT NULL "
                "OR last_autoanalyze IS NOT NULL")).scalar_one()
        engine.dispose()
        # The floor and the fix, best of 3 (short); the default's plan once (tens of seconds).
        results["floor_plain_statements"] = min((plain_statements(url) for _ in range(3)),
                                                key=lambda r: r["total_s"])
        results["after_fraction_1"] = min((stream_query_stage(url, 1.0) for _ in range(3)),
                                          key=lambda r: r["total_query_s"])
        results["before_fraction_0.1"] = stream_query_stage(url, 0.1)
        results["plans"] = {f"fraction_{fraction}": explain_cursor(url, "user_policy_time_of_purchase", fraction)
                            for fraction in (0.1, 1.0)}
        floor = results["floor_plain_statements"]["total_s"]
        results["before_vs_floor"] = round(results["before_fraction_0.1"]["total_query_s"] / floor, 1)
        results["after_vs_floor"] = round(results["after_fraction_1"]["total_query_s"] / floor, 2)
        with create_engine(url).connect() as conn:  # still unanalyzed after the runs
            results["never_analyzed_after"] = not conn.execute(text(
                "SELECT count(*) FROM pg_stat_user_tables WHERE last_analyze IS NOT NULL "
                "OR last_autoanalyze IS NOT NULL")).scalar_one()
    finally:
        drop_pg_database(url)
    report["cursor_plan"] = results

# --- 8. point-in-time values: /training with as_of items ------------------------------------------
BENCH_USERS = 100_000
USER_FEATURES = ("user_failed_transaction_count", "user_policy_time_of_purchase")
SPINE_SQL = {  # the floor's spine, loaded with the statement (unnest / json_each) or before it (temp table)
    ("postgresql", "arrays"): "unnest(%s::int[], %s::bigint[], %s::timestamp[]) AS s(pos, id, as_of)",
    ("postgresql", "temp_table"): "s",
    ("sqlite", "arrays"): "(SELECT value ->> 0 AS pos, value ->> 1 AS id, value ->> 2 AS as_of FROM json_each(?)) AS s",
    ("sqlite", "temp_table"): "s",
}
# The floor's statements, by hand, per feature: a join then GROUP BY, or a correlated subquery per
# spine row. Timestamps compare as stored: typed on PostgreSQL; on SQLite the generator's text
# (`YYYY-MM-DD HH:MM:SS[.ffffff]`) against instants with six fraction digits, which compares as
# time does for those two forms (the product normalizes every form it accepts).
FLOOR_SQL = {
    "user_failed_transaction_count": {
        "join": """SELECT s.pos, count(t.id) FROM {spine}
            JOIN users u ON u.id = s.id AND u.created_at <= s.as_of
            LEFT JOIN policies p ON p.user_id = u.id AND p.created_at <= s.as_of
            LEFT JOIN payment_transactions t ON t.policy_id = p.id AND t.status = 'failed' AND t.created_at <= s.as_of
            GROUP BY s.pos""",
        "subquery": """SELECT s.pos, (SELECT count(*) FROM policies p JOIN payment_transactions t ON t.policy_id = p.id
            WHERE p.user_id = s.id AND p.created_at <= s.as_of AND t.status = 'failed' AND t.created_at <= s.as_of)
            FROM {spine} JOIN users u ON u.id = s.id AND u.created_at <= s.as_of"""},
    "user_policy_time_of_purchase": {
        "join": """SELECT s.pos, min(t.created_at) FROM {spine}
            JOIN users u ON u.id = s.id AND u.created_at <= s.as_of
            LEFT JOIN policies p ON p.user_id = u.id AND p.created_at <= s.as_of
            LEFT JOIN payment_transactions t ON t.policy_id = p.id AND t.status = 'succeeded'
                AND t.created_at <= s.as_of
            GROUP BY s.pos""",
        "subquery": """SELECT s.pos, (SELECT min(t.created_at) FROM policies p
            JOIN payment_transactions t ON t.policy_id = p.id
            WHERE p.user_id = s.id AND p.created_at <= s.as_of AND t.status = 'succeeded' AND t.created_at <= s.as_of)
            FROM {spine} JOIN users u ON u.id = s.id AND u.created_at <= s.as_of"""},
}


def bench_warehouses(deployment: Deployment) -> dict[str, str]:
    """The 100,000-user bench warehouses (the extraction benchmark's), made if missing."""
    sqlite_url = deployment.make_sqlite_warehouse(BENCH_USERS, path=RESULTS.parent.parent / "var"
                                                  / f"bench-{BENCH_USERS}.db")
    return {"postgresql": make_pg_warehouse(BENCH_USERS), "sqlite": sqlite_url}


def data_range(url: str) -> tuple[datetime, datetime]:
    """From the first user's creation to the last payment: the instants a spine is drawn from."""
    from sqlalchemy import create_engine, text

    engine = create_engine(url)
    with engine.connect() as conn:
        low, high = conn.execute(text("SELECT (SELECT min(created_at) FROM users), "
                                      "(SELECT max(created_at) FROM payment_transactions)")).one()
    engine.dispose()
    parse = lambda v: v if isinstance(v, datetime) else datetime.fromisoformat(v)  # noqa: E731
    return parse(low), parse(high)


def random_instants(rng: random.Random, low: datetime, high: datetime, count: int) -> list[datetime]:
    """`count` distinct instants, uniform over [low, high], to the microsecond."""
    span = int((high - low) / timedelta(microseconds=1))
    instants: set[datetime] = set()
    while len(instants) < count:
        instants.add(low + timedelta(microseconds=rng.randint(0, span)))
    return rng.sample(sorted(instants), count)


def normalized(value):
    """A feature value (the API's JSON value or a driver's) comparable across both."""
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value)
        except ValueError:
            return value
    return value


def floor_statement(url: str, dialect: str, feature_type: str, shape: str, spine_kind: str,
                    items: list[tuple[int, int, datetime]]) -> tuple[float, dict]:
    """One hand-written statement of `feature_type` over `items` (pos, id, instant), run with the
    driver on an open connection: (seconds including the spine's load, {pos: value})."""
    sql = FLOOR_SQL[feature_type][shape].format(spine=SPINE_SQL[(dialect, spine_kind)])
    if dialect == "postgresql":
        import psycopg

        with psycopg.connect(url) as conn:
            conn.execute("SELECT 1")
            started = time.perf_counter()
            if spine_kind == "arrays":
                rows = conn.execute(sql, ([i[0] for i in items], [i[1] for i in items], [i[2] for i in items]))
            else:
                conn.execute("CREATE TEMP TABLE s (pos int, id bigint, as_of timestamp) ON COMMIT DROP")
                with conn.cursor().copy("COPY s (pos, id, as_of) FROM STDIN") as copy:
                    for item in items:
                        copy.write_row(item)
                conn.execute("ANALYZE s")
                rows = conn.execute(sql)
            values = dict(rows.fetchall())
            return time.perf_counter() - started, values
    import sqlite3

    conn = sqlite3.connect(f"file:{url.removeprefix('sqlite:///')}?mode=ro", uri=True)
    try:
        conn.execute("SELECT 1")
        started = time.perf_counter()
        texts = [(pos, eid, moment.isoformat(sep=" ", timespec="microseconds")) for pos, eid, moment in items]
        if spine_kind == "arrays":
            values = dict(conn.execute(sql, (orjson.dumps(texts).decode(),)).fetchall())
        else:
            conn.execute("CREATE TEMP TABLE s (pos INTEGER PRIMARY KEY, id INTEGER, as_of TEXT)")
            conn.executemany("INSERT INTO s VALUES (?, ?, ?)", texts)
            values = dict(conn.execute(sql).fetchall())
        return time.perf_counter() - started, values
    finally:
        conn.close()


def bench_as_of(args, report) -> None:
    """POST /training with 10,000 as-of items (5,000 per user feature, random users, distinct
    random instants) over HTTP, against the best hand-written statement per feature."""
    results = {}
    per_feature = 5_000
    with Deployment() as deployment:
        deployment.start_redis()
        urls = bench_warehouses(deployment)
        for dialect in ("postgresql", "sqlite"):
            url = urls[dialect]
            low, high = data_range(url)
            rng = random.Random(11)
            instants = random_instants(rng, low, high, per_feature * len(USER_FEATURES))
            items = [{"feature_type": feature_type, "entity_id": rng.randint(1, BENCH_USERS),
                      "as_of": instants[i * per_feature + j].isoformat(timespec="microseconds")}
                     for i, feature_type in enumerate(USER_FEATURES) for j in range(per_feature)]
            body = orjson.dumps({"features": items})
            spines = {ft: [(pos, item["entity_id"], datetime.fromisoformat(item["as_of"]))
                           for pos, item in enumerate(items) if item["feature_type"] == ft] for ft in USER_FEATURES}
            # The floor: every candidate, best of 5; the best candidate per feature.
            floors, expected = {}, {}
            for feature_type in USER_FEATURES:
                candidates = {}
                for shape in ("join", "subquery"):
                    for spine_kind in ("arrays", "temp_table"):
                        runs = [floor_statement(url, dialect, feature_type, shape, spine_kind, spines[feature_type])
                                for _ in range(5)]
                        candidates[f"{shape}/{spine_kind}"] = round(min(r[0] for r in runs) * 1000, 2)
                        values = runs[0][1]
                        if feature_type in expected:
                            assert values == expected[feature_type], (feature_type, shape, spine_kind)
                        expected[feature_type] = values
                best = min(candidates, key=candidates.get)
                floors[feature_type] = {"candidates_ms": candidates, "best": best, "best_ms": candidates[best]}
            floor_ms = sum(f["best_ms"] for f in floors.values())
            # The product's statements alone, in-process (Warehouse.compute_as_of), to apportion.
            warehouse = Warehouse(url, request_timeout=30)
            statements_ms = {}
            for feature_type in USER_FEATURES:
                feature = REGISTRY.get(feature_type)
                timings = []
                for _ in range(5):
                    started = time.perf_counter()
                    warehouse.compute_as_of(feature, spines[feature_type])
                    timings.append(time.perf_counter() - started)
                statements_ms[feature_type] = round(min(timings) * 1000, 2)
            warehouse.dispose()
            # End to end over HTTP.
            deployment.warehouse_url = url
            base = deployment.start_web()
            session = requests.Session()
            session.post(f"{base}{API}/training", data=body, headers={"Content-Type": "application/json"})  # warm-up
            timings = []
            for _ in range(7):
                started = time.perf_counter()
                response = session.post(f"{base}{API}/training", data=body,
                                        headers={"Content-Type": "application/json"})
                timings.append(time.perf_counter() - started)
                assert response.status_code == 200, response.text[:300]
            answer = response.json()
            deployment.stop_web()
            results_ = answer["results"]
            assert len(results_) == len(items)
            mismatches = 0
            for pos, result in enumerate(results_):
                want = expected[result["feature_type"]].get(pos, "missing")
                if want == "missing":
                    mismatches += result["success"]
                else:
                    mismatches += not result["success"] or normalized(result["feature_value"]) != normalized(want)
            assert mismatches == 0, f"{mismatches} values differ from the floor's"
            timings.sort()
            median = timings[len(timings) // 2] * 1000
            results[dialect] = {
                "items": len(items), "distinct_instants": len({i["as_of"] for i in items}),
                "existed": answer["total_successful"], "values_checked_against_floor": len(items),
                "http_median_ms": round(median, 1), "http_best_ms": round(timings[0] * 1000, 1),
                "items_per_s": round(len(items) / median * 1000), "floor": floors, "floor_ms": round(floor_ms, 2),
                "product_statements_in_process_ms": statements_ms,
                "vs_floor": round(median / floor_ms, 2), "best_vs_floor": round(timings[0] * 1000 / floor_ms, 2)}
            print(dialect, json.dumps(results[dialect]), flush=True)
    report["as_of"] = results


# --- 9. training sets (POST /training-sets), against Feast -----------------------------------------
FEAST_PYTHON = Path(__file__).with_name(".feast-venv") / "bin" / "python"
EVENTS_SQL = """
WITH events AS (
    SELECT u.id AS user_id, u.created_at AS at, 0 AS failed, NULL::timestamp AS purchase FROM users u
    UNION ALL
    SELECT p.user_id, GREATEST(t.created_at, p.created_at, u.created_at), (t.status = 'failed')::int,
           CASE WHEN t.status = 'succeeded' THEN t.created_at END
    FROM payment_transactions t JOIN policies p ON p.id = t.policy_id JOIN users u ON u.id = p.user_id
)
SELECT user_id, at, sum(failed) OVER w, min(purchase) OVER w FROM events
WINDOW w AS (PARTITION BY user_id ORDER BY at RANGE BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW)
ORDER BY user_id, at
"""


def write_events(pg_url: str, path: Path) -> int:
    """Feast's input: the two user features as event series (a row per user at its creation and
    per payment from when it counts: the later of the payment's, its policy's and its user's
    creation), each row holding the values as of that event."""
    import psycopg
    import pyarrow as pa
    import pyarrow.parquet as pq

    with psycopg.connect(pg_url) as conn:
        rows = conn.execute(EVENTS_SQL).fetchall()
    columns = list(zip(*rows, strict=True))
    table = pa.table({"user_id": pa.array(columns[0], pa.int64()),
                      "event_timestamp": pa.array(columns[1], pa.timestamp("us", tz="UTC")),
                      "user_failed_transaction_count": pa.array([int(v) for v in columns[2]], pa.int64()),
                      "user_policy_time_of_purchase": pa.array(columns[3], pa.timestamp("us", tz="UTC"))})
    pq.write_table(table, path)
    return len(rows)


def spine_csv(rows: int, low: datetime, high: datetime, seed: int) -> bytes:
    """user_id,as_of,row: random users at distinct random instants (`row` passed through)."""
    rng = random.Random(seed)
    instants = random_instants(rng, low, high, rows)
    lines = ["user_id,as_of,row"]
    lines.extend(f"{rng.randint(1, BENCH_USERS)},{moment.isoformat(timespec='microseconds')},{i}"
                 for i, moment in enumerate(instants))
    return ("\n".join(lines) + "\n").encode()


def web_workers(master_pid: int) -> list[int]:
    return [int(c) for c in Path(f"/proc/{master_pid}/task/{master_pid}/children").read_text().split()]


def proc_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def post_training_set(base: str, spine: bytes, fmt: str) -> tuple[float, bytes, dict]:
    started = time.perf_counter()
    response = requests.post(f"{base}{API}/training-sets", params={"feature_set": "underwriting_v1", "format": fmt},
                             data=spine, headers={"Content-Type": "text/csv"}, stream=True, timeout=600)
    assert response.status_code == 200, response.content[:300]
    body = b"".join(response.iter_content(1 << 20))
    return time.perf_counter() - started, body, dict(response.headers)


def table_rows(body: bytes, fmt: str) -> list[dict]:
    if fmt == "parquet":
        import pyarrow.parquet as pq

        return pq.read_table(io.BytesIO(body)).to_pylist()
    return list(csv.DictReader(io.StringIO(body.decode())))


def check_table(rows: list[dict], spine: bytes, fmt: str) -> None:
    """Every spine row came back, in order, with its id, instant and passed-through column."""
    lines = spine.decode().splitlines()[1:]
    assert len(rows) == len(lines), (len(rows), len(lines))
    for row, line in zip(rows, lines, strict=True):
        user_id, as_of, number = line.split(",")
        got_as_of = row["as_of"] if fmt == "csv" else row["as_of"].isoformat()
        assert (str(row["entity_id"]), str(row["row"])) == (user_id, number), (row, line)
        assert datetime.fromisoformat(got_as_of) == datetime.fromisoformat(as_of), (row, line)


def table_value(row: dict, feature_type: str, fmt: str):
    value = row[feature_type]
    if fmt == "csv":
        if value == "":
            return None
        return int(value) if feature_type == "user_failed_transaction_count" else datetime.fromisoformat(value)
    return value


def spot_check(base: str, rows: list[dict], fmt: str, count: int = 200, seed: int = 3) -> int:
    """`count` random rows' values against POST /training with as_of items; returns how many."""
    picked = random.Random(seed).sample(rows, min(count, len(rows)))
    items = [{"feature_type": ft, "entity_id": str(row["entity_id"]),
              "as_of": row["as_of"] if fmt == "csv" else row["as_of"].isoformat()}
             for row in picked for ft in USER_FEATURES]
    answer = requests.post(f"{base}{API}/training", json={"features": items}, timeout=60).json()["results"]
    for i, row in enumerate(picked):
        existed = row["entity_existed"] in (True, "true")
        for j, feature_type in enumerate(USER_FEATURES):
            result = answer[i * len(USER_FEATURES) + j]
            assert result["success"] == existed, (row, result)
            if existed:
                assert normalized(result["feature_value"]) == table_value(row, feature_type, fmt), (row, result)
    return len(picked)


def feast_compare(workdir: Path, sizes: list[int]) -> dict:
    if not FEAST_PYTHON.exists():
        return {"skipped": f"no {FEAST_PYTHON.relative_to(Path(__file__).parent.parent)} (see bench/feast_bench.py)"}
    out = subprocess.run([str(FEAST_PYTHON), str(Path(__file__).with_name("feast_bench.py")), str(workdir),
                          *map(str, sizes)], capture_output=True, text=True, timeout=3600)
    if out.returncode != 0:
        return {"failed": out.stderr[-2000:]}
    return json.loads(out.stdout.strip().splitlines()[-1])


def bench_training_sets(args, report) -> None:
    """POST /training-sets (CSV spine in, Parquet and CSV out, feature set underwriting_v1) over
    HTTP: rows/s at 1,000 / 10,000 / 100,000 spine rows, the gunicorn worker's peak RSS at 100,000
    and 1,000,000, and Feast's get_historical_features on the same spines in the same run."""
    results: dict = {}
    sizes = [1_000, 10_000, 100_000]
    with Deployment() as deployment:
        deployment.start_redis()
        urls = bench_warehouses(deployment)
        low, high = data_range(urls["postgresql"])
        spines = {size: spine_csv(size, low, high, seed=size) for size in [*sizes, 1_000_000]}
        for dialect, mode in [(d, m) for d in ("postgresql", "sqlite") for m in ("statements", "index")]:
            # statements: AS_OF_INDEX=0, every chunk runs its features' as-of statements; index: the
            # default, measured once the as-of indexes are built (and checked to be used).
            deployment.warehouse_url = urls[dialect]
            base = deployment.start_web(**({"AS_OF_INDEX": "0"} if mode == "statements" else {}))
            post_training_set(base, spines[1_000], "parquet")  # warm-up (pyarrow's import)
            post_training_set(base, spines[1_000], "csv")
            figures = {}
            if mode == "index":
                figures["index"] = await_indexes(base, deployment.redis_url, spines[10_000], dialect == "postgresql")
                print(dialect, "indexes", json.dumps(figures["index"]), flush=True)
            for size in sizes:
                for fmt in ("parquet", "csv"):
                    runs = [post_training_set(base, spines[size], fmt) for _ in range(3 if size <= 10_000 else 2)]
                    seconds, body, headers = min(runs, key=lambda r: r[0])
                    indexed = {h.get("X-As-Of-Indexed") for _, _, h in runs}
                    rows = table_rows(body, fmt)
                    check_table(rows, spines[size], fmt)
                    checked = spot_check(base, rows, fmt)
                    figures[f"{fmt}@{size}"] = {
                        "seconds": round(seconds, 3), "rows_per_s": round(size / seconds),
                        "rows_back": len(rows), "existed": sum(r["entity_existed"] in (True, "true") for r in rows),
                        "spot_checked": checked, "response_bytes": len(body), "as_of_indexed": sorted(indexed)}
                    print(dialect, mode, fmt, size, json.dumps(figures[f"{fmt}@{size}"]), flush=True)
            deployment.stop_web()
            results[dialect if mode == "index" else f"{dialect}_statements"] = figures
        # Peak RSS of the worker serving one training set, each size on a fresh web process.
        deployment.warehouse_url = urls["postgresql"]
        memory = {}
        for size in (100_000, 1_000_000):
            for fmt in ("parquet", "csv"):
                base = deployment.start_web()
                workers = web_workers(deployment.web.pid)
                before = {pid: proc_kb(pid, "VmRSS") for pid in workers}
                seconds, body, _ = post_training_set(base, spines[size], fmt)
                peaks = {pid: proc_kb(pid, "VmHWM") for pid in workers}
                serving = max(workers, key=lambda pid: peaks[pid] - before[pid])
                rows_back = len(table_rows(body, fmt)) if size < 1_000_000 or fmt == "parquet" else \
                    body.count(b"\n") - 1
                assert rows_back == size, (rows_back, size)
                memory[f"{fmt}@{size}"] = {"rss_before_mb": round(before[serving] / 1024, 1),
                                           "peak_rss_mb": round(peaks[serving] / 1024, 1),
                                           "growth_mb": round((peaks[serving] - before[serving]) / 1024, 1),
                                           "seconds": round(seconds, 2), "rows_per_s": round(size / seconds),
                                           "rows_back": rows_back}
                print("memory", fmt, size, json.dumps(memory[f"{fmt}@{size}"]), flush=True)
                deployment.stop_web()
        results["memory_postgresql"] = memory
        # Feast, in its own virtual environment, on the same spines.
        workdir = Path(tempfile.mkdtemp(prefix="feast-bench-", dir=deployment.workdir))
        results["feast_events"] = write_events(urls["postgresql"], workdir / "events.parquet")
        for size in sizes:
            (workdir / f"spine-{size}.csv").write_bytes(spines[size])
        started = time.perf_counter()
        feast = feast_compare(workdir, sizes)
        results["feast_wall_s"] = round(time.perf_counter() - started, 1)
        if "feast_version" in feast:
            for size in sizes:
                theirs = feast[str(size)]
                fastest = max(theirs["rows_per_s_retrieve"], theirs["rows_per_s_total"])
                for key, label in (("postgresql", "vs_feast"), ("postgresql_statements", "vs_feast_statements")):
                    theirs[label] = {fmt: round(results[key][f"{fmt}@{size}"]["rows_per_s"] / fastest, 2)
                                     for fmt in ("parquet", "csv")}
                theirs["values_agree"] = feast_agreement(urls["postgresql"], spines[size], theirs["sample"])
                del theirs["sample"]
        results["feast"] = feast
    report["training_sets"] = results


def await_indexes(base: str, redis_url: str, spine: bytes, shared: bool, timeout: float = 300) -> dict:
    """Training sets until both features' values come from their as-of indexes (the first ones
    start the builds); then what the indexes are: their build seconds and bytes in Redis."""
    client = redis.Redis.from_url(redis_url)
    started = time.perf_counter()
    want = ",".join(USER_FEATURES[::-1])  # underwriting_v1's order
    in_a_row = 0  # every web process (SQLite: each builds its own)
    while time.perf_counter() - started < timeout and in_a_row < 8:
        _, _, headers = post_training_set(base, spine, "parquet")
        in_a_row = in_a_row + 1 if headers.get("X-As-Of-Indexed") == want else 0
        time.sleep(0.5 if in_a_row == 0 else 0)
    if in_a_row < 8:
        raise RuntimeError("the as-of indexes were not built in time")
    out = {"ready_after_s": round(time.perf_counter() - started, 1)}
    for feature_type in USER_FEATURES if shared else ():  # SQLite's stay in each web process
        key = f"feature-store:as-of-index:{feature_type}"
        if client.exists(key):
            out[feature_type] = {"build_seconds": float(client.hget(key, "seconds")),
                                 "redis_mb": round(client.memory_usage(key) / 2**20, 1)}
    client.close()
    return out


def feast_agreement(url: str, spine: bytes, sample: list[dict]) -> str:
    """How many of Feast's sampled rows carry the feature store's values (as of their instants)."""
    lines = spine.decode().splitlines()[1:]
    rows = [(s["row"], int(lines[s["row"]].split(",")[0]), datetime.fromisoformat(lines[s["row"]].split(",")[1]))
            for s in sample]
    warehouse = Warehouse(url, request_timeout=30)
    try:
        ours = {ft: warehouse.compute_as_of(REGISTRY.get(ft), rows) for ft in USER_FEATURES}
    finally:
        warehouse.dispose()
    agree = 0
    for s in sample:
        same = True
        for feature_type in USER_FEATURES:
            value = ours[feature_type].get(s["row"])
            value = None if value is None else orjson.loads(value)
            theirs = s[feature_type]
            if feature_type == "user_policy_time_of_purchase":
                value = None if value is None else datetime.fromisoformat(value)
                theirs = None if theirs is None else datetime.fromisoformat(theirs).replace(tzinfo=None)
            same &= value == theirs
        agree += same
    return f"{agree}/{len(sample)}"


# --- 10. feature-set inference ---------------------------------------------------------------------
def bench_feature_set(args, report) -> None:
    """POST /inference for a feature set (one entity, every user feature) against single-feature
    inference, both with wrk, the same deployment, rounds interleaved."""
    results: dict = {}
    with Deployment() as deployment:
        deployment.start_redis()
        deployment.make_sqlite_warehouse(BENCH_USERS, path=RESULTS.parent.parent / "var" / f"bench-{BENCH_USERS}.db")
        base = deployment.start_web()
        deployment.start_worker()
        assert extract(base)["status"] == "finished"
        deployment.stop_web()
        single = [json.dumps({"feature_type": ft, "entity_id": eid})
                  for ft, eid in sample_keys(deployment.warehouse_url, 1000)]
        users = random.Random(2).sample(range(1, BENCH_USERS + 1), 1000)
        sets = [json.dumps({"feature_set": "underwriting_v1", "entity_id": uid}) for uid in users]
        base = deployment.start_web()
        check = requests.post(f"{base}{API}/inference", data=sets[0], headers={"Content-Type": "application/json"})
        assert check.status_code == 200, check.text
        results["example"] = check.json()
        wrk(base, API + "/inference", single, 16, 3)  # warm-up
        wrk(base, API + "/inference", sets, 16, 3)
        runs: dict[str, list] = {}
        for _ in range(2):
            for connections in (16, 64):
                for name, bodies in (("single", single), ("feature_set", sets)):
                    runs.setdefault(f"{name}@{connections}", []).append(
                        wrk(base, API + "/inference", bodies, connections, args.seconds))
        deployment.stop_web()
        for key, measured in runs.items():
            results[key] = {"rps": round(sum(r["rps"] for r in measured) / len(measured)),
                            "rounds_rps": [r["rps"] for r in measured],
                            "p50_ms": [r["p50_ms"] for r in measured], "p99_ms": [r["p99_ms"] for r in measured],
                            "non_2xx": sum(r["non_2xx"] for r in measured)}
        for connections in (16, 64):
            results[f"ratio@{connections}"] = round(results[f"feature_set@{connections}"]["rps"]
                                                    / results[f"single@{connections}"]["rps"], 2)
    report["feature_set"] = results


# --- 11. what metrics cost -----------------------------------------------------------------------
def inference_requests_counted(base: str) -> float:
    """feature_store_http_requests_total for the inference endpoint (every method and status),
    from GET /metrics."""
    text = requests.get(f"{base}/metrics", timeout=30).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("feature_store_http_requests_total{") and "inference" in line.split("}")[0])


def server_cpu_seconds(master_pid: int) -> float:
    """User + system CPU time of a gunicorn's worker processes so far."""
    ticks = 0
    for pid in web_workers(master_pid):
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks += int(fields[11]) + int(fields[12])  # utime, stime
    return ticks / os.sysconf("SC_CLK_TCK")


METRIC_CALLS = """
import os, tempfile, time
os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp()
from feature_store import metrics
n = 200_000
for _ in range(1000):
    metrics.observe_request(%(path)r, "POST", 200, 0.001); metrics.count_values("cache", 1)
started = time.process_time()
for _ in range(n):
    metrics.observe_request(%(path)r, "POST", 200, 0.001); metrics.count_values("cache", 1)
print((time.process_time() - started) / n * 1e6)
"""


def metric_calls_us() -> float:
    """CPU microseconds of what one inference request records (one counter, one histogram, one
    values counter), in multiprocess mode (mmap files), in a fresh process, no contention."""
    out = subprocess.run([sys.executable, "-c", METRIC_CALLS % {"path": API + "/inference"}],
                         capture_output=True, text=True, check=True, cwd=RESULTS.parent.parent).stdout
    return round(float(out), 2)


def bench_metrics_cost(args, report) -> None:
    """Section 1's single-feature inference load against two gunicorns started the same way, one
    with METRICS=1 (the default: per-request counters and histograms, written to the mmap files of
    prometheus_client's multiprocess mode, as gunicorn.conf.py sets it up) and one with METRICS=0;
    both up at once (one idle while the other is measured), rounds interleaved, the order flipped
    every round."""
    results: dict = {}
    rounds = 4
    with Deployment() as deployment:
        deployment.start_redis()
        deployment.make_sqlite_warehouse(20_000)
        base = deployment.start_web()
        deployment.start_worker()
        assert extract(base)["status"] == "finished"
        deployment.stop_web()
        bodies = [json.dumps({"feature_type": ft, "entity_id": eid})
                  for ft, eid in sample_keys(deployment.warehouse_url, 1000)]
        bases, masters = {}, {}
        for name, value in (("metrics_on", 1), ("metrics_off", 0)):
            bases[name] = deployment.start_web(METRICS=value)
            masters[name] = deployment.web.pid
        for name_base in bases.values():
            wrk(name_base, API + "/inference", bodies, 16, 3)  # warm-up (fills each one's local cache)
        runs: dict[str, list] = {}
        counted: list[dict] = []
        for round_ in range(rounds):
            order = list(bases) if round_ % 2 == 0 else list(reversed(bases))
            for connections in (16, 64):
                for name in order:
                    before = inference_requests_counted(bases[name])
                    cpu = server_cpu_seconds(masters[name])
                    run = wrk(bases[name], API + "/inference", bodies, connections, args.seconds)
                    run["server_cpu_us_per_request"] = round((server_cpu_seconds(masters[name]) - cpu)
                                                             / run["requests"] * 1e6, 1)
                    time.sleep(2 * FLUSH_SECONDS + 0.2)  # each process hands its figures over within it
                    grown = inference_requests_counted(bases[name]) - before
                    runs.setdefault(f"{name}@{connections}", []).append(run)
                    counted.append({"deployment": name, "connections": connections, "wrk_requests": run["requests"],
                                    "counter_grew_by": int(grown)})
        for key, measured in runs.items():
            results[key] = {"rps": round(sum(r["rps"] for r in measured) / len(measured)),
                            "rounds_rps": [r["rps"] for r in measured],
                            "p50_ms": [r["p50_ms"] for r in measured], "p99_ms": [r["p99_ms"] for r in measured],
                            "non_2xx": sum(r["non_2xx"] for r in measured),
                            "server_cpu_us_per_request": [r["server_cpu_us_per_request"] for r in measured]}
        for connections in (16, 64):
            on, off = results[f"metrics_on@{connections}"], results[f"metrics_off@{connections}"]
            results[f"ratio@{connections}"] = {
                "rps_on_vs_off": round(on["rps"] / off["rps"], 3),
                "rounds_rps_on_vs_off": [round(a / b, 3)
                                         for a, b in zip(on["rounds_rps"], off["rounds_rps"], strict=True)],
                "p99_mean_on_vs_off": round(sum(on["p99_ms"]) / sum(off["p99_ms"]), 2),
                "server_cpu_per_request_on_vs_off": round(sum(on["server_cpu_us_per_request"])
                                                          / sum(off["server_cpu_us_per_request"]), 3)}
        results["metric_calls_us_per_request"] = metric_calls_us()
        # GET /metrics on the METRICS=1 deployment counts what wrk sent (a request still in flight
        # when wrk stops is counted by the server, not by wrk); on METRICS=0 it stays put.
        results["metrics_check"] = counted
        on_runs = [c for c in counted if c["deployment"] == "metrics_on"]
        results["metrics_check_ok"] = (all(0 <= c["counter_grew_by"] - c["wrk_requests"] <= c["connections"]
                                           for c in on_runs)
                                       and all(c["counter_grew_by"] == 0 for c in counted
                                               if c["deployment"] == "metrics_off"))
    report["metrics_cost"] = results


# --- 12. Redis Cluster ---------------------------------------------------------------------------
def count_keys(ports: list[int], feature_types: list[str]) -> dict:
    """Keys of each feature (`<feature_type>:*`), SCANned node by node, and each node's DBSIZE."""
    counts = dict.fromkeys(feature_types, 0)
    sizes = {}
    for port in ports:
        client = redis.Redis(port=port, socket_timeout=None)
        for feature_type in feature_types:
            counts[feature_type] += sum(1 for _ in client.scan_iter(match=f"{feature_type}:*", count=10_000))
        sizes[str(port)] = client.dbsize()
        client.close()
    return {"per_feature": counts, "dbsize_per_node": sizes}


def bench_cluster(args, report) -> None:
    """The online store on a local 3-node Redis Cluster (REDIS_CLUSTER=1, REDIS_URL one node,
    RQ_REDIS_URL a standalone redis-server for RQ; web and worker both get them) against the
    usual single standalone Redis: extraction of the 100,000-user bench warehouse (one worker,
    two rounds alternating, each into an emptied store), then section 1's single-feature inference
    load on three gunicorns up at once (single Redis with its local cache, single Redis with
    REDIS_LOCAL_CACHE=0, cluster: the local cache is off there), rounds interleaved, the order
    flipped every round."""
    results: dict = {}
    feature_types = [f.feature_type for f in REGISTRY]
    with Deployment() as deployment:
        rq_url = deployment.start_redis()  # the single Redis; on the cluster runs, RQ's broker only
        cluster_url = deployment.start_redis_cluster(3)
        deployment.make_sqlite_warehouse(BENCH_USERS, path=RESULTS.parent.parent / "var" / f"bench-{BENCH_USERS}.db")
        setups = {"single": {}, "cluster": {"REDIS_URL": cluster_url, "REDIS_CLUSTER": 1, "RQ_REDIS_URL": rq_url}}
        results["cluster_nodes"] = deployment.cluster_ports
        extraction: dict[str, list] = {}
        for round_ in range(2):
            for name in (list(setups) if round_ % 2 == 0 else list(reversed(setups))):
                if name == "cluster":
                    for port in deployment.cluster_ports:
                        redis.Redis(port=port).flushall()
                else:
                    redis.Redis.from_url(rq_url).flushall()
                base = deployment.start_web(EXTRACT_WAIT_SECONDS=1, **setups[name])
                worker = deployment.start_worker(**setups[name])
                started = time.perf_counter()
                status = extract(base)
                elapsed = time.perf_counter() - started
                assert status["status"] == "finished", status
                result = status["result"]
                ports = deployment.cluster_ports if name == "cluster" else [deployment.redis_port]
                keys = count_keys(ports, feature_types)
                extraction.setdefault(name, []).append({
                    "values": result["total_features"], "seconds": round(elapsed, 2),
                    "values_per_s": round(result["total_features"] / elapsed), "stages_s": result["stages"],
                    "features_extracted": result["features_extracted"], "keys": keys,
                    "complete": keys["per_feature"] == result["features_extracted"]})
                print("extraction", name, json.dumps(extraction[name][-1]), flush=True)
                deployment.stop_web()
                worker.terminate()
                worker.wait(30)
        for name, runs in extraction.items():
            results[f"extraction_{name}"] = {
                "values_per_s": round(sum(r["values_per_s"] for r in runs) / len(runs)),
                "rounds_values_per_s": [r["values_per_s"] for r in runs], "rounds": runs,
                "complete": all(r["complete"] for r in runs)}
        results["extraction_cluster_vs_single"] = round(results["extraction_cluster"]["values_per_s"]
                                                        / results["extraction_single"]["values_per_s"], 2)
        # Both stores now hold the whole warehouse (the last round of each).
        bodies = [json.dumps({"feature_type": ft, "entity_id": eid})
                  for ft, eid in sample_keys(deployment.warehouse_url, 1000)]
        serving = {"single": {}, "single_no_local_cache": {"REDIS_LOCAL_CACHE": 0}, "cluster": setups["cluster"]}
        bases = {}
        for name, env in serving.items():
            bases[name] = deployment.start_web(**env)
            check = requests.post(f"{bases[name]}{API}/inference", data=bodies[0],
                                  headers={"Content-Type": "application/json"}, timeout=30)
            assert check.status_code == 200 and check.json().get("success"), check.text
        for name_base in bases.values():
            wrk(name_base, API + "/inference", bodies, 16, 3)  # warm-up
        runs: dict[str, list] = {}
        for round_ in range(2):
            order = list(bases) if round_ % 2 == 0 else list(reversed(bases))
            for connections in (16, 64):
                for name in order:
                    run = wrk(bases[name], API + "/inference", bodies, connections, args.seconds)
                    runs.setdefault(f"{name}@{connections}", []).append(run)
                    print("inference", name, connections, json.dumps(run), flush=True)
        for key, measured in runs.items():
            results[f"inference_{key}"] = {"rps": round(sum(r["rps"] for r in measured) / len(measured)),
                                           "rounds_rps": [r["rps"] for r in measured],
                                           "p50_ms": [r["p50_ms"] for r in measured],
                                           "p99_ms": [r["p99_ms"] for r in measured],
                                           "non_2xx": sum(r["non_2xx"] for r in measured),
                                           "socket_errors": [r["socket_errors"] for r in measured]}
        for connections in (16, 64):
            cluster = results[f"inference_cluster@{connections}"]["rps"]
            results[f"inference_ratios@{connections}"] = {
                "cluster_vs_single": round(cluster / results[f"inference_single@{connections}"]["rps"], 2),
                "cluster_vs_single_no_local_cache": round(
                    cluster / results[f"inference_single_no_local_cache@{connections}"]["rps"], 2)}
    report["cluster"] = results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--full", action="store_true", help="1M-user extraction, longer load runs")
    parser.add_argument("--only", default="inference,training,extraction,scaleout,memory,cold,cursor_plan,as_of,"
                                           "training_sets,feature_set,metrics_cost,cluster,statistics_cost")
    parser.add_argument("--seconds", type=int, default=None, help="duration of each wrk run")
    args = parser.parse_args()
    args.seconds = args.seconds or (20 if args.full else 8)
    RESULTS.mkdir(exist_ok=True)
    report = {"machine": {"cpus": subprocess.run(["nproc"], capture_output=True, text=True).stdout.strip(),
                          "python": platform.python_version(), "full": args.full, "wrk_seconds": args.seconds}}
    benches = {"inference": bench_inference, "training": bench_training, "extraction": bench_extraction,
               "scaleout": bench_scaleout, "memory": bench_memory, "cold": bench_cold,
               "cursor_plan": bench_cursor_plan, "as_of": bench_as_of, "training_sets": bench_training_sets,
               "feature_set": bench_feature_set, "metrics_cost": bench_metrics_cost, "cluster": bench_cluster,
               "statistics_cost": bench_statistics_cost}
    for name in args.only.split(","):
        started = time.perf_counter()
        benches[name](args, report)
        print(f"{name}: done in {time.perf_counter() - started:.0f}s", flush=True)
        print(json.dumps(report[name], indent=1), flush=True)
    out = RESULTS / f"bench-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2))
    print(f"results: {out}")


if __name__ == "__main__":
    main()
