"""The online store: one Redis hash per feature value, at `{feature_type}:{entity_id}`.

Fields of each hash:
    value        the JSON encoding of the value (`null` included)
    computed_at  when the value was computed: integer seconds since the Unix epoch (UTC); a
                 32-bit integer keeps the small hash in a smaller allocation than a timestamp
                 string, and makes "older than this run" one comparison
    version      the fingerprint of the feature's definition that computed it (versions.py); a
                 value of another fingerprint is not served (it reads as not cached)
    position     where in the warehouse's history the read that computed it stands (PostgreSQL):
                 a write of an older position does not replace it (ordering.py)

Beside the values, per feature type, the ids an extraction run needs to find the values of gone
entities without a scan (id_records.py).

Every command names one key (pipelines batch them; none spans keys), so the layout runs unchanged
on Redis Cluster.
"""

from __future__ import annotations

import time
from array import array
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta
from functools import lru_cache

import orjson
import redis
from redis.backoff import NoBackoff
from redis.cluster import RedisCluster
from redis.retry import Retry

from feature_store.errors import StoreUnavailable
from feature_store.online_store import ordering
from feature_store.online_store.id_records import IdRecords, decode_ids, on_demand_key, parse_stored_id, record_key
from feature_store.online_store.local_cache import LocalCache

EPOCH = datetime(1970, 1, 1)
FIELDS = ("value", "computed_at", "version")

# Delete a value only if it is not newer than the run that found its entity gone: a value written
# after the run's second (on demand, for an entity created after the run's snapshot) stays. A value
# without a readable computed_at (or not a hash) is not in the layout and goes too. With the run's
# warehouse position (ARGV[2]), a value read at a later position of the same warehouse (a streamed
# value of an entity created after the run's read, within its second) stays too (ordering.py).
# Returns 1 when deleted, 0 when there was nothing, -1 when kept.
_DELETE_IF_OLDER = """
local kind = redis.call('TYPE', KEYS[1])['ok']
if kind == 'none' then return 0 end
local computed_at, position = 0, nil
if kind == 'hash' then
  local stored = redis.call('HMGET', KEYS[1], 'computed_at', 'position')
  computed_at, position = tonumber(stored[1]) or 0, stored[2]
end
if computed_at > tonumber(ARGV[1]) then return -1 end
local run = ARGV[2]
if position and run and run ~= '' then
  local ps, rs = string.find(position, ':', 1, true), string.find(run, ':', 1, true)
  if ps and rs and string.sub(position, 1, ps) == string.sub(run, 1, rs)
      and string.sub(position, ps + 1) > string.sub(run, rs + 1) then
    return -1
  end
end
return redis.call('DEL', KEYS[1])
"""


def key(feature_type: str, entity_id: str) -> str:
    """The Redis key of one value. `entity_id` is the canonical decimal id (see Entity.parse_id)."""
    return f"{feature_type}:{entity_id}"


RUN_STAMP_KEY = "feature-store:extraction:last-computed-at"
# {feature_type: JSON {"computed_at", "job_id"}} of the last run that refreshed each feature.
REFRESHED_KEY = "feature-store:refreshed"

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


def connect(url: str, *, socket_timeout: float, connect_timeout: float, cluster: bool = False,
            **kwargs) -> redis.Redis:
    """A Redis client that fails fast: short timeouts and no retry storm on the request path.
    With `cluster`, a Redis Cluster client (`url` names any node; the others are discovered)."""
    if cluster:
        return RedisCluster.from_url(url, socket_timeout=socket_timeout, socket_connect_timeout=connect_timeout,
                                     **kwargs)
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


def _checked(value: bytes | None, computed_at: bytes | None, version: bytes | None,
             current: bytes | None) -> tuple[bytes, int] | None:
    """A stored (value, computed_at), or None when absent, of another version than `current`, or
    not in the layout (another writer's hash, a half-written one): such a value is treated as not
    cached, so it is recomputed."""
    if value is None or version != current:
        return None
    try:
        orjson.loads(value)
        return value, int(computed_at)
    except (orjson.JSONDecodeError, TypeError, ValueError):
        return None


