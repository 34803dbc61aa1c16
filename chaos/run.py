"""Chaos and soak runs against a real deployment on this machine (results: RELIABILITY.md).

    python -m chaos.run redis-outage [--seconds 60] [--rate 100]
    python -m chaos.run soak [--minutes 5] [--rate 150] [--users 20000] [--extract-every 30]

Each run starts its own redis-server, SQLite warehouse, gunicorn (Procfile settings) and rq
worker on free local ports, drives a bounded, steady load from threads in this process (sharing
the machine's 2 cores with the server), checks every answer, and prints a JSON summary.
"""

from __future__ import annotations

import argparse
import json
import random
import signal
import statistics
import threading
import time
from collections import Counter, defaultdict

import orjson
import requests

from bench.harness import Deployment, rss_mb
from feature_store.features import REGISTRY
from feature_store.warehouse import Warehouse

API = "/api/v1/features"


def truth_sample(warehouse_url: str, count: int, seed: int = 1) -> dict[tuple[str, str], object]:
    """Expected values of `count` random (feature_type, entity_id), computed from the warehouse."""
    warehouse = Warehouse(warehouse_url)
    try:
        everything = [(f.feature_type, str(eid), value) for f in REGISTRY
                      for chunk in warehouse.stream(f, chunk_size=20_000) for eid, value in chunk]
    finally:
        warehouse.dispose()
    picked = random.Random(seed).sample(everything, min(count, len(everything)))
    return {(ft, eid): orjson.loads(value) for ft, eid, value in picked}


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))]


class Load:
    """Steady-rate load from `threads` threads; each answer is checked and recorded."""

    def __init__(self, base: str, truth: dict, rate: float, threads: int = 8, training_share: float = 0.0,
                 bad_share: float = 0.0) -> None:
        self.base, self.truth, self.rate, self.threads = base, truth, rate, threads
        self.keys = list(truth)
        self.training_share, self.bad_share = training_share, bad_share
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.records: list[tuple[float, str, int, float]] = []  # (start, kind, status, latency ms)
        self.problems: list[str] = []
        self.wrong_values = 0

    def _one(self, session: requests.Session, rng: random.Random) -> None:
        roll = rng.random()
        started = time.monotonic()
        if roll < self.bad_share:
            kind = "bad"
            body = rng.choice([b"not json", b'{"feature_type": "payment_type", "entity_id": true}',
                               b'{"feature_type": "nope", "entity_id": "1"}',
                               b'{"feature_type": "payment_type", "entity_id": "1:*"}'])
            response = session.post(f"{self.base}{API}/inference", data=body,
                                    headers={"Content-Type": "application/json"}, timeout=10)
            ok = response.status_code in (400, 404) and response.json()["success"] is False
        elif roll < self.bad_share + self.training_share:
            kind = "training"
            keys = rng.sample(self.keys, 50)
            response = session.post(f"{self.base}{API}/training", timeout=10, json={
                "features": [{"feature_type": ft, "entity_id": eid} for ft, eid in keys]})
            ok = response.status_code == 200
            if ok:
                for (ft, eid), result in zip(keys, response.json()["results"], strict=True):
                    if result["feature_value"] != self.truth[(ft, eid)]:
                        self._wrong(f"{ft}:{eid} {result}")
        else:
            kind = "inference"
            ft, eid = rng.choice(self.keys)
            response = session.post(f"{self.base}{API}/inference", timeout=10,
                                    json={"feature_type": ft, "entity_id": eid})
            ok = response.status_code == 200
            if ok and response.json()["feature_value"] != self.truth[(ft, eid)]:
                self._wrong(f"{ft}:{eid} {response.text}")
        latency = (time.monotonic() - started) * 1000
        if not ok and response.status_code != 503:
            self._problem(f"{kind} -> {response.status_code} {response.text[:200]}")
        if not response.headers.get("Content-Type", "").startswith("application/json"):
            self._problem(f"{kind} -> non-JSON answer {response.status_code}")
        with self.lock:
            self.records.append((started, kind, response.status_code, latency))

    def _wrong(self, what: str) -> None:
        with self.lock:
            self.wrong_values += 1
            self.problems.append(f"WRONG VALUE {what}")

    def _problem(self, what: str) -> None:
        with self.lock:
            self.problems.append(what)

    def _run(self, index: int) -> None:
        rng = random.Random(index)
        session = requests.Session()
        interval = self.threads / self.rate
        next_at = time.monotonic() + rng.random() * interval
        while not self.stop.is_set():
            delay = next_at - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            next_at += interval
            try:
                self._one(session, rng)
            except requests.RequestException as exc:
                self._problem(f"transport error: {exc.__class__.__name__}")
                with self.lock:
                    self.records.append((time.monotonic(), "transport", 0, 0.0))

    def __enter__(self) -> Load:
        self.workers = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(self.threads)]
        for worker in self.workers:
            worker.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        for worker in self.workers:
            worker.join(15)

    def summary(self, since: float | None = None) -> dict:
        records = [r for r in self.records if since is None or r[0] >= since]
        by_kind: dict[str, list[float]] = defaultdict(list)
        for _, kind, status, latency in records:
            if status == 200 or kind == "bad":
                by_kind[kind].append(latency)
        return {
            "requests": len(records),
            "statuses": dict(Counter(status for _, _, status, _ in records)),
            "latency_ms": {kind: {"p50": round(percentile(v, 50), 1), "p99": round(percentile(v, 99), 1),
                                  "max": round(max(v), 1), "mean": round(statistics.fmean(v), 1)}
                           for kind, v in by_kind.items() if v},
            "wrong_values": self.wrong_values,
            "problems": self.problems[:20],
            "problem_count": len(self.problems),
        }


