"""Prometheus metrics (prometheus_client), for every web process together.

Under gunicorn, PROMETHEUS_MULTIPROC_DIR is set (and emptied) by gunicorn.conf.py before the
workers fork, so each process writes its counters and histograms to files there and GET /metrics
aggregates them (MultiProcessCollector); a dead worker's files are marked by the `child_exit`
hook. Without it (tests, a plain Flask run), the process's own registry is served.

What lives in Redis (the extraction queue, the workers listening, the run history, when each
feature was last refreshed) is read at scrape time by a collector, so it is the same whichever
process answers and needs no aggregation.
"""

from __future__ import annotations

import os
from datetime import datetime

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector

from feature_store.metrics_buffer import Recorder
from feature_store.services import freshness
from feature_store.services.statistics import drift_states
from feature_store.streaming import status as stream_status

REQUESTS = Counter("feature_store_http_requests", "HTTP requests answered, by endpoint (route) and status",
                   ["endpoint", "method", "status"])
LATENCY = Histogram("feature_store_http_request_duration_seconds", "Time to answer an HTTP request, by endpoint",
                    ["endpoint"], buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                                           2.5, 5.0, 10.0, 30.0))
VALUES = Counter("feature_store_values_served", "Feature values looked up, by where they came from: cache (the "
                 "online store), on_demand (computed on a miss or past its max age), as_of (computed at an "
                 "instant), missing; expired counts cached values found past their max age, stale those "
                 "served anyway because the warehouse could not recompute them",
                 ["source"])

_RUN_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600)


# METRICS=0 turns the per-request metrics off (the benchmark measures what they cost).
ENABLED = os.environ.get("METRICS", "1") != "0"


# The labelled children, looked up once per label values: `labels()` builds and locks on every call
# (BENCHMARKS.md, section 11). Label values are few (routes, methods, statuses, sources).
_REQUEST_CHILDREN: dict = {}
_VALUE_CHILDREN: dict = {}


def _apply_requests(key: tuple, latencies: list[float]) -> None:
    children = _REQUEST_CHILDREN.get(key)
    if children is None:
        endpoint, method, status = key
        children = _REQUEST_CHILDREN[key] = (REQUESTS.labels(endpoint, method, str(status)),
                                             LATENCY.labels(endpoint))
    children[0].inc(len(latencies))
    for seconds in latencies:
        children[1].observe(seconds)


def _apply_values(source: str, n: int) -> None:
    child = _VALUE_CHILDREN.get(source)
    if child is None:
        child = _VALUE_CHILDREN[source] = VALUES.labels(source)
    child.inc(n)


# Requests record into their own thread's buffer; one thread per process writes the library's
# values (metrics_buffer.py: the library's per-process lock cost 9% of req/s at 64 connections).
_RECORDER = Recorder(_apply_requests, _apply_values)


def observe_request(endpoint: str, method: str, status: int, seconds: float) -> None:
    if ENABLED:
        _RECORDER.request((endpoint, method, status), seconds)


def count_values(source: str, n: int) -> None:
    if n and ENABLED:
        _RECORDER.values(source, n)


