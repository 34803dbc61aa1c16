"""Per-request metrics recorded per thread, handed to prometheus_client off the request path.

Measured (BENCHMARKS.md, section 11): recording a request straight into prometheus_client's
multiprocess values cost 0.91 x req/s at 64 connections, because a gunicorn worker's 8 threads
take turns on the library's one per-process lock (and the GIL) for every counter and histogram
write. So a request only appends to its own thread's buffer (a lock nobody else holds, but the
flusher for an instant), and one flusher thread per process moves the buffers into the library's
values every FLUSH_SECONDS and before every scrape this process answers: the same counters and
histograms, written by one thread, so nobody waits for the lock.

What a scrape of another process may miss: at most FLUSH_SECONDS of that process's requests, and
a worker's last FLUSH_SECONDS when it exits without a chance to flush (at exit it flushes).
"""

from __future__ import annotations

import atexit
import os
import threading
import time
from collections.abc import Callable

FLUSH_SECONDS = 0.25


class _Buffer:
    __slots__ = ("lock", "requests", "values")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.requests: dict[tuple, list[float]] = {}  # (endpoint, method, status) -> latencies
        self.values: dict[str, int] = {}  # source -> count


class Recorder:
    """Buffers per thread; `apply_requests(key, latencies)` and `apply_values(source, n)` write
    them into the library's values (called by the flusher only)."""

    def __init__(self, apply_requests: Callable[[tuple, list[float]], None],
                 apply_values: Callable[[str, int], None]) -> None:
        self._apply_requests = apply_requests
        self._apply_values = apply_values
        self._local = threading.local()
        self._buffers: list[_Buffer] = []
        self._lock = threading.Lock()  # the buffers list, and one flush at a time
        self._pid: int | None = None

    def _buffer(self) -> _Buffer:
        buffer = getattr(self._local, "buffer", None)
        if buffer is None or self._pid != os.getpid():
            buffer = self._local.buffer = _Buffer()
            with self._lock:
                if self._pid != os.getpid():  # first use in this process (after a fork, too)
                    self._pid, self._buffers = os.getpid(), []
                    threading.Thread(target=self._flush_forever, name="metrics-flush", daemon=True).start()
                    atexit.register(self.flush)
                self._buffers.append(buffer)
        return buffer

    def request(self, key: tuple, seconds: float) -> None:
        buffer = self._buffer()
        with buffer.lock:
            latencies = buffer.requests.get(key)
            if latencies is None:
                buffer.requests[key] = [seconds]
            else:
                latencies.append(seconds)

    def values(self, source: str, n: int) -> None:
        buffer = self._buffer()
        with buffer.lock:
            buffer.values[source] = buffer.values.get(source, 0) + n

    def flush(self) -> None:
        """Move every thread's buffer into the library's values (a scrape calls it first)."""
        with self._lock:
            for buffer in self._buffers:
                with buffer.lock:
                    requests, buffer.requests = buffer.requests, {}
                    values, buffer.values = buffer.values, {}
                for key, latencies in requests.items():
                    self._apply_requests(key, latencies)
                for source, n in values.items():
                    self._apply_values(source, n)

    def _flush_forever(self) -> None:
        pid = os.getpid()
        while self._pid == pid:
            time.sleep(FLUSH_SECONDS)
            try:
                self.flush()
            except Exception:  # noqa: BLE001 - a metrics defect must not stop the flusher
                continue