def redis_outage(args) -> dict:
    with Deployment() as deployment:
        deployment.start_redis()
        deployment.make_sqlite_warehouse(args.users)
        base = deployment.start_web()
        deployment.start_worker()
        assert requests.post(f"{base}{API}/extract", timeout=120).status_code == 200
        truth = truth_sample(deployment.warehouse_url, 2000)
        phases = {}
        with Load(base, truth, args.rate) as load:
            time.sleep(args.seconds / 6)
            t_pause = time.monotonic()
            deployment.stop_redis(signal.SIGSTOP)  # stuck: accepts, never answers
            time.sleep(args.seconds / 6)
            deployment.stop_redis(signal.SIGCONT)
            t_resume = time.monotonic()
            time.sleep(args.seconds / 6)
            t_kill = time.monotonic()
            deployment.stop_redis(signal.SIGTERM)  # down: refuses connections
            time.sleep(args.seconds / 6)
            deployment.start_redis(deployment.redis_port)  # back, empty (no persistence)
            t_back = time.monotonic()
            time.sleep(args.seconds / 3)
        records = load.records

        def window(start, end):
            return [r for r in records if start <= r[0] < end]

        def first_ok_after(moment):
            oks = [r[0] for r in records if r[0] >= moment and r[2] == 200]
            return round(min(oks) - moment, 3) if oks else None

        for name, (start, end) in {"paused": (t_pause, t_resume), "down": (t_kill, t_back)}.items():
            during = window(start + 0.1, end)
            phases[name] = {
                "seconds": round(end - start, 1),
                "statuses": dict(Counter(r[2] for r in during)),
                "max_latency_ms": round(max((r[3] for r in during), default=0), 1),
                "p99_latency_ms": round(percentile([r[3] for r in during], 99), 1),
            }
        phases["paused"]["recovered_after_s"] = first_ok_after(t_resume)
        phases["down"]["recovered_after_s"] = first_ok_after(t_back)
        return {"run": "redis-outage", "rate": args.rate, "seconds": args.seconds, "phases": phases,
                "overall": load.summary()}


def soak(args) -> dict:
    with Deployment() as deployment:
        deployment.start_redis()
        deployment.make_sqlite_warehouse(args.users)
        base = deployment.start_web()
        worker = deployment.start_worker()
        assert requests.post(f"{base}{API}/extract", timeout=300).status_code == 200
        truth = truth_sample(deployment.warehouse_url, 5000)
        memory: list[dict] = []
        extractions: list[dict] = []
        stop = threading.Event()

        def extractor():
            session = requests.Session()
            while not stop.wait(args.extract_every):
                started = time.monotonic()
                response = session.post(f"{base}{API}/extract", timeout=120)
                extractions.append({"status": response.status_code,
                                    "seconds": round(time.monotonic() - started, 2),
                                    "total": response.json().get("total_features")})

        def sampler():
            while not stop.is_set():
                memory.append({"t": round(time.monotonic() - t0, 1), "web_mb": round(rss_mb(deployment.web.pid), 1),
                               "worker_mb": round(rss_mb(worker.pid), 1)})
                stop.wait(10)

        with Load(base, truth, args.rate, training_share=0.15, bad_share=0.05) as load:
            time.sleep(20)  # warm-up, excluded from the figures
            t0 = time.monotonic()
            threads = [threading.Thread(target=extractor, daemon=True), threading.Thread(target=sampler, daemon=True)]
            for thread in threads:
                thread.start()
            time.sleep(args.minutes * 60)
            stop.set()
            for thread in threads:
                thread.join(150)
            summary = load.summary(since=t0)
        duration = args.minutes * 60
        return {"run": "soak", "minutes": args.minutes, "target_rate": args.rate,
                "achieved_rate": round(summary["requests"] / duration, 1), "users": args.users,
                "extractions": extractions, "memory_start": memory[0], "memory_end": memory[-1],
                "memory_peak": {"web_mb": max(m["web_mb"] for m in memory),
                                "worker_mb": max(m["worker_mb"] for m in memory)},
                "memory_samples": memory,
                "load": summary}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="run", required=True)
    outage = sub.add_parser("redis-outage")
    outage.add_argument("--seconds", type=float, default=60)
    outage.add_argument("--rate", type=float, default=100)
    outage.add_argument("--users", type=int, default=5000)
    long = sub.add_parser("soak")
    long.add_argument("--minutes", type=float, default=5)
    long.add_argument("--rate", type=float, default=150)
    long.add_argument("--users", type=int, default=20_000)
    long.add_argument("--extract-every", type=float, default=30)
    args = parser.parse_args()
    result = redis_outage(args) if args.run == "redis-outage" else soak(args)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