class StoreCollector:
    """Metrics read from Redis at scrape time: the extraction queue's depth, the workers
    listening on it, the recent runs (by status, their durations), each feature's age, and its
    drift at its last run."""

    def __init__(self, services) -> None:
        self.services = services

    def collect(self):
        runs = self.services.runs
        up = GaugeMetricFamily("feature_store_online_store_up", "1 when Redis answered this scrape")
        try:
            depth = runs.queue.count
            workers = runs.listening_workers()
            recent = runs.runs(100)
        except Exception:  # noqa: BLE001 - Redis down: say so, and serve the process metrics
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield GaugeMetricFamily("feature_store_extraction_queue_depth", "Extraction jobs waiting in the queue",
                                value=depth)
        if workers is not None:
            yield GaugeMetricFamily("feature_store_extraction_workers", "RQ workers listening on the extraction "
                                    "queue", value=workers)
        by_status = GaugeMetricFamily("feature_store_extraction_recent_runs", "Extraction runs among the last 100 "
                                      "kept, by status and trigger", labels=["status", "trigger"])
        counts: dict[tuple[str, str], int] = {}
        durations: list[float] = []
        for run in recent:
            counts[(run.status, run.trigger)] = counts.get((run.status, run.trigger), 0) + 1
            if run.done and run.started_at and run.ended_at:
                durations.append((datetime.fromisoformat(run.ended_at)
                                  - datetime.fromisoformat(run.started_at)).total_seconds())
        for (status, trigger), n in sorted(counts.items()):
            by_status.add_metric([status, trigger], n)
        yield by_status
        buckets, total = [], 0
        for bound in _RUN_BUCKETS:
            buckets.append((str(float(bound)), sum(1 for d in durations if d <= bound)))
        buckets.append(("+Inf", len(durations)))
        total = sum(durations)
        yield HistogramMetricFamily("feature_store_extraction_run_duration_seconds", "Durations of the ended runs "
                                    "among the last 100 kept", buckets=buckets, sum_value=total)
        yield from self._freshness()
        yield from self._drift()

    def _freshness(self):
        """Each feature's age (since the values of the last run that refreshed it were computed),
        its max age, and whether it is within it (services/freshness.py)."""
        try:
            refreshed = self.services.store.refreshed()
        except Exception:  # noqa: BLE001 - the online store's Redis down: the other metrics still serve
            return
        max_ages = self.services.server.max_ages
        age = GaugeMetricFamily("feature_store_feature_age_seconds", "Seconds since the values of the last "
                                "extraction run that refreshed each feature were computed", labels=["feature_type"])
        limit = GaugeMetricFamily("feature_store_feature_max_age_seconds", "Each feature's max age (features "
                                  "with one; FEATURE_MAX_AGE)", labels=["feature_type"])
        fresh = GaugeMetricFamily("feature_store_feature_fresh", "1 when a feature's last refresh is within its "
                                  "max age, else 0 (features refreshed by a run)", labels=["feature_type"])
        for feature_type in self.services.registry.feature_types():
            if max_ages.get(feature_type) is not None:
                limit.add_metric([feature_type], max_ages[feature_type])
            record = refreshed.get(feature_type)
            if record is None:
                continue
            state = freshness.describe(max_ages.get(feature_type), record)  # discovery's figures, one rule
            age.add_metric([feature_type], state["age_seconds"])
            fresh.add_metric([feature_type], 1 if state["fresh"] else 0)
        yield from (age, limit, fresh)
        yield from self._stream()

    def _stream(self):
        """The streaming process's replication slot (streaming/status.py), when it is set up."""
        config = self.services.config
        report = None if config.embedded else stream_status.report(self.services.store.redis,
                                                                     self.services.warehouse, config.STREAM_SLOT)
        if report is None:
            return
        gauges = (("streaming", "1 while the streaming process follows its replication slot, else 0 (idle: the "
                   "warehouse cannot stream; waiting: an outage)", 1 if report["state"] == stream_status.STREAMING
                   else 0),
                  ("lag_bytes", "WAL written on the warehouse since the slot's confirmed position (kept for the "
                   "slot)", report["lag_bytes"]),
                  ("lag_seconds", "How far the stored values are behind the warehouse's committed changes",
                   report["lag_seconds"]))
        for name, documentation, value in gauges:
            if value is not None:
                gauge = GaugeMetricFamily(f"feature_store_stream_{name}", documentation, labels=["slot"])
                gauge.add_metric([report["slot"]], value)
                yield gauge

    def _drift(self):
        """Each feature's drift at its last run (services/statistics.py), for features with one."""
        try:
            states = drift_states(self.services.store.redis, self.services.registry.feature_types())
        except Exception:  # noqa: BLE001 - the online store's Redis down: the other metrics still serve
            return
        psi = GaugeMetricFamily("feature_store_feature_drift_psi", "PSI of each feature's values at its last "
                                "extraction run against the run before", labels=["feature_type"])
        ks = GaugeMetricFamily("feature_store_feature_drift_ks", "KS statistic of each feature's values (numbers "
                               "and datetimes) at its last run against the run before", labels=["feature_type"])
        drifted = GaugeMetricFamily("feature_store_feature_drifted", "1 when a feature's last run flagged drift "
                                    "(PSI above DRIFT_PSI_THRESHOLD), else 0", labels=["feature_type"])
        for feature_type, state in states.items():
            drifted.add_metric([feature_type], 1 if state["drifted"] else 0)
            if state["psi"] is not None:
                psi.add_metric([feature_type], state["psi"])
            if state["ks"] is not None:
                ks.add_metric([feature_type], state["ks"])
        yield from (psi, ks, drifted)


def render(services) -> bytes:
    """The exposition of every web process's metrics and the store's (this process's buffered
    requests written first; another process's within metrics_buffer.FLUSH_SECONDS)."""
    _RECORDER.flush()
    registry = CollectorRegistry()
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        MultiProcessCollector(registry)
    else:
        from prometheus_client import REGISTRY as registry  # this process alone
        return generate_latest(registry) + generate_latest(_store_registry(services))
    registry.register(StoreCollector(services))
    return generate_latest(registry)


def _store_registry(services) -> CollectorRegistry:
    registry = CollectorRegistry()
    registry.register(StoreCollector(services))
    return registry
