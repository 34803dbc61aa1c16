"""Ordering: a stored value is never replaced by one computed from an older read of the warehouse.

Three writers race on one key: an extraction run (whose query read the warehouse maybe minutes
before it writes), a value computed on demand, and the streaming process (which writes right
after a change commits). Each value carries, in its hash's `position` field, where in the
warehouse's history the read that computed it stands: `{system identifier}:{WAL position}`, the
WAL position (16 hex digits, so positions compare as text) flushed just before the statement's
snapshot was taken (warehouse.position()). Every commit before it is visible to that statement, so
a value of a later position reflects every change a value of an earlier one does; and the
streaming process's values carry the position of their own recomputation, read after the change
was decoded, so a run that read before a change writes a smaller position than the change's
streamed value has.

A write lands only when its position is not older than the stored one (in a script, so no writer
comes between the check and the write). A different system identifier (another warehouse cluster
behind WAREHOUSE_URL) always lands: positions of two clusters do not compare. A write without a
position (SQLite, which has none) lands as writes always did.

A deletion (the streaming process's, for an entity gone from the warehouse) leaves a tombstone:
the hash keeps only its `position` (marked with a trailing `~`) for TOMBSTONE_SECONDS, so a run
that read before the delete cannot bring the value back; readers see no value (a miss). A later
write replaces it (and its expiry).

The limit: a commit's WAL record is flushed a moment before the commit becomes visible to new
snapshots (microseconds; longer with synchronous replication, which waits for the standby in
between). A read whose position is taken in that moment claims a commit it may not see; the
streaming process applies that commit again when it decodes it, with a later position, so such a
value is replaced by the right one within a batch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager

from feature_store.online_store.id_records import on_demand_key

# Keys per script call: one call per group keeps the writes at about 0.7x plain HSETs' speed
# (BENCHMARKS.md, "Real-time updates"); a script call per key would be under half.
GROUP = 500
TOMBSTONE_SECONDS = 86_400

# Positions of one cluster share its `{system identifier}:` prefix (ARGV: `prefix`) and then compare
# as text; a stored value of another prefix (another cluster) is always replaced; a write without a
# position ('') always lands. A tombstone's position ends with `~`: it outranks a write of its own
# position (the read that found the row gone), and a value written over it loses its expiry.

# KEYS: the values' keys. ARGV: computed_at, version ('' for none), position, prefix, then one value
# per key. Returns how many were written.
WRITE_IF_NEWER = """
local new, prefix = ARGV[3], ARGV[4]
local n = #prefix
local written = 0
for i, k in ipairs(KEYS) do
  local stored = redis.call('HGET', k, 'position')
  if not stored or new == '' or string.sub(stored, 1, n) ~= prefix or new >= stored then
    if ARGV[2] == '' then
      redis.call('HSET', k, 'value', ARGV[4 + i], 'computed_at', ARGV[1], 'position', new)
    else
      redis.call('HSET', k, 'value', ARGV[4 + i], 'computed_at', ARGV[1], 'version', ARGV[2], 'position', new)
    end
    if stored and string.byte(stored, -1) == 126 then redis.call('PERSIST', k) end
    written = written + 1
  end
end
return written
"""

# KEYS: the values' keys. ARGV: position, prefix, tombstone seconds. Returns how many were removed.
DELETE_IF_NEWER = """
local new, prefix = ARGV[1], ARGV[2]
local n = #prefix
local removed = 0
for _, k in ipairs(KEYS) do
  local stored = redis.call('HGET', k, 'position')
  if not stored or new == '' or string.sub(stored, 1, n) ~= prefix or new >= stored then
    redis.call('DEL', k)
    redis.call('HSET', k, 'position', new .. '~')
    redis.call('EXPIRE', k, tonumber(ARGV[3]))
    removed = removed + 1
  end
end
return removed
"""


def prefix_of(position: bytes) -> bytes:
    """A position's cluster prefix (`{system identifier}:`); empty for no position."""
    return position[:position.index(b":") + 1] if b":" in position else b""


def pack_command(args) -> bytes:
    return b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(arg), arg) for arg in args)


def write_args(feature_type: str, values: list[tuple[object, bytes]], computed_at: int, version: bytes | None,
               position: bytes) -> tuple[list[bytes], list[bytes]]:
    """(keys, args) of one WRITE_IF_NEWER call for `values`."""
    prefix = feature_type.encode() + b":"
    keys = [prefix + str(entity_id).encode() for entity_id, _ in values]
    return keys, [str(computed_at).encode(), version or b"", position, prefix_of(position),
                  *(value for _, value in values)]


def pack_writes(sha: bytes, feature_type: str, values: list[tuple[object, bytes]], computed_at: int,
                version: bytes | None, position: bytes, group: int = GROUP) -> tuple[bytes, int]:
    """The conditional writes of `values` packed into one RESP buffer: (payload, replies to read).
    On a Redis Cluster every key of one call must hash to one slot: the caller passes group=1."""
    parts = []
    for start in range(0, len(values), group):
        keys, args = write_args(feature_type, values[start:start + group], computed_at, version, position)
        parts.append(pack_command([b"EVALSHA", sha, b"%d" % len(keys), *keys, *args]))
    return b"".join(parts), len(parts)


