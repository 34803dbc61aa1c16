"""Server-assisted client-side caching of feature values, for the inference hot path.

Redis (6+) tracks which keys this process read (CLIENT TRACKING ... REDIRECT) and tells a
listener connection when any of them changes (`__redis__:invalidate`); the listener drops the
local copy. So a value served from this cache is the value Redis holds, give or take the
invalidation's flight time (milliseconds), and never one that extraction already replaced.

Safety rules, each for a reason:
- A read registers as pending for its key before asking Redis; reads of a key that overlap share
  one pending record (an episode). A reply is cached only if no invalidation for that key arrived
  during the episode (the reply and the invalidation travel on different connections, in either
  order) and every read of the episode answered so far got the same reply: two reads in flight
  may be answered in either order, so when they disagree nothing is cached and an entry cached
  by the episode is dropped before the disagreeing reply is returned (caching the older answer
  would let a reader that already saw the newer value see the older one again). An invalidation,
  or a disagreement, ends the key's episode: reads that start after it (so are executed after the
  change) begin a new one, so a key read without pause by many threads is cached again soon
  after a change. A read of an ended episode never caches, and its reply, when it arrives, is
  checked against the cache and the new episode: anything it contradicts is dropped.
- A data connection is used for cached reads only after it enabled tracking towards the current
  listener (checked per connection and per listener generation: a reconnect on either side
  makes tracking stale).
- The listener pings Redis; when Redis goes away, stops answering, or the listener reconnects,
  the whole cache is dropped and reads go to Redis (which then fails fast: 503).
- Redis tracks reads per data connection and forgets them, silently, when that connection
  closes (an error, a timeout, CLIENT KILL, the server's idle timeout). So cached reads use a
  pool of their own (RESP2, nothing else shares it); a failed read, or a data connection found
  reconnected, drops the whole cache; and the listener checks every ping interval that every
  tracking connection is still alive (CLIENT LIST ID), dropping the cache when one is gone.
"""

from __future__ import annotations

import logging
import threading
import time

import redis

log = logging.getLogger(__name__)

_NO_REPLY = object()

CHANNEL = b"__redis__:invalidate"


