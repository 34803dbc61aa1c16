"""The streaming process (the Procfile's `stream` line): `python -m workers.stream`.

Follows the warehouse's committed changes through the replication slot STREAM_SLOT (created on
first start) and brings the affected values in Redis up to date (feature_store/streaming). Where
the warehouse cannot stream (SQLite; PostgreSQL without wal_level = logical, without the
replication privilege, or without REPLICA IDENTITY FULL on the tables) it says why in one log line
and stays up doing nothing, because process managers stop the whole formation when one process
exits (and would restart it in a loop).
"""

from __future__ import annotations

import logging
import sys

from config import Config
from feature_store.features import REGISTRY
from feature_store.online_store import OnlineStore, connect
from feature_store.services.jobs import ExtractionRuns
from feature_store.streaming.apply import Applier
from feature_store.streaming.process import StreamProcess
from feature_store.streaming.slot import Slot, check_slot_name
from feature_store.versions import current_versions
from feature_store.warehouse import Warehouse
from workers import start_process

log = logging.getLogger("workers.stream")


def main() -> int:
    stop = start_process()
    config = Config.from_env()
    try:
        check_slot_name(config.STREAM_SLOT)
    except ValueError as exc:
        log.error("%s", exc)
        return 2
    if config.embedded:
        log.info("streaming idle: REDIS_URL is not set (embedded mode keeps values in the web process)")
        stop.wait()
        return 0
    client = connect(config.REDIS_URL, socket_timeout=5.0, connect_timeout=2.0, cluster=config.REDIS_CLUSTER)
    rq_client = connect(config.rq_redis_url, socket_timeout=5.0, connect_timeout=2.0) \
        if config.separate_rq_redis else client
    runs = ExtractionRuns(rq_client, queue_name=config.EXTRACT_QUEUE, is_async=True,
                          job_timeout=config.EXTRACT_JOB_TIMEOUT, job_ttl=config.EXTRACT_JOB_TTL,
                          feature_types=REGISTRY.feature_types())
    warehouse = Warehouse(config.WAREHOUSE_URL)
    # Values written with their definition's version, as the web process and workers write them.
    slot = Slot(config.WAREHOUSE_URL, config.STREAM_SLOT)
    applier = Applier(REGISTRY, warehouse, OnlineStore(client, versions=current_versions(REGISTRY)),
                      start_refresh=lambda feature_types: runs.start_or_join(feature_types, trigger="stream"),
                      wait_visible=slot.wait_visible)
    try:
        StreamProcess(slot, applier, client, batch_changes=config.STREAM_BATCH_CHANGES,
                      poll_interval=config.STREAM_POLL_INTERVAL).run(stop)
    finally:
        slot.dispose()
        warehouse.dispose()
    return 0


if __name__ == "__main__":
    sys.exit(main())
