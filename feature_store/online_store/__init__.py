"""The online store: one Redis hash per feature value, at `{feature_type}:{entity_id}`.

Fields of each hash:
    value        the JSON encoding of the value (`null` included)
    computed_at  when the value was computed: integer seconds since the Unix epoch (UTC); a
                 32-bit integer keeps the small hash in a smaller allocation than a timestamp
                 string, and makes "older than this run" one comparison

Every command names one key (pipelines batch them; none spans keys), so the layout runs unchanged
on Redis Cluster.
"""

from __future__ import annotations

import bisect
import time
from array import array
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from functools import lru_cache

import orjson
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from feature_store.errors import StoreUnavailable
from feature_store.online_store.local_cache import LocalCache

EPOCH = datetime(1970, 1, 1)
FIELDS = ("value", "computed_at")

# Delete a value only if it is not newer than the run that found its entity gone: a value written
# after the run's second (on demand, for an entity created after the run's snapshot) stays. A value
# without a readable computed_at is not in the layout and goes too.
_DELETE_IF_OLDER = """
local computed_at = tonumber(redis.call('HGET', KEYS[1], 'computed_at')) or 0
if computed_at <= tonumber(ARGV[1]) then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


def key(feature_type: str, entity_id: str) -> str:
    """The Redis key of one value. `entity_id` is the canonical decimal id (see Entity.parse_id)."""
    return f"{feature_type}:{entity_id}"


RUN_STAMP_KEY = "feature-store:extraction:last-computed-at"

# Each extraction run's computed_at is later than the previous run's, even within one second,
# so "computed before this run" is one comparison.
_NEXT_RUN_STAMP = """
local last = tonumber(redis.call('GET', KEYS[1]) or '0')
local stamp = tonumber(ARGV[1])
if stamp <= last then stamp = last + 1 end
redis.call('SET', KEYS[1], stamp)
return stamp
"""


def now_seconds() -> int:
    """The current UTC time as integer seconds since the epoch (the stored computed_at)."""
    return int(time.time())


@lru_cache(maxsize=4096)
def format_computed_at(seconds: int) -> str:
    """ISO 8601 without offset, as values are served: 2025-01-20T12:00:00."""
    return (EPOCH + timedelta(seconds=seconds)).isoformat()


def connect(url: str, *, socket_timeout: float, connect_timeout: float, **kwargs) -> redis.Redis:
    """A Redis client that fails fast: short timeouts and no retry storm on the request path."""
    return redis.Redis.from_url(
        url,
        socket_timeout=socket_timeout,
        socket_connect_timeout=connect_timeout,
        retry=Retry(NoBackoff(), 0),
        health_check_interval=0,
        **kwargs,
    )


def _store_error(exc: redis.RedisError) -> StoreUnavailable:
    if isinstance(exc, redis.ResponseError):
        # Redis answered, but refused: e.g. a key of another type where a feature value belongs.
        return StoreUnavailable("the online store refused a command (see the service log)")
    return StoreUnavailable("the online store (Redis) is unreachable or not answering")


def _checked(value: bytes | None, computed_at: bytes | None) -> tuple[bytes, int] | None:
    """A stored (value, computed_at), or None when absent or not in the layout (another writer's
    hash, a half-written one): such a value is treated as not cached, so it is recomputed."""
    if value is None:
        return None
    try:
        orjson.loads(value)
        return value, int(computed_at)
    except (orjson.JSONDecodeError, TypeError, ValueError):
        return None


class OnlineStore:
    """Reads and writes feature values in Redis (or an in-process fakeredis in embedded mode)."""

    def __init__(self, client: redis.Redis, local_cache: LocalCache | None = None) -> None:
        self.redis = client
        self.local_cache = local_cache
        # fakeredis (embedded mode, unit tests) speaks through redis-py's command API only.
        self._raw_protocol = not type(client).__module__.startswith("fakeredis")
        self._delete_if_older = client.register_script(_DELETE_IF_OLDER)
        self._next_run_stamp = client.register_script(_NEXT_RUN_STAMP)

    def run_stamp(self) -> int:
        """The computed_at of a new extraction run: now, or just after the previous run's."""
        try:
            return int(self._next_run_stamp(keys=[RUN_STAMP_KEY], args=[now_seconds()]))
        except redis.RedisError as exc:
            raise _store_error(exc) from exc

    def read(self, keys: Sequence[tuple[str, str]]) -> list[tuple[bytes, int] | None]:
        """(value JSON, computed_at) for each (feature_type, entity_id), None where not stored.

        One round trip for all keys (a non-transactional pipeline of single-key HMGETs).

        Raises:
            StoreUnavailable: Redis is unreachable or did not answer in time.
        """
        try:
            if self.local_cache is not None:
                replies = self.local_cache.read([key(ft, eid).encode("utf-8", "surrogatepass") for ft, eid in keys])
            elif len(keys) == 1:
                replies = [self.redis.hmget(key(*keys[0]), FIELDS)]
            else:
                with self.redis.pipeline(transaction=False) as pipe:
                    for feature_type, entity_id in keys:
                        pipe.hmget(key(feature_type, entity_id), FIELDS)
                    replies = pipe.execute()
        except redis.RedisError as exc:
            raise _store_error(exc) from exc
        return [_checked(value, computed_at) for value, computed_at in replies]

    def write(self, feature_type: str, values: Iterable[tuple[object, bytes]], computed_at: int) -> int:
        """Store each (entity id, value JSON) of one feature with `computed_at`; returns the count.

        Each value is one HSET of both fields, so no reader sees a value beside another run's
        computed_at.

        Raises:
            StoreUnavailable: Redis is unreachable or did not answer in time.
        """
        try:
            if not self._raw_protocol:
                count = 0
                with self.redis.pipeline(transaction=False) as pipe:
                    for entity_id, value in values:
                        pipe.execute_command("HSET", f"{feature_type}:{entity_id}", "value", value,
                                             "computed_at", computed_at)
                        count += 1
                    if count:
                        pipe.execute()
                return count
            return self._write_packed(feature_type, values, computed_at)
        except redis.RedisError as exc:
            raise _store_error(exc) from exc

    def _write_packed(self, feature_type: str, values: Iterable[tuple[object, bytes]], computed_at: int) -> int:
        # Batch extraction's hot loop: the HSETs are packed into one RESP buffer here (a third of
        # the cost of building them through redis-py's pipeline), sent at once, and every reply
        # is read back so that an error reply still fails the write.
        prefix = feature_type.encode() + b":"
        stamp = str(computed_at).encode()
        tail = b"$11\r\ncomputed_at\r\n$%d\r\n%s\r\n" % (len(stamp), stamp)
        parts = []
        for entity_id, value in values:
            name = prefix + str(entity_id).encode()
            parts.append(b"*6\r\n$4\r\nHSET\r\n$%d\r\n%s\r\n$5\r\nvalue\r\n$%d\r\n%s\r\n%s"
                         % (len(name), name, len(value), value, tail))
        if not parts:
            return 0
        pool = self.redis.connection_pool
        conn = pool.get_connection()
        try:
            conn.send_packed_command([b"".join(parts)])
            for _ in parts:
                conn.read_response()
        except BaseException:
            conn.disconnect()
            raise
        finally:
            pool.release(conn)
        return len(parts)

    def remove_stale(self, existing: dict[str, array], older_than: int, scan_count: int = 10_000) -> dict[str, int]:
        """Delete the values of entities that no longer exist: for each feature type, keys whose
        entity id is not in its sorted `existing` ids and whose value was computed no later than
        `older_than` (the run's stamp; the run itself wrote only ids in `existing`). One SCAN over
        the keyspace serves every feature; keys of other shapes
        are left alone. Returns the count deleted per feature type.
        """
        try:
            return self._remove_stale(existing, older_than, scan_count)
        except redis.RedisError as exc:
            raise _store_error(exc) from exc

    def _remove_stale(self, existing: dict[str, array], older_than: int, scan_count: int) -> dict[str, int]:
        wanted = {feature_type.encode(): ids for feature_type, ids in existing.items()}
        stale: list[bytes] = []
        cursor = 0
        while True:
            cursor, keys = self.redis.scan(cursor, count=scan_count)
            for raw_key in keys:
                feature_type, _, id_text = raw_key.partition(b":")
                ids = wanted.get(feature_type)
                if ids is None or not (id_text.isdigit() or id_text[:1] == b"-" and id_text[1:].isdigit()):
                    continue
                entity_id = int(id_text)
                at = bisect.bisect_left(ids, entity_id)
                if at == len(ids) or ids[at] != entity_id:
                    stale.append(raw_key)
            if cursor == 0:
                break
        deleted = {feature_type: 0 for feature_type in existing}
        for start in range(0, len(stale), 1000):
            batch = stale[start:start + 1000]
            with self.redis.pipeline(transaction=False) as pipe:
                for stale_key in batch:
                    self._delete_if_older(keys=[stale_key], args=[older_than], client=pipe)
                for stale_key, removed in zip(batch, pipe.execute(), strict=True):
                    deleted[stale_key.partition(b":")[0].decode()] += removed
        return deleted
