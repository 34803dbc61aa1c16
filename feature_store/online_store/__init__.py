"""The online store: one Redis hash per feature value, at `{feature_type}:{entity_id}`.

Fields of each hash:
    value        the JSON encoding of the value (`null` included)
    computed_at  when the value was computed: integer microseconds since the Unix epoch (UTC);
                 an integer keeps the small hash compact (listpack) and makes "older than this
                 run" one comparison

Every command names one key (pipelines batch them; none spans keys), so the layout runs unchanged
on Redis Cluster.
"""

from __future__ import annotations

import bisect
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

# Delete a value only if it is older than the run that found its entity gone: a value written
# meanwhile (on demand, for an entity created after the run's snapshot) stays.
_DELETE_IF_OLDER = """
local computed_at = tonumber(redis.call('HGET', KEYS[1], 'computed_at'))
if computed_at and computed_at < tonumber(ARGV[1]) then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


def key(feature_type: str, entity_id: str) -> str:
    """The Redis key of one value. `entity_id` is the canonical decimal id (see Entity.parse_id)."""
    return f"{feature_type}:{entity_id}"


def now_micros() -> int:
    """The current UTC time as integer microseconds since the epoch (the stored computed_at)."""
    delta = datetime.utcnow() - EPOCH  # noqa: DTZ003 - naive UTC is the warehouse's convention
    return delta // timedelta(microseconds=1)


@lru_cache(maxsize=4096)
def format_computed_at(micros: int) -> str:
    """ISO 8601 without offset, `.ffffff` only when there is a fraction (as values are served)."""
    return (EPOCH + timedelta(microseconds=micros)).isoformat()


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
        self._delete_if_older = client.register_script(_DELETE_IF_OLDER)

    def read(self, keys: Sequence[tuple[str, str]]) -> list[tuple[bytes, int] | None]:
        """(value JSON, computed_at) for each (feature_type, entity_id), None where not stored.

        One round trip for all keys (a non-transactional pipeline of single-key HMGETs).

        Raises:
            StoreUnavailable: Redis is unreachable or did not answer in time.
        """
        try:
            if self.local_cache is not None:
                replies = self.local_cache.read([f"{ft}:{eid}".encode("utf-8", "surrogatepass") for ft, eid in keys])
            elif len(keys) == 1:
                replies = [self.redis.hmget(key(*keys[0]), FIELDS)]
            else:
                with self.redis.pipeline(transaction=False) as pipe:
                    for feature_type, entity_id in keys:
                        pipe.hmget(key(feature_type, entity_id), FIELDS)
                    replies = pipe.execute()
        except redis.RedisError as exc:
            raise StoreUnavailable("the online store (Redis) is unreachable or not answering") from exc
        return [_checked(value, computed_at) for value, computed_at in replies]

    def write(self, feature_type: str, values: Iterable[tuple[object, bytes]], computed_at: int) -> int:
        """Store each (entity id, value JSON) of one feature with `computed_at`; returns the count.

        Each value is one HSET of both fields, so no reader sees a value beside another run's
        computed_at.

        Raises:
            StoreUnavailable: Redis is unreachable or did not answer in time.
        """
        count = 0
        try:
            with self.redis.pipeline(transaction=False) as pipe:
                for entity_id, value in values:
                    pipe.execute_command("HSET", f"{feature_type}:{entity_id}", "value", value,
                                         "computed_at", computed_at)
                    count += 1
                if count:
                    pipe.execute()
        except redis.RedisError as exc:
            raise StoreUnavailable("the online store (Redis) is unreachable or not answering") from exc
        return count

    def remove_stale(self, feature_type: str, existing_ids: array, older_than: int,
                     scan_count: int = 10_000) -> int:
        """Delete the values of entities not in `existing_ids` (sorted) and computed before
        `older_than`; returns how many were deleted. Keys of other shapes are left alone.
        """
        prefix = f"{feature_type}:".encode()
        cut = len(prefix)
        size = len(existing_ids)
        stale: list[bytes] = []
        for raw_key in self.redis.scan_iter(match=prefix + b"*", count=scan_count):
            try:
                entity_id = int(raw_key[cut:])
            except ValueError:
                continue
            at = bisect.bisect_left(existing_ids, entity_id)
            if at == size or existing_ids[at] != entity_id:
                stale.append(raw_key)
        deleted = 0
        for start in range(0, len(stale), 1000):
            with self.redis.pipeline(transaction=False) as pipe:
                for stale_key in stale[start:start + 1000]:
                    self._delete_if_older(keys=[stale_key], args=[older_than], client=pipe)
                deleted += sum(pipe.execute())
        return deleted
