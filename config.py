"""Settings, read once from the environment. No I/O happens here.

Only the app factory (`feature_store.create_app`) and the worker entry (`workers`) read this.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from pathlib import Path

PROJECT_DIR = Path(__file__).resolve().parent
DEMO_WAREHOUSE_PATH = PROJECT_DIR / "var" / "demo_warehouse.db"
DEMO_WAREHOUSE_URL = f"sqlite:///{DEMO_WAREHOUSE_PATH}"


def _env_str(name: str, default: str | None) -> str | None:
    value = os.environ.get(name)
    return value if value not in (None, "") else default


def _env_float(name: str, default: float) -> float:
    value = os.environ.get(name)
    return float(value) if value not in (None, "") else default


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    return int(value) if value not in (None, "") else default


def _env_keys(name: str) -> tuple[str, ...]:
    value = os.environ.get(name) or ""
    return tuple(k.strip() for k in value.split(",") if k.strip())


@dataclass(frozen=True)
class Config:
    """Every setting of the web process and the workers (see the README's configuration table)."""

    # The online store and the RQ broker. None means embedded mode (fakeredis, jobs inline).
    REDIS_URL: str | None = field(default_factory=lambda: _env_str("REDIS_URL", None))
    # The online store is a Redis Cluster (REDIS_URL names one of its nodes); RQ then needs a
    # standalone Redis of its own (RQ_REDIS_URL).
    REDIS_CLUSTER: bool = field(default_factory=lambda: _env_str("REDIS_CLUSTER", "0") == "1")
    # The RQ broker (queue, run slots, run history); unset: REDIS_URL.
    RQ_REDIS_URL: str | None = field(default_factory=lambda: _env_str("RQ_REDIS_URL", None))
    # SQLAlchemy URL of the warehouse.
    WAREHOUSE_URL: str = field(default_factory=lambda: _env_str("WAREHOUSE_URL", DEMO_WAREHOUSE_URL))
    # Online-store timeouts on the request path: a Redis that is down or stuck answers 503 fast.
    REDIS_SOCKET_TIMEOUT: float = field(default_factory=lambda: _env_float("REDIS_SOCKET_TIMEOUT", 0.5))
    REDIS_CONNECT_TIMEOUT: float = field(default_factory=lambda: _env_float("REDIS_CONNECT_TIMEOUT", 0.5))
    # Keep values read from Redis in the web process until Redis invalidates them (CLIENT TRACKING).
    REDIS_LOCAL_CACHE: bool = field(default_factory=lambda: _env_str("REDIS_LOCAL_CACHE", "1") == "1")
    REDIS_LOCAL_CACHE_SIZE: int = field(default_factory=lambda: _env_int("REDIS_LOCAL_CACHE_SIZE", 100_000))
    # Deadline of an on-demand warehouse computation on the request path (seconds).
    WAREHOUSE_TIMEOUT: float = field(default_factory=lambda: _env_float("WAREHOUSE_TIMEOUT", 1.0))
    # Must be > 0 (0 would make body reads non-blocking); a smaller value is raised to 0.1 s.
    REQUEST_BODY_TIMEOUT: float = field(
        default_factory=lambda: max(0.1, _env_float("REQUEST_BODY_TIMEOUT", 10.0)))
    # RQ queue of the extraction jobs; workers must listen on the same name.
    EXTRACT_QUEUE: str = field(default_factory=lambda: _env_str("EXTRACT_QUEUE", "feature-extraction"))
    # How long POST /extract waits for its job before answering 202 (below gunicorn's timeout).
    EXTRACT_WAIT_SECONDS: float = field(default_factory=lambda: _env_float("EXTRACT_WAIT_SECONDS", 25.0))
    # Longest an extraction job may run before RQ stops it.
    EXTRACT_JOB_TIMEOUT: int = field(default_factory=lambda: _env_int("EXTRACT_JOB_TIMEOUT", 3600))
    # How long finished and failed jobs stay visible at GET /extract/<job_id>.
    EXTRACT_JOB_TTL: int = field(default_factory=lambda: _env_int("EXTRACT_JOB_TTL", 7 * 24 * 3600))
    # Scheduled extraction: a 5-field cron expression (UTC) or a whole number of seconds; unset: none.
    EXTRACT_SCHEDULE: str | None = field(default_factory=lambda: _env_str("EXTRACT_SCHEDULE", None))
    # Split each extraction run into this many id-range partitions that workers share (1: one job).
    EXTRACT_PARTITIONS: int = field(default_factory=lambda: _env_int("EXTRACT_PARTITIONS", 1))
    # Rows per chunk when streaming a feature query, and values per Redis pipeline.
    EXTRACT_CHUNK_SIZE: int = field(default_factory=lambda: _env_int("EXTRACT_CHUNK_SIZE", 10_000))
    # Statistics of every run (count, nulls, distinct, quantiles or top values) and drift against the
    # previous run, computed from the values as they stream; 0 turns them off.
    STATISTICS: bool = field(default_factory=lambda: _env_str("STATISTICS", "1") == "1")
    # Runs of statistics kept per feature (the history GET /statistics/<feature_type> shows).
    STATISTICS_HISTORY: int = field(default_factory=lambda: _env_int("STATISTICS_HISTORY", 30))
    # A feature drifted when its PSI against the previous run is above this (or, when set, its KS
    # statistic above DRIFT_KS_THRESHOLD; unset: KS is reported only).
    DRIFT_PSI_THRESHOLD: float = field(default_factory=lambda: _env_float("DRIFT_PSI_THRESHOLD", 0.2))
    DRIFT_KS_THRESHOLD: float | None = field(default_factory=lambda: (
        float(_env_str("DRIFT_KS_THRESHOLD", None)) if _env_str("DRIFT_KS_THRESHOLD", None) else None))
    # Largest /training request (items), and largest request body (bytes): beyond, 413.
    TRAINING_MAX_ITEMS: int = field(default_factory=lambda: _env_int("TRAINING_MAX_ITEMS", 10_000))
    MAX_CONTENT_LENGTH: int = field(default_factory=lambda: _env_int("MAX_CONTENT_LENGTH", 2 * 1024 * 1024))
    # Training sets (POST /training-sets): most spine rows, largest CSV or NDJSON spine (bytes; a
    # JSON spine obeys MAX_CONTENT_LENGTH), and spine rows per as-of statement.
    TRAINING_SET_MAX_ROWS: int = field(default_factory=lambda: _env_int("TRAINING_SET_MAX_ROWS", 1_000_000))
    TRAINING_SET_MAX_BYTES: int = field(default_factory=lambda: _env_int("TRAINING_SET_MAX_BYTES", 512 * 1024 * 1024))
    TRAINING_SET_CHUNK_ROWS: int = field(default_factory=lambda: _env_int("TRAINING_SET_CHUNK_ROWS", 50_000))
    # Training sets and parity checks built at once per web process (their batch statements have no
    # request deadline); beyond, 503 with Retry-After, so they never take every thread from inference.
    TRAINING_SET_CONCURRENCY: int = field(default_factory=lambda: _env_int("TRAINING_SET_CONCURRENCY", 2))
    # Training sets read each feature's values from an as-of index held in memory while the warehouse
    # is unchanged (services/as_of_index.py); 0 turns the indexes off (every chunk runs statements).
    AS_OF_INDEX: bool = field(default_factory=lambda: _env_str("AS_OF_INDEX", "1") == "1")
    # Optional API keys (comma-separated). None configured: the API is open.
    API_KEYS_READ: tuple[str, ...] = field(default_factory=lambda: _env_keys("API_KEYS_READ"))
    API_KEYS_ADMIN: tuple[str, ...] = field(default_factory=lambda: _env_keys("API_KEYS_ADMIN"))
    # Per-feature max ages overriding the declarations: "feature_type=seconds,..." (0: no limit).
    FEATURE_MAX_AGE: str | None = field(default_factory=lambda: _env_str("FEATURE_MAX_AGE", None))
    # Real-time updates (python -m workers.stream): the warehouse's replication slot of the
    # streaming process, the most row changes it reads per batch, and its poll interval (seconds).
    STREAM_SLOT: str = field(default_factory=lambda: _env_str("STREAM_SLOT", "feature_store"))
    STREAM_BATCH_CHANGES: int = field(default_factory=lambda: _env_int("STREAM_BATCH_CHANGES", 10_000))
    STREAM_POLL_INTERVAL: float = field(default_factory=lambda: _env_float("STREAM_POLL_INTERVAL", 0.1))
    # Embedded mode only: run one extraction when the app starts, so the demo serves cached values.
    EXTRACT_ON_START: bool = field(default_factory=lambda: _env_str("EXTRACT_ON_START", "1") == "1")

    @property
    def embedded(self) -> bool:
        return self.REDIS_URL is None

    @property
    def rq_redis_url(self) -> str | None:
        """The RQ broker's URL: RQ_REDIS_URL, else REDIS_URL."""
        return self.RQ_REDIS_URL or self.REDIS_URL

    @property
    def separate_rq_redis(self) -> bool:
        """Whether RQ lives on another Redis than the online store (always so on a cluster)."""
        return self.REDIS_CLUSTER or (self.RQ_REDIS_URL is not None and self.RQ_REDIS_URL != self.REDIS_URL)

    @classmethod
    def from_env(cls, **overrides) -> Config:
        """The environment's settings, with `overrides` (a test's, say) on top."""
        known = {f.name for f in fields(cls)}
        unknown = set(overrides) - known
        if unknown:
            raise TypeError(f"unknown settings: {sorted(unknown)}")
        return cls(**overrides)