class LocalCache:
    """Values of keys read from Redis, kept until Redis invalidates them.

    Args:
        url: the Redis URL of the online store.
        socket_timeout, connect_timeout: as for the store's own client (fail fast).
        max_entries: size bound; past it the oldest entries are dropped.
        fields: the hash fields each read returns (HMGET), in order.
        ping_interval, ping_timeout: how often the listener checks Redis, and how long it waits.
    """

    def __init__(self, url: str, *, socket_timeout: float = 0.5, connect_timeout: float = 0.5,
                 max_entries: int = 100_000, ping_interval: float = 0.2, ping_timeout: float = 0.5,
                 fields: tuple[str, ...] = ("value", "computed_at")) -> None:
        self.max_entries = max_entries
        self.fields = fields
        self.ping_interval = ping_interval
        self.ping_timeout = ping_timeout
        self._entries: dict[bytes, tuple[bytes, int]] = {}
        # key -> [still cacheable (False once spoiled), reads in flight, the episode's reply so far]
        self._pending: dict[bytes, list] = {}
        self._lock = threading.Lock()
        self._redirect_id: int | None = None  # the listener's client id while it is healthy
        self._generation = 0
        self._started = False
        self._thread: threading.Thread | None = None
        # Cached reads use connections of their own: RESP2 (no pushes on a data connection) and
        # no other user whose timeouts could close a tracking connection behind our back.
        self._pool = redis.ConnectionPool.from_url(url, protocol=2, socket_timeout=socket_timeout,
                                                   socket_connect_timeout=connect_timeout)
        self._tracking_ids: dict[int, int] = {}  # id(connection) -> its Redis client id
        self._stopped = threading.Event()
        self._start_lock = threading.Lock()
        self.hits = self.misses = self.invalidations = 0

    # --- reads -----------------------------------------------------------------------------------
    def read(self, keys: list[bytes]) -> list[tuple[bytes, bytes] | tuple[None, None] | list]:
        """HMGET `fields` of each key: from the cache where valid, else one pipelined
        round trip on a tracking connection. Raises redis errors as the client would."""
        self._ensure_started()
        generation, redirect = self._generation, self._redirect_id
        results: list = [None] * len(keys)
        missing: list[int] = []
        episodes: list = []  # the pending record each missing key's read joined
        with self._lock:
            for i, key in enumerate(keys):
                hit = self._entries.get(key) if redirect is not None else None
                if hit is not None:
                    results[i] = hit
                else:
                    missing.append(i)
                    if redirect is not None:
                        pending = self._pending.get(key)
                        if pending is None:
                            pending = self._pending[key] = [True, 0, _NO_REPLY]
                        pending[1] += 1  # an overlapping read joins the episode
                        episodes.append(pending)
        self.hits += len(keys) - len(missing)
        self.misses += len(missing)
        if not missing:
            return results
        replies = None
        try:
            replies = self._fetch([keys[i] for i in missing], redirect, generation)
        finally:
            with self._lock:
                cacheable = (replies is not None and redirect is not None and self._generation == generation
                             and self._redirect_id == redirect)
                for n, i in enumerate(missing):
                    key = keys[i]
                    if replies is not None:
                        results[i] = replies[n]
                    if redirect is None:
                        continue
                    pending = episodes[n]
                    pending[1] -= 1
                    current = self._pending.get(key)
                    if pending[1] <= 0 and current is pending:
                        del self._pending[key]
                    if replies is None:
                        continue
                    reply = tuple(replies[n])
                    if current is not pending:
                        self._late_reply(key, reply, current)
                        continue
                    if pending[2] is not _NO_REPLY and pending[2] != reply:
                        # Reads of this episode disagree: cache neither, drop what it cached, and
                        # let reads from now on (executed after both answers) start a new one.
                        pending[0] = False
                        self._entries.pop(key, None)
                        if self._pending.get(key) is pending:
                            del self._pending[key]
                    pending[2] = reply
                    if cacheable and pending[0] and reply[0] is not None and key not in self._entries:
                        if len(self._entries) >= self.max_entries:
                            self._entries.pop(next(iter(self._entries)))
                        self._entries[key] = reply
        return results

    def _late_reply(self, key: bytes, reply: tuple, current: list | None) -> None:
        """A reply whose episode ended while it was in flight (an invalidation, or reads that
        disagreed). It may be older or newer than what reads started since have seen: it is not
        cached, and whatever it contradicts is dropped, the cached entry and the current episode's
        chance to cache (which then ends too), so no reader sees a value go back. Called locked."""
        if self._entries.get(key, reply) != reply:
            del self._entries[key]
        if current is None:
            return
        if current[2] is _NO_REPLY:
            current[2] = reply  # the current episode's own replies must agree with it too
        elif current[2] != reply:
            current[0] = False
            del self._pending[key]

    def _fetch(self, keys: list[bytes], redirect: int | None, generation: int) -> list:
        pool = self._pool
        conn = pool.get_connection()
        try:
            tracking = getattr(conn, "_tracking", None)
            if tracking is not None and tracking[0] is not conn._sock:
                # Reconnected: what it read before was tracked by a client that is gone.
                self._invalidate_all()
            if redirect is not None and getattr(conn, "_tracking", None) != (conn._sock, generation):
                conn.send_command("CLIENT", "TRACKING", "ON", "REDIRECT", redirect)
                if conn.read_response() != b"OK":
                    raise redis.ResponseError("CLIENT TRACKING refused")
                conn.send_command("CLIENT", "ID")
                client_id = conn.read_response()
                with self._lock:
                    self._tracking_ids[id(conn)] = client_id
                conn._tracking = (conn._sock, generation)
            if len(keys) == 1:
                conn.send_command("HMGET", keys[0], *self.fields)
                return [conn.read_response()]
            conn.send_packed_command(conn.pack_commands([("HMGET", key, *self.fields) for key in keys]))
            return [conn.read_response() for _ in keys]
        except BaseException:
            conn.disconnect()
            self._invalidate_all()
            raise
        finally:
            pool.release(conn)

    # --- invalidations ---------------------------------------------------------------------------
    def _invalidate(self, keys: list[bytes] | None) -> None:
        with self._lock:
            self.invalidations += 1
            if keys is None:  # FLUSHDB / FLUSHALL: everything goes
                self._entries.clear()
                self._spoil_all_pending()
                return
            for key in keys:
                self._entries.pop(key, None)
                # The episode in flight can no longer cache; reads from now on start a new one
                # (they are executed after the change), so a hot key is cached again at once.
                pending = self._pending.pop(key, None)
                if pending is not None:
                    pending[0] = False

    def _spoil_all_pending(self) -> None:
        for pending in self._pending.values():
            pending[0] = False
        self._pending.clear()

    def _invalidate_all(self) -> None:
        """Forget every cached value (some tracking may be lost); the listener stays."""
        with self._lock:
            self._generation += 1
            self._entries.clear()
            self._spoil_all_pending()

    def _drop_all(self) -> None:
        with self._lock:
            self._redirect_id = None
            self._generation += 1
            self._entries.clear()
            self._spoil_all_pending()

    def _ensure_started(self) -> None:
        if not self._started:
            with self._start_lock:
                if not self._started:
                    self._thread = threading.Thread(target=self._listen_forever, name="redis-invalidations",
                                                    daemon=True)
                    self._thread.start()
                    self._started = True

    def _listen_forever(self) -> None:
        while not self._stopped.is_set():
            # RESP2 (the pool's): the subscription answers as plain replies, not pushes.
            conn = self._pool.connection_class(**self._pool.connection_kwargs)
            audit = self._pool.connection_class(**self._pool.connection_kwargs)
            try:
                conn.connect()
                audit.connect()
                conn.send_command("CLIENT", "ID")
                client_id = conn.read_response()
                conn.send_command("SUBSCRIBE", CHANNEL)
                conn.read_response()
                with self._lock:
                    self._generation += 1
                    self._entries.clear()
                    self._redirect_id = client_id
                self._listen(conn, audit)
            except (redis.RedisError, OSError) as exc:
                log.debug("invalidation listener: %s", exc)
            finally:
                self._drop_all()
                conn.disconnect()
                audit.disconnect()
            self._stopped.wait(0.2)

    def _listen(self, conn: redis.Connection, audit: redis.Connection) -> None:
        last_heard = time.monotonic()
        ping_sent = 0.0
        while not self._stopped.is_set():
            if conn.can_read(timeout=self.ping_interval / 2):
                message = conn.read_response()
                last_heard = time.monotonic()  # any message proves Redis is answering
                if message[0] == b"message" and message[1] == CHANNEL:
                    self._invalidate(message[2])
            now = time.monotonic()
            if now - last_heard > self.ping_timeout + self.ping_interval:
                raise redis.TimeoutError("Redis stopped answering the invalidation listener")
            if now - ping_sent >= self.ping_interval:
                conn.send_command("PING")
                ping_sent = now
                self._audit(audit)

    def _audit(self, audit: redis.Connection) -> None:
        """Drop the cache if a tracking data connection is gone (its reads are untracked now)."""
        with self._lock:
            tracked = dict(self._tracking_ids)
        if not tracked:
            return
        audit.send_command("CLIENT", "LIST", "ID", *tracked.values())
        listing = audit.read_response()
        alive = {int(field[3:]) for line in listing.splitlines() for field in line.split()[:1]
                 if field.startswith(b"id=")}
        gone = {conn for conn, client_id in tracked.items() if client_id not in alive}
        if gone:
            with self._lock:
                for conn in gone:
                    self._tracking_ids.pop(conn, None)
            self._invalidate_all()

    def close(self) -> None:
        self._stopped.set()
        if self._thread is not None:
            self._thread.join(2)
        self._pool.disconnect()
