"""What run statistics cost: extraction runs with statistics (STATISTICS=1, the default) and
without (STATISTICS=0), interleaved over the same warehouse and the same Redis, in one process.

    python -m bench.run --only statistics_cost          # 100,000 users
    python -m bench.run --only statistics_cost --full   # 1,000,000 users (about 5.3 million values)

Each round is extract_all() in this process (the worker's job minus RQ's bookkeeping) against a
private redis-server, on the SQLite bench warehouse; one warm-up run first, so every measured
round overwrites a populated store (as scheduled runs do) and every run with statistics also
computes drift against the one before. Rounds alternate on, off, off, on, ... so a drift of the
machine's speed falls on both. Reported: each round's seconds and stages, the mean and the best
of each setting, their ratio (the target is at most 1.10), and the statistics stage's own share
of the runs with statistics (sketch updates as chunks stream, plus recording and drift at the end).
"""

from __future__ import annotations

import json
import statistics as stats
import time
from pathlib import Path

import redis

from bench.harness import Deployment
from feature_store.features import REGISTRY
from feature_store.online_store import OnlineStore
from feature_store.services.extraction import extract_all
from feature_store.services.statistics import StatisticsSettings
from feature_store.warehouse import Warehouse

ROUNDS = ("on", "off", "off", "on", "on", "off", "off", "on")
CHUNK_SIZE = 10_000  # EXTRACT_CHUNK_SIZE's default


def one_run(warehouse_url: str, redis_url: str, enabled: bool) -> tuple[float, dict]:
    client = redis.Redis.from_url(redis_url, socket_timeout=None)
    warehouse = Warehouse(warehouse_url)
    try:
        started = time.perf_counter()
        result = extract_all(list(REGISTRY), warehouse, OnlineStore(client), chunk_size=CHUNK_SIZE,
                             statistics=StatisticsSettings(enabled=enabled), job_id=f"bench-{time.time_ns()}")
        return time.perf_counter() - started, result
    finally:
        warehouse.dispose()
        client.close()


def bench_statistics_cost(args, report) -> None:
    users = 1_000_000 if args.full else 100_000
    results: dict = {"users": users, "rounds": []}
    var = Path(__file__).resolve().parents[1] / "var"
    with Deployment() as deployment:
        redis_url = deployment.start_redis()
        warehouse_url = deployment.make_sqlite_warehouse(users, path=var / f"bench-{users}.db")
        one_run(warehouse_url, redis_url, True)  # warm-up: the store populated, a sketch to drift against
        for setting in ROUNDS:
            seconds, result = one_run(warehouse_url, redis_url, setting == "on")
            results["rounds"].append({"statistics": setting, "seconds": round(seconds, 2),
                                      "values": result["total_features"], "stages_s": result["stages"],
                                      "drifted": result.get("drifted_features")})
            print(json.dumps(results["rounds"][-1]), flush=True)
    on = [r["seconds"] for r in results["rounds"] if r["statistics"] == "on"]
    off = [r["seconds"] for r in results["rounds"] if r["statistics"] == "off"]
    shares = [r["stages_s"]["statistics"] / r["seconds"] for r in results["rounds"] if r["statistics"] == "on"]
    results.update({
        "mean_on_s": round(stats.mean(on), 2), "mean_off_s": round(stats.mean(off), 2),
        "ratio_mean": round(stats.mean(on) / stats.mean(off), 3),
        "best_on_s": min(on), "best_off_s": min(off), "ratio_best": round(min(on) / min(off), 3),
        "statistics_stage_share": round(stats.mean(shares), 3),
        "statistics_stage_s": round(stats.mean(r["stages_s"]["statistics"] for r in results["rounds"]
                                               if r["statistics"] == "on"), 2),
    })
    report["statistics_cost"] = results
