"""gunicorn settings for the web process (Procfile: `gunicorn -c gunicorn.conf.py wsgi:app`)."""

import json
import os

from gunicorn import util

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


def on_starting(server):
    """Metrics of every worker process in one place (prometheus_client's multiprocess mode): a
    directory of their own, emptied, set before the workers fork."""
    import shutil
    import tempfile

    path = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if path:
        shutil.rmtree(path, ignore_errors=True)
        os.makedirs(path, exist_ok=True)
    else:
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="feature-store-metrics-")


def child_exit(server, worker):
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def post_worker_init(worker):
    """Tune the cyclic garbage collector for this workload: a training request allocates tens of
    thousands of short-lived, acyclic containers (reference counting frees them), and with the
    default thresholds concurrent requests trigger full collections over every live object.
    Objects made at start-up are frozen out of collection altogether."""
    import gc

    gc.freeze()
    gc.set_threshold(50_000, 20, 100)


def _json_error(sock, status_int, reason, mesg):
    """gunicorn answers some requests itself, before the app sees them (a request line over 4094
    bytes: 414, oversized headers: 431, malformed HTTP: 400): in JSON like every other answer."""
    detail = f"{reason.lower()}: {mesg}" if mesg else reason.lower()
    body = json.dumps({"success": False, "error": detail}).encode()
    head = (f"HTTP/1.1 {status_int} {reason}\r\nConnection: close\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode("latin-1")
    util.write_nonblock(sock, head + body)


util.write_error = _json_error
