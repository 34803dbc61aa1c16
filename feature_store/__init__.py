"""The feature store: features computed once from the warehouse, served from Redis."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path

from flask import Flask
from flask_swagger_ui import get_swaggerui_blueprint

from config import DEMO_WAREHOUSE_PATH, DEMO_WAREHOUSE_URL, Config
from feature_store.features import REGISTRY
from feature_store.online_store import FIELDS, OnlineStore, connect
from feature_store.online_store.cluster_cache import ClusterLocalCache
from feature_store.online_store.local_cache import LocalCache
from feature_store.registry import Registry
from feature_store.services.as_of_index import AsOfIndexes
from feature_store.services.freshness import max_ages
from feature_store.services.jobs import ExtractionRuns
from feature_store.services.schedule import Schedule, start_in_thread
from feature_store.services.serving import FeatureServer
from feature_store.versions import current_versions, unrecorded
from feature_store.warehouse import Warehouse, describe_url

log = logging.getLogger("feature_store")

DEMO_USERS = 3000


@dataclass
class Services:
    """What the views use, built once per app from its configuration."""

    config: Config
    registry: Registry
    server: FeatureServer
    runs: ExtractionRuns
    warehouse: Warehouse
    store: OnlineStore
    schedule_stop: threading.Event | None = None  # embedded mode's in-process schedule
    # Slots for the requests that run batch statements on the web process (training sets, parity).
    heavy: threading.BoundedSemaphore = field(default_factory=lambda: threading.BoundedSemaphore(2))
    as_of_indexes: AsOfIndexes | None = None  # training sets' (services/as_of_index.py)

    def close(self) -> None:
        """Release connections and threads (for a process that builds and drops apps: tests)."""
        if self.schedule_stop is not None:
            self.schedule_stop.set()
        if self.as_of_indexes is not None:
            self.as_of_indexes.close()
        self.warehouse.dispose()
        if self.store.local_cache is not None:
            self.store.local_cache.close()
        self.store.redis.close()
        if self.runs.redis is not self.store.redis:
            self.runs.redis.close()


def startup_line(config: Config) -> str:
    """The first log line: which mode, which stores, whether the API is open."""
    warehouse = describe_url(config.WAREHOUSE_URL)
    access = ("API keys required (read and admin scopes)" if config.API_KEYS_READ or config.API_KEYS_ADMIN
              else "API open: no API keys configured")
    if config.embedded:
        return (f"feature store in EMBEDDED mode: in-process fakeredis online store, extraction jobs run "
                f"inline, warehouse {warehouse}; {access}. Set REDIS_URL for production.")
    redis_url = describe_url(config.REDIS_URL)
    return f"feature store: online store {redis_url}, RQ workers, warehouse {warehouse}; {access}"


def create_app(test_config: dict | None = None) -> Flask:
    """Build the Flask app.

    Args:
        test_config: settings that override the environment's (see config.Config).
    """
    config = Config.from_env(**(test_config or {}))
    max_age = max_ages(REGISTRY, config.FEATURE_MAX_AGE)  # a malformed override fails the start
    # Embedded mode keeps the schedule here (a malformed one fails the start); elsewhere the
    # scheduler process does.
    schedule = Schedule.parse(config.EXTRACT_SCHEDULE) if config.embedded else None
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = config.MAX_CONTENT_LENGTH
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    log.info(startup_line(config))
    for feature_type in unrecorded(REGISTRY):
        log.warning("%s: its definition changed since its last recorded version; its values are computed and "
                    "served as a new version, listed unrecorded: run `flask --app wsgi features versions "
                    "--record` and commit feature_store/versions.json", feature_type)

    if config.embedded:
        import fakeredis

        client = fakeredis.FakeRedis()
        if config.WAREHOUSE_URL == DEMO_WAREHOUSE_URL and not Path(DEMO_WAREHOUSE_PATH).exists():
            from feature_store.warehouse import demo

            counts = demo.generate(DEMO_WAREHOUSE_URL, DEMO_USERS)
            log.info("created the demo warehouse %s: %s", DEMO_WAREHOUSE_PATH, counts)
        rq_client = client
    else:
        client = connect(config.REDIS_URL, socket_timeout=config.REDIS_SOCKET_TIMEOUT,
                         connect_timeout=config.REDIS_CONNECT_TIMEOUT, cluster=config.REDIS_CLUSTER)
        rq_client = (connect(config.rq_redis_url, socket_timeout=config.REDIS_SOCKET_TIMEOUT,
                             connect_timeout=config.REDIS_CONNECT_TIMEOUT)
                     if config.separate_rq_redis else client)

    warehouse = Warehouse(config.WAREHOUSE_URL, request_timeout=config.WAREHOUSE_TIMEOUT)
    cache = None
    if not config.embedded and config.REDIS_LOCAL_CACHE:
        settings = {"socket_timeout": config.REDIS_SOCKET_TIMEOUT, "connect_timeout": config.REDIS_CONNECT_TIMEOUT,
                    "max_entries": config.REDIS_LOCAL_CACHE_SIZE, "ping_timeout": config.REDIS_SOCKET_TIMEOUT,
                    "fields": FIELDS}
        # On a cluster, one cache per node: each node tracks and invalidates only its own keys.
        cache = (ClusterLocalCache(client, **settings) if config.REDIS_CLUSTER
                 else LocalCache(config.REDIS_URL, **settings))
    store = OnlineStore(client, cache, versions=current_versions(REGISTRY))
    runs = ExtractionRuns(rq_client, queue_name=config.EXTRACT_QUEUE, is_async=not config.embedded,
                          job_timeout=config.EXTRACT_JOB_TIMEOUT, job_ttl=config.EXTRACT_JOB_TTL,
                          feature_types=REGISTRY.feature_types(), warehouse_url=config.WAREHOUSE_URL)
    services = Services(config, REGISTRY, FeatureServer(REGISTRY, store, warehouse, max_age), runs, warehouse, store,
                        heavy=threading.BoundedSemaphore(max(1, config.TRAINING_SET_CONCURRENCY)),
                        as_of_indexes=AsOfIndexes(warehouse, client, enabled=config.AS_OF_INDEX))
    app.extensions["feature_store"] = services

    from feature_store import cli
    from feature_store.api import access
    from feature_store.api import bp as api_bp
    from feature_store.api.errors import register_error_handlers
    from feature_store.api.fast import FastInference
    from feature_store.api.openapi import bp as openapi_bp
    from feature_store.api.ops import bp as ops_bp
    from feature_store.web import bp as catalog_bp

    app.register_blueprint(api_bp)
    app.register_blueprint(openapi_bp)
    app.register_blueprint(ops_bp)
    app.register_blueprint(catalog_bp)  # the catalog page at /
    # Interactive docs over the OpenAPI document, from flask-swagger-ui's own files (nothing is
    # loaded from a CDN; the online validator badge is off, so no request leaves the machine).
    app.register_blueprint(get_swaggerui_blueprint("/docs", "/api/v1/openapi.json", config={
        "app_name": "Feature store API", "validatorUrl": None, "displayRequestDuration": True}))
    register_error_handlers(app)
    access.init_app(app)
    cli.init_app(app)
    app.wsgi_app = FastInference(app)

    if config.embedded and config.EXTRACT_ON_START:
        job_id, _ = runs.start_or_join()
        status = runs.status(job_id)
        log.info("initial extraction %s: %s", job_id, status.result if status and status.result else status)
    if config.embedded and schedule is not None:
        services.schedule_stop = start_in_thread(runs, schedule)
        log.info("scheduled extraction in this process: %s", schedule.describe())
    return app
