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


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("feature_store").info(startup_line(Config.from_env()))
    os.chdir(PROJECT_DIR)
    gunicorn = os.path.join(os.path.dirname(sys.executable), "gunicorn")
    os.execv(gunicorn, [gunicorn, "-c", "gunicorn.conf.py", *sys.argv[1:], "wsgi:app"])


if __name__ == "__main__":
    main()
