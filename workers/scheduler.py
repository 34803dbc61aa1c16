"""The scheduler process (the Procfile's `scheduler` line): `python -m workers.scheduler`.

Starts an extraction run at every due time of EXTRACT_SCHEDULE (see services/schedule.py). Any
number of these may run: each due time starts at most one run. With no schedule set (or in
embedded mode, where the web process keeps the schedule) it says so and stays up doing nothing,
because process managers stop the whole formation when one process exits.
"""

from __future__ import annotations

import logging
import sys

from config import Config
from feature_store.features import REGISTRY
from feature_store.online_store import connect
from feature_store.services.jobs import ExtractionRuns
from feature_store.services.schedule import Schedule, Scheduler
from workers import start_process

log = logging.getLogger("workers.scheduler")


def main() -> int:
    stop = start_process()
    config = Config.from_env()
    try:
        schedule = Schedule.parse(config.EXTRACT_SCHEDULE)
    except ValueError as exc:
        log.error("%s", exc)
        return 2
    if config.embedded:
        log.info("REDIS_URL is not set (embedded mode): the web process keeps the schedule; nothing to do here")
    elif schedule is None:
        log.info("EXTRACT_SCHEDULE is not set: no scheduled extraction; idle (set it to a 5-field cron "
                 "expression in UTC or a number of seconds)")
    else:
        client = connect(config.rq_redis_url, socket_timeout=5.0, connect_timeout=2.0)  # the run slots live with RQ
        runs = ExtractionRuns(client, queue_name=config.EXTRACT_QUEUE, is_async=True,
                              job_timeout=config.EXTRACT_JOB_TIMEOUT, job_ttl=config.EXTRACT_JOB_TTL,
                              feature_types=REGISTRY.feature_types())
        Scheduler(runs, schedule).run(stop)
        return 0
    stop.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
