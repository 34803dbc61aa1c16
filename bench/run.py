"""The benchmark suite (BENCHMARKS.md). Every figure is measured beside its floor in the same run.

    python -m bench.run [--full] [--only inference,training,extraction,scaleout,memory,cold,cursor_plan]

Quick (default, a few minutes): 20,000-user warehouse for serving, 100,000 users for extraction.
--full: 1,000,000 users for extraction (about 6 million values), longer wrk runs.
Load generator: wrk (apt-get install -y wrk), sharing this machine's 2 cores with the server.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import re
import subprocess
import tempfile
import threading
import time
import uuid
from datetime import timedelta
from pathlib import Path
from unittest import mock

import orjson
import redis
import requests

from bench.harness import Deployment, rss_mb
from feature_store.features import REGISTRY
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--full", action="store_true", help="1M-user extraction, longer load runs")
    parser.add_argument("--only", default="inference,training,extraction,scaleout,memory,cold,cursor_plan")
    parser.add_argument("--seconds", type=int, default=None, help="duration of each wrk run")
    args = parser.parse_args()
    args.seconds = args.seconds or (20 if args.full else 8)
    RESULTS.mkdir(exist_ok=True)
    report = {"machine": {"cpus": subprocess.run(["nproc"], capture_output=True, text=True).stdout.strip(),
                          "python": platform.python_version(), "full": args.full, "wrk_seconds": args.seconds}}
    benches = {"inference": bench_inference, "training": bench_training, "extraction": bench_extraction,
               "scaleout": bench_scaleout, "memory": bench_memory, "cold": bench_cold,
               "cursor_plan": bench_cursor_plan}
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
