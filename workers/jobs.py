"""RQ job functions. Thin: build the run's context from configuration, call the service.

Kept importable without side effects; connections are made when a job runs.
"""

from __future__ import annotations

import logging

from rq import get_current_job

from config import Config
from feature_store.errors import FeatureStoreError
from feature_store.features import REGISTRY
from feature_store.online_store import OnlineStore
from feature_store.services.extraction import extract_all
from feature_store.warehouse import Warehouse

log = logging.getLogger(__name__)


def extract_features(warehouse_url: str | None = None) -> dict:
    """Extract every feature for every entity into the online store (the job's Redis).

    Args:
        warehouse_url: set only by embedded mode's inline jobs; a worker uses its own
            WAREHOUSE_URL from the environment.
    """
    job = get_current_job()
    config = Config.from_env()
    warehouse = Warehouse(warehouse_url or config.WAREHOUSE_URL)
    store = OnlineStore(job.connection)

    def on_progress(update: dict) -> None:
        job.meta["progress"] = update
        job.save_meta()

    try:
        return extract_all(REGISTRY, warehouse, store, chunk_size=config.EXTRACT_CHUNK_SIZE,
                           on_progress=on_progress)
    except FeatureStoreError as exc:
        # A clean failure (warehouse or store down): say why, and don't retry it now; retries are
        # for runs whose worker died (RQ's abandoned-job handling).
        job.meta["error"] = f"extraction failed: {exc}; the previous values are still served"
        job.retries_left = 0
        job.save_meta()
        raise
    except Exception as exc:
        log.exception("extraction failed")
        job.meta["error"] = f"extraction failed: internal error ({exc.__class__.__name__}); see the worker log"
        job.retries_left = 0
        job.save_meta()
        raise
    finally:
        warehouse.dispose()