class OnlineStore:
    """Reads and writes feature values in Redis (or an in-process fakeredis in embedded mode)."""

    def __init__(self, client: redis.Redis, local_cache: LocalCache | None = None,
                 versions: Mapping[str, str] | None = None) -> None:
        """`versions`: {feature_type: fingerprint} (versions.current_versions). Each value of such a
        feature is written with its version and served only while it is the current one; a feature
        type not named there is stored without a version (as unit tests of the layout do)."""
        self.redis = client
        self.local_cache = local_cache
        self.versions = {ft: v.encode() for ft, v in (versions or {}).items()}
        self.cluster = isinstance(client, RedisCluster)
        # fakeredis (embedded mode, unit tests) speaks through redis-py's command API only; on a
        # cluster, packed commands go to each key's node (batch_writer).
        self._raw_protocol = not type(client).__module__.startswith("fakeredis") and not self.cluster
        self._delete_if_older = client.register_script(_DELETE_IF_OLDER)
        self._next_run_stamp = client.register_script(_NEXT_RUN_STAMP)
        self.records = IdRecords(client, self._delete_if_older)
        self._write_if_newer = client.register_script(ordering.WRITE_IF_NEWER)
        self._delete_if_newer = client.register_script(ordering.DELETE_IF_NEWER)

    def _version_field(self, feature_type: str) -> tuple:
        version = self.versions.get(feature_type)
        return () if version is None else ("version", version)

    def ping(self) -> None:
        """Check that Redis answers.

        Raises:
            StoreUnavailable: it does not.
        """
        try:
            self.redis.ping()
        except redis.RedisError as exc:
            raise _store_error(exc) from exc

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
        versions = self.versions
        return [_checked(value, computed_at, version, versions.get(feature_type))
                for (feature_type, _), (value, computed_at, version) in zip(keys, replies, strict=True)]

    def write(self, feature_type: str, values: Iterable[tuple[object, bytes]], computed_at: int, *,
              on_demand: bool = False, position: bytes | None = None) -> int:
        """Store each (entity id, value JSON) of one feature with `computed_at`; returns the count.

        Each value is one HSET of both fields, so no reader sees a value beside another run's
        computed_at. With `on_demand` (values computed outside an extraction run), their ids are
        added to the feature's on-demand id set after the values, so that the next run checks them
        (see id_records.py). With the warehouse `position` the values were read at, a value is
        written only where the stored one is not of a later position (ordering.py).

        Raises:
            StoreUnavailable: Redis is unreachable or did not answer in time.
        """
        values = list(values)
        if not values:
            return 0
        if position is not None:
            return self.apply_changes([(feature_type, values, (), position)], computed_at, on_demand=on_demand)[0]
        try:
            if not self._raw_protocol:
                tail = ("computed_at", computed_at, *self._version_field(feature_type))
                with self.redis.pipeline(transaction=False) as pipe:
                    for entity_id, value in values:
                        pipe.execute_command("HSET", f"{feature_type}:{entity_id}", "value", value, *tail)
                    if on_demand:
                        pipe.sadd(on_demand_key(feature_type), *(str(entity_id) for entity_id, _ in values))
                    pipe.execute()
                return len(values)
            payload = _pack_hsets(feature_type, values, computed_at, self.versions.get(feature_type))
            if on_demand:
                payload += _pack_command([b"SADD", on_demand_key(feature_type).encode(),
                                          *(str(entity_id).encode() for entity_id, _ in values)])
            conn = self.redis.connection_pool.get_connection()
            try:
                conn.send_packed_command([payload])
                for _ in range(len(values) + on_demand):
                    conn.read_response()
            except BaseException:
                conn.disconnect()
                raise
            finally:
                self.redis.connection_pool.release(conn)
            return len(values)
        except redis.RedisError as exc:
            raise _store_error(exc) from exc

    def apply_changes(self, work: Sequence[tuple[str, Sequence[tuple[object, bytes]], Sequence[object], bytes | None]],
                      computed_at: int, *, on_demand: bool = True) -> tuple[int, int]:
        """For each (feature_type, values, gone ids, position): write the values (entity id, value
        JSON) and remove the values of the gone ids, each only where the stored one is not of a
        later position (ordering.py: a removal leaves a tombstone). One pipeline for all of it
        (the streaming process's batch), the written ids added to the on-demand sets (the next
        extraction run checks them). Returns (values written, values removed).

        Raises:
            StoreUnavailable: Redis is unreachable or did not answer in time.
        """
        try:
            return ordering.apply_changes(self, work, computed_at, on_demand=on_demand)
        except redis.RedisError as exc:
            raise _store_error(exc) from exc

    @contextmanager
    def change_writer(self, computed_at: int, *, on_demand: bool = True) -> Iterator[tuple[Callable, dict]]:
        """apply_changes a feature at a time: `with store.change_writer(t) as (write, counts)`,
        `write(feature_type, values, gone ids, position)` per feature, sent at once so Redis runs
        them while the next feature is computed; every reply is read as the block ends, and
        `counts` then holds {"written", "removed"} (ordering.change_writer).

        Raises:
            StoreUnavailable: Redis is unreachable or did not answer in time.
        """
        try:
            with ordering.change_writer(self, computed_at, on_demand=on_demand) as writer:
                yield writer
        except redis.RedisError as exc:
            raise _store_error(exc) from exc

    @contextmanager
    def batch_writer(self, computed_at: int) -> Iterator[Callable[[str, list[tuple[object, bytes]]], None]]:
        """A writer for an extraction run's values: `write(feature_type, chunk, position=None)`
        stores each (entity id, value JSON) of the chunk with `computed_at`, as write() does (with
        the warehouse `position` its query read at: not over a value of a later one).

        One connection, and one chunk in flight: each chunk is packed while Redis still executes
        the previous one, whose replies are read (an error reply fails the write) just before the
        new chunk is sent. Every reply has been read when the block ends without error.

        Raises:
            StoreUnavailable: Redis is unreachable, did not answer in time or refused a command.
        """
        if self.cluster:
            self.ensure_scripts()
            yield lambda feature_type, chunk, position=None: self._write_per_node(feature_type, chunk, computed_at,
                                                                                  position)
            return
        if not self._raw_protocol:
            yield lambda feature_type, chunk, position=None: self.write(feature_type, chunk, computed_at,
                                                                        position=position) and None
            return
        pool = self.redis.connection_pool
        try:
            conn = pool.get_connection()
        except redis.RedisError as exc:
            raise _store_error(exc) from exc
        in_flight = 0
        sha: list[bytes] = []

        def write(feature_type: str, chunk: list[tuple[object, bytes]], position: bytes | None = None) -> None:
            nonlocal in_flight
            if not chunk:
                return
            version = self.versions.get(feature_type)
            if position is None:
                payload, replies = _pack_hsets(feature_type, chunk, computed_at, version), len(chunk)
            else:
                if not sha:  # loaded once per run: the packed calls below name it
                    sha.append(self.redis.script_load(ordering.WRITE_IF_NEWER).encode())
                payload, replies = ordering.pack_writes(sha[0], feature_type, chunk, computed_at, version, position)
            for _ in range(in_flight):
                conn.read_response()
            in_flight = 0
            conn.send_packed_command([payload])
            in_flight = replies

        try:
            yield write
            for _ in range(in_flight):
                conn.read_response()
        except redis.RedisError as exc:
            conn.disconnect()
            raise _store_error(exc) from exc
        except BaseException:
            conn.disconnect()
            raise
        finally:
            pool.release(conn)

    def stored_ids(self, feature_type: str) -> list[int]:
        """The ids whose value the store may hold for `feature_type` (the id record as of the last
        run, and the ids computed on demand since), for sampling: a superset of the stored ones.

        Raises:
            StoreUnavailable: Redis is unreachable.
        """
        try:
            blob = self.redis.get(record_key(feature_type))
            ids = set(decode_ids(blob)) if blob is not None else set()
            ids.update(i for i in map(parse_stored_id, self.redis.smembers(on_demand_key(feature_type)))
                       if i is not None)
        except ValueError:
            ids = set()
        except redis.RedisError as exc:
            raise _store_error(exc) from exc
        return sorted(ids)

    def _write_per_node(self, feature_type: str, chunk: list[tuple[object, bytes]], computed_at: int,
                        position: bytes | None = None) -> None:
        """A chunk of HSETs on a cluster (with a `position`: conditional writes, one script call per
        key): packed per node (the keys' slots decide), sent to every node, then every reply read."""
        by_node: dict[str, tuple[object, list]] = {}
        get_node = self.redis.get_node_from_key
        prefix = f"{feature_type}:"
        for entity_id, value in chunk:
            node = get_node(f"{prefix}{entity_id}")
            by_node.setdefault(node.name, (node, []))[1].append((entity_id, value))
        sent = []
        try:
            try:
                for node, values in by_node.values():
                    pool = self.redis.get_redis_connection(node).connection_pool
                    conn = pool.get_connection()
                    version = self.versions.get(feature_type)
                    if position is None:
                        sent.append((pool, conn, len(values)))
                        conn.send_packed_command([_pack_hsets(feature_type, values, computed_at, version)])
                    else:
                        payload, replies = ordering.pack_writes(self._write_if_newer.sha.encode(), feature_type,
                                                                values, computed_at, version, position, group=1)
                        sent.append((pool, conn, replies))
                        conn.send_packed_command([payload])
                for _, conn, count in sent:
                    for _ in range(count):
                        conn.read_response()
            except BaseException:
                for _, conn, _ in sent:
                    conn.disconnect()
                raise
            finally:
                for pool, conn, _ in sent:
                    pool.release(conn)
        except redis.RedisError as exc:
            raise _store_error(exc) from exc

    def ensure_scripts(self) -> None:
        """On a cluster, load the scripts that pipelines call on every node first (a pipeline
        cannot load a script a node does not know)."""
        if self.cluster:
            try:
                self.redis.script_load(_DELETE_IF_OLDER)
                self.redis.script_load(ordering.WRITE_IF_NEWER)
            except redis.RedisError as exc:
                raise _store_error(exc) from exc

    def note_refreshed(self, feature_types: Iterable[str], job_id: str, computed_at: int) -> None:
        """Record that run `job_id` refreshed `feature_types` with values computed at `computed_at`
        (a later record is never replaced by an earlier run's, whichever ends last)."""
        try:
            current = self.refreshed()
            fresh = {ft: orjson.dumps({"computed_at": computed_at, "job_id": job_id}) for ft in feature_types
                     if ft not in current or current[ft]["computed_at"] <= computed_at}
            if fresh:
                self.redis.hset(REFRESHED_KEY, mapping=fresh)
        except redis.RedisError as exc:
            raise _store_error(exc) from exc

    def refreshed(self) -> dict[str, dict]:
        """{feature_type: {"computed_at": epoch seconds, "job_id"}} of the last run that refreshed
        each feature (features never refreshed by a run are absent).

        Raises:
            StoreUnavailable: Redis is unreachable.
        """
        try:
            raw = self.redis.hgetall(REFRESHED_KEY)
        except redis.RedisError as exc:
            raise _store_error(exc) from exc
        records = {}
        for feature_type, record in raw.items():
            try:
                records[feature_type.decode()] = orjson.loads(record)
            except (orjson.JSONDecodeError, UnicodeDecodeError):
                continue
        return records

    # --- extraction runs' id records (see id_records.py) -----------------------------------------
    def begin_run(self, feature_types: Sequence[str]) -> dict[str, int]:
        """Before a run writes: make sure every feature type has an id record."""
        try:
            return self.records.begin_run(feature_types)
        except redis.RedisError as exc:
            raise _store_error(exc) from exc

    def note_run_ids(self, feature_type: str, run: int, part: int, ids: array) -> None:
        """Before part `part` of run `run` writes the values of `ids` (sorted): record them."""
        try:
            self.records.note_part(feature_type, run, part, ids)
        except redis.RedisError as exc:
            raise _store_error(exc) from exc

    def remove_stale(self, feature_types: Sequence[str], run: int, parts: int, older_than: int,
                     positions: Mapping[str, bytes | None] | None = None) -> dict[str, int]:
        """After every part of run `run` wrote: delete the values of entities the run did not
        find (unless computed after `older_than`, or read at a later warehouse position than the
        feature's in `positions`); returns the count deleted per feature type."""
        self.ensure_scripts()
        try:
            return self.records.finish_run(feature_types, run, parts, older_than, positions=positions)
        except redis.RedisError as exc:
            raise _store_error(exc) from exc


def _pack_command(args: Sequence[bytes]) -> bytes:
    return b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(arg), arg) for arg in args)


def _pack_hsets(feature_type: str, values: Iterable[tuple[object, bytes]], computed_at: int,
                version: bytes | None = None) -> bytes:
    # Batch extraction's hot loop: the HSETs packed into one RESP buffer (a third of the cost of
    # building them through redis-py's pipeline).
    prefix = feature_type.encode() + b":"
    stamp = str(computed_at).encode()
    tail = b"$11\r\ncomputed_at\r\n$%d\r\n%s\r\n" % (len(stamp), stamp)
    if version is not None:
        tail += b"$7\r\nversion\r\n$%d\r\n%s\r\n" % (len(version), version)
    command = (b"*%d\r\n$4\r\nHSET\r\n" % (6 if version is None else 8)
               + b"$%d\r\n%s\r\n$5\r\nvalue\r\n$%d\r\n%s\r\n" + tail)
    parts = []
    append = parts.append
    for entity_id, value in values:
        name = prefix + str(entity_id).encode()
        append(command % (len(name), name, len(value), value))
    return b"".join(parts)
