"""Process entry points: the RQ job functions (workers/jobs.py, run by the Procfile's `worker`
line) and the long-running `scheduler` and `stream` processes."""

from __future__ import annotations

import logging
import signal
import threading


def start_process() -> threading.Event:
    """What a long-running Procfile process does first: log lines with their time and logger, and
    an event set by SIGTERM or SIGINT, so the process finishes what it is doing and exits 0."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    return stop