def keys_of(feature_type: str, ids: Iterable[object]) -> list[str]:
    return [f"{feature_type}:{entity_id}" for entity_id in ids]



@contextmanager
def change_writer(store, computed_at: int, *, on_demand: bool = True) -> Iterator[tuple[Callable, dict]]:
    """OnlineStore.change_writer: `(write, counts)`; `write(feature_type, values, gone, position)`
    sends one feature's conditional writes and removals (apply_changes' commands, in its order)
    without waiting: Redis runs them while the caller computes the next feature. Every reply is
    read when the block ends; `counts` then holds the values written and removed.

    A fast path (a measured exception, held equal to apply_changes by a property test:
    tests/integration/test_change_writer.py): the commands are packed by hand and sent on one
    connection, as the extraction's batch writer sends its writes. Where packed commands cannot go
    (fakeredis, a cluster), the work is collected and applied by apply_changes at the end.

    Raises:
        redis.RedisError: Redis failed (the values already sent may be written; none is older).
    """
    counts = {"written": 0, "removed": 0}
    if not store._raw_protocol:
        work: list = []
        yield (lambda *item: work.append(item)), counts
        counts["written"], counts["removed"] = apply_changes(store, work, computed_at, on_demand=on_demand)
        return
    with store.redis.pipeline(transaction=False) as pipe:  # (a Redis restarted since knows no script)
        pipe.script_load(WRITE_IF_NEWER)
        pipe.script_load(DELETE_IF_NEWER)
        write_sha, delete_sha = (sha.encode() if isinstance(sha, str) else sha for sha in pipe.execute())
    tombstone = str(TOMBSTONE_SECONDS).encode()
    queued: list[str | None] = []  # what each reply counts toward
    pool = store.redis.connection_pool
    conn = pool.get_connection()

    def write(feature_type: str, values, gone, position: bytes | None) -> None:
        values, position = list(values), position or b""
        parts = []
        if values:
            payload, calls = pack_writes(write_sha, feature_type, values, computed_at,
                                         store.versions.get(feature_type), position)
            parts.append(payload)
            queued.extend(["written"] * calls)
            if on_demand:
                parts.append(pack_command([b"SADD", on_demand_key(feature_type).encode(),
                                           *(str(entity_id).encode() for entity_id, _ in values)]))
                queued.append(None)
        gone = [key.encode() for key in keys_of(feature_type, gone)]
        for start in range(0, len(gone), GROUP):
            keys = gone[start:start + GROUP]
            parts.append(pack_command([b"EVALSHA", delete_sha, b"%d" % len(keys), *keys, position,
                                       prefix_of(position), tombstone]))
            queued.append("removed")
        if parts:
            conn.send_packed_command([b"".join(parts)])

    try:
        yield write, counts
        for kind in queued:  # an error reply raises (ResponseError): the batch fails as a whole
            reply = conn.read_response()
            if kind is not None:
                counts[kind] += int(reply)
    except BaseException:
        conn.disconnect()  # replies may be left unread on it
        raise
    finally:
        pool.release(conn)


def apply_changes(store, work, computed_at: int, *, on_demand: bool = True) -> tuple[int, int]:
    """OnlineStore.apply_changes: the conditional writes and removals of `work` in one pipeline.

    Raises:
        redis.RedisError: Redis failed.
    """
    group = 1 if store.cluster else GROUP  # a cluster's script calls stay in one slot
    counts = {"written": 0, "removed": 0}
    queued: list[str | None] = []  # what each command in the pipeline counts toward
    with store.redis.pipeline(transaction=False) as pipe:
        def call(kind: str, script, keys: list, args: list) -> None:
            if store.cluster:  # cluster pipelines refuse scripts: one call per key
                counts[kind] += int(script(keys=keys, args=args))
            else:
                script(keys=keys, args=args, client=pipe)
                queued.append(kind)

        for feature_type, values, gone, position in work:
            values = list(values)
            version = store.versions.get(feature_type)
            for start in range(0, len(values), group):
                call("written", store._write_if_newer, *write_args(
                    feature_type, values[start:start + group], computed_at, version, position or b""))
            if values and on_demand:
                pipe.sadd(on_demand_key(feature_type), *(str(entity_id) for entity_id, _ in values))
                queued.append(None)
            gone = keys_of(feature_type, gone)
            for start in range(0, len(gone), group):
                call("removed", store._delete_if_newer, gone[start:start + group],
                     [position or b"", prefix_of(position or b""), TOMBSTONE_SECONDS])
        replies = pipe.execute() if queued else []
    for kind, reply in zip(queued, replies, strict=True):
        if kind is not None:
            counts[kind] += int(reply)
    return counts["written"], counts["removed"]
