"""`python -m feature_store`: serve the API with gunicorn (what ./run.sh runs).

Logs the mode first, makes the demo warehouse in embedded mode if it is missing, then execs
gunicorn with gunicorn.conf.py. Arguments are passed to gunicorn (e.g. --bind 127.0.0.1:25001).
"""

from __future__ import annotations

import logging
import os
import sys

from config import PROJECT_DIR, Config
from feature_store import startup_line
from feature_store.features import REGISTRY
from feature_store.services.freshness import max_ages
from feature_store.services.schedule import Schedule


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = Config.from_env()
    try:  # refused here in one line, not in a worker's traceback (embedded mode keeps the schedule)
        if config.embedded:
            Schedule.parse(config.EXTRACT_SCHEDULE)
        max_ages(REGISTRY, config.FEATURE_MAX_AGE)
    except ValueError as exc:
        logging.getLogger("feature_store").error("%s", exc)
        sys.exit(2)
    logging.getLogger("feature_store").info(startup_line(config))
    os.chdir(PROJECT_DIR)
    gunicorn = os.path.join(os.path.dirname(sys.executable), "gunicorn")
    os.execv(gunicorn, [gunicorn, "-c", "gunicorn.conf.py", *sys.argv[1:], "wsgi:app"])


if __name__ == "__main__":
    main()
