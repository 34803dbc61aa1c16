"""gunicorn settings for the web process (Procfile: `gunicorn -c gunicorn.conf.py wsgi:app`)."""

import os

bind = f"{os.environ.get('HOST', '0.0.0.0')}:{os.environ.get('PORT', '25000')}"
# gthread: a request waiting for POST /extract holds a thread, not the whole worker.
worker_class = "gthread"
# Embedded mode keeps its Redis stand-in in the process: exactly one worker process there.
workers = int(os.environ.get("WEB_CONCURRENCY", "2")) if os.environ.get("REDIS_URL") else 1
threads = int(os.environ.get("WEB_THREADS", "8"))
# Above EXTRACT_WAIT_SECONDS (25 s by default), so a waiting /extract answers before any kill.
timeout = int(os.environ.get("WEB_TIMEOUT", "60"))
graceful_timeout = 10
keepalive = 5
accesslog = os.environ.get("WEB_ACCESS_LOG") or None
errorlog = "-"
# gunicorn's control socket has one default path per user: two servers on a host would collide.
control_socket_disable = True
