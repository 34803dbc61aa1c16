"""Which entity ids may have a stored value, per feature type: how an extraction run finds the
values of gone entities without scanning the whole keyspace.

Keys, per feature type F (every command names one key, so this runs on Redis Cluster too):

    feature-store:ids:F                     the record: ids whose value the store may hold
    feature-store:ids:F:run:{stamp}:{part}  the ids one part of a run is writing (written first)
    feature-store:ids:F:pending             set of the names of such per-part id lists
    feature-store:ids:F:on-demand           set of ids whose values were computed on demand

Invariant: the id of every stored value of F is in the record, in a pending list or in the
on-demand set. Each list is written before the values it names, and every step of a run's
reconciliation writes the new record before it drops what the record now covers, so a failure at
any point leaves the invariant true (the record may then name ids without a value: it is a
superset, and a later run checks them).

Id lists are stored as sorted 64-bit ids, delta-encoded and zlib-compressed: a million
consecutive ids take a few kilobytes.
"""

from __future__ import annotations

import bisect
import logging
import operator
import struct
import sys
import zlib
from array import array
from collections.abc import Iterable, Sequence
from itertools import accumulate, chain

import redis
from redis.cluster import RedisCluster

from feature_store.registry import Entity

log = logging.getLogger(__name__)

_FORMAT = b"ids1"
_FIRST = struct.Struct("<q")


def record_key(feature_type: str) -> str:
    return f"feature-store:ids:{feature_type}"


def pending_key(feature_type: str) -> str:
    return f"feature-store:ids:{feature_type}:pending"


def on_demand_key(feature_type: str) -> str:
    return f"feature-store:ids:{feature_type}:on-demand"


def part_key(feature_type: str, run: int, part: int) -> str:
    return f"feature-store:ids:{feature_type}:run:{run}:{part}"


def encode_ids(ids: array) -> bytes:
    """A sorted array('q') of ids as stored (see decode_ids)."""
    if not ids:
        return _FORMAT
    deltas = array("Q", map(operator.sub, ids[1:], ids))
    if sys.byteorder == "big":
        deltas.byteswap()
    return _FORMAT + zlib.compress(_FIRST.pack(ids[0]) + deltas.tobytes(), 6)


def decode_ids(blob: bytes) -> array:
    """The sorted array('q') of ids that encode_ids stored in `blob`.

    Raises:
        ValueError: `blob` is not an id list.
    """
    if not blob.startswith(_FORMAT):
        raise ValueError("not an id list")
    if len(blob) == len(_FORMAT):
        return array("q")
    try:
        data = zlib.decompress(blob[len(_FORMAT):])
    except zlib.error as exc:
        raise ValueError("not an id list") from exc
    if len(data) < _FIRST.size or (len(data) - _FIRST.size) % 8:
        raise ValueError("not an id list")
    deltas = array("Q")
    deltas.frombytes(data[_FIRST.size:])
    if sys.byteorder == "big":
        deltas.byteswap()
    try:
        return array("q", accumulate(deltas, initial=_FIRST.unpack_from(data)[0]))
    except OverflowError as exc:
        raise ValueError("not an id list") from exc


def _decoded(blob: bytes | None) -> array | None:
    """The ids of a stored list, or None when it is missing or unreadable."""
    if blob is None:
        return None
    try:
        return decode_ids(blob)
    except ValueError:
        return None


def _minus(ids: Iterable[int], sorted_ids: array, chunk: int = 65_536) -> list[int]:
    """The ids not in `sorted_ids`: a chunk at a time, each against a set of just the slice of
    `sorted_ids` its values span (fast in C, and memory bounded by the chunk)."""
    ids = ids if isinstance(ids, array) else array("q", sorted(ids))
    result: list[int] = []
    for start in range(0, len(ids), chunk):
        part = ids[start:start + chunk]
        present = set(sorted_ids[bisect.bisect_left(sorted_ids, min(part)):
                                 bisect.bisect_right(sorted_ids, max(part))])
        result.extend(entity_id for entity_id in part if entity_id not in present)
    return result


def _union(sorted_ids: array, extra: Sequence[int]) -> array:
    """`sorted_ids` and `extra` (none of them in `sorted_ids`), sorted: two sorted runs, which
    the sort merges in one pass."""
    return array("q", sorted(chain(sorted_ids, sorted(extra)))) if extra else sorted_ids


def parse_stored_id(text: bytes) -> int | None:
    """The id of a key's `{entity_id}` part (as bytes), or None when it names no row."""
    return Entity.parse_id(text.decode("utf-8", "replace"))


class IdRecords:
    """Keeps the per-feature id records and removes the values of gone entities with them."""

    def __init__(self, client: redis.Redis, delete_if_older) -> None:
        self.redis = client
        # delete_if_older(keys=[key], args=[stamp], client=pipe): 1 deleted, 0 absent, -1 newer.
        self._delete_if_older = delete_if_older

    # --- writers --------------------------------------------------------------------------------
    def begin_run(self, feature_types: Sequence[str], scan_count: int = 10_000) -> dict[str, int]:
        """Before a run writes anything: give every feature type a record. A feature type without
        one (a store written before records existed, or one whose record was lost) gets it from a
        SCAN of the keyspace, once. Returns how many ids each scanned feature type's record got."""
        with self.redis.pipeline(transaction=False) as pipe:
            for feature_type in feature_types:
                pipe.exists(record_key(feature_type))
            missing = [ft for ft, present in zip(feature_types, pipe.execute(), strict=True) if not present]
        if not missing:
            return {}
        scanned = self.scan_ids(missing, scan_count)
        for feature_type, ids in scanned.items():
            self.redis.set(record_key(feature_type), encode_ids(ids), nx=True)
        return {feature_type: len(ids) for feature_type, ids in scanned.items()}

    def note_part(self, feature_type: str, run: int, part: int, ids: array) -> None:
        """Before a run's part writes the values of `ids` (sorted): keep their list. A part run
        again under the same stamp (its worker died, the run's job was retried) adds to its list:
        the first attempt may have written ids the second no longer sees."""
        name = part_key(feature_type, run, part)
        earlier = _decoded(self.redis.get(name))
        if earlier is not None and earlier != ids:
            ids = array("q", sorted({*ids, *earlier}))
        with self.redis.pipeline(transaction=False) as pipe:
            pipe.set(name, encode_ids(ids))
            pipe.sadd(pending_key(feature_type), name)
            pipe.execute()

    # --- a run's end ----------------------------------------------------------------------------
    def finish_run(self, feature_types: Sequence[str], run: int, parts: int, older_than: int,
                   scan_count: int = 10_000, positions=None) -> dict[str, int]:
        """After every part of run `run` wrote its values: delete the values of the ids that the
        record, other runs' lists or the on-demand set name but this run did not write, unless
        they were computed after `older_than` (the run's stamp). Then the record holds this run's
        ids (and any kept). Returns the count deleted per feature type. `positions`: the warehouse
        position each feature's query read at (a value read later stays; ordering.py)."""
        return {feature_type: self._finish(feature_type, run, parts, older_than, scan_count,
                                           (positions or {}).get(feature_type) or b"")
                for feature_type in feature_types}

    def _finish(self, feature_type: str, run: int, parts: int, older_than: int, scan_count: int,
                position: bytes = b"") -> int:
        record_name = record_key(feature_type)
        own_prefix = part_key(feature_type, run, 0)[:-1].encode()
        names = sorted(self.redis.smembers(pending_key(feature_type)))
        with self.redis.pipeline(transaction=False) as pipe:
            pipe.get(record_name)
            for name in names:
                pipe.get(name)
            record_blob, *blobs = pipe.execute()
        own: dict[int, array] = {}
        own_blobs: dict[int, bytes] = {}
        others: list[array | None] = []
        for name, blob in zip(names, blobs, strict=True):
            if name.startswith(own_prefix) and name[len(own_prefix):].isdigit():
                if (ids := _decoded(blob)) is not None:
                    own[int(name[len(own_prefix):])] = ids
                    own_blobs[int(name[len(own_prefix):])] = blob
            else:
                others.append(_decoded(blob))
        if sorted(own) != list(range(parts)):
            # Without every list of its own, the run cannot tell which values it wrote: leave
            # everything (the record and the lists stay, so a later run checks them).
            log.warning("%s: run %s lacks id lists of its parts %s; nothing removed", feature_type, run,
                        sorted(set(range(parts)) - set(own)))
            return 0
        on_demand_members = list(self.redis.sscan_iter(on_demand_key(feature_type), count=scan_count))
        on_demand = [i for i in map(parse_stored_id, on_demand_members) if i is not None]

        run_ids = own[0] if parts == 1 else _concatenated([own[p] for p in range(parts)])
        run_blob = own_blobs[0] if parts == 1 else encode_ids(run_ids)
        if record_blob == run_blob:
            old = None  # the same ids as the last run: the common case
        else:
            old = _decoded(record_blob)
        if (old is None and record_blob != run_blob) or None in others:
            # A record or a list was lost or unreadable (evicted, deleted by hand): fall back to
            # the keyspace, which holds every value those could have named.
            log.warning("%s: an id record is missing; scanning the keyspace", feature_type)
            old = self.scan_ids([feature_type], scan_count)[feature_type]
            others = []
        candidates: set[int] = set()
        if old is not None and old != run_ids and not (len(old) <= len(run_ids) and run_ids[:len(old)] == old):
            candidates.update(_minus(old, run_ids))
        for ids in others:
            candidates.update(_minus(ids, run_ids))
        candidates.update(_minus(on_demand, run_ids))
        stale = sorted(candidates)

        # 1. The record covers this run's ids and every candidate, before anything is dropped.
        if stale or record_blob != run_blob:
            self.redis.set(record_name, encode_ids(_union(run_ids, stale)) if stale else run_blob)
        # 2. Drop the lists and on-demand ids the record now covers.
        with self.redis.pipeline(transaction=False) as pipe:
            for start in range(0, len(on_demand_members), 1000):
                pipe.srem(on_demand_key(feature_type), *on_demand_members[start:start + 1000])
            if names:
                pipe.srem(pending_key(feature_type), *names)
                for name in names:
                    pipe.delete(name)
            pipe.execute()
        # 3. Delete the stale values; the record keeps only the ids whose value stays.
        deleted = 0
        kept: list[int] = []
        for start in range(0, len(stale), 1000):
            batch = stale[start:start + 1000]
            for entity_id, outcome in zip(batch, self._delete_older(feature_type, batch, older_than, position),
                                          strict=True):
                deleted += outcome == 1
                if outcome == -1:
                    kept.append(entity_id)
        if stale:
            self.redis.set(record_name, encode_ids(_union(run_ids, kept)) if kept else run_blob)
        return deleted

    def _delete_older(self, feature_type: str, ids: list[int], older_than: int, position: bytes = b"") -> list[int]:
        """The delete-if-older script on each value of `ids`, pipelined: its outcome per id. A
        cluster's pipelines refuse scripts, so there each node gets a pipeline of its own keys
        (the script was loaded on every node: OnlineStore.ensure_scripts)."""
        keys = [f"{feature_type}:{entity_id}" for entity_id in ids]
        run_position = position  # (the loops below use `position` for places in `keys`)
        if not isinstance(self.redis, RedisCluster):
            with self.redis.pipeline(transaction=False) as pipe:
                for key in keys:
                    self._delete_if_older(keys=[key], args=[older_than, run_position], client=pipe)
                return pipe.execute()
        by_node: dict[str, tuple[object, list[int]]] = {}
        for position, key in enumerate(keys):
            node = self.redis.get_node_from_key(key)
            by_node.setdefault(node.name, (node, []))[1].append(position)
        outcomes = [0] * len(keys)
        sha = self._delete_if_older.sha
        for node, positions in by_node.values():
            with self.redis.get_redis_connection(node).pipeline(transaction=False) as pipe:
                for position in positions:
                    pipe.evalsha(sha, 1, keys[position], older_than, run_position)
                for position, outcome in zip(positions, pipe.execute(), strict=True):
                    outcomes[position] = outcome
        return outcomes

    # --- the keyspace fallback ------------------------------------------------------------------
    def scan_ids(self, feature_types: Sequence[str], scan_count: int = 10_000) -> dict[str, array]:
        """The sorted ids of every `{feature_type}:{id}` key of these feature types, from one
        SCAN of the keyspace (keys of other shapes are left out)."""
        found: dict[bytes, list[int]] = {feature_type.encode(): [] for feature_type in feature_types}
        for raw_key in self.redis.scan_iter(count=scan_count):
            feature_type, _, id_text = raw_key.partition(b":")
            ids = found.get(feature_type)
            if ids is not None and (entity_id := parse_stored_id(id_text)) is not None:
                ids.append(entity_id)
        return {feature_type.decode(): array("q", sorted(ids)) for feature_type, ids in found.items()}


def _concatenated(lists: list[array]) -> array:
    """The parts' id lists (disjoint ranges, in order) as one sorted list."""
    joined = array("q")
    for ids in lists:
        joined.extend(ids)
    if not all(map(operator.lt, joined, joined[1:])):
        joined = array("q", sorted(set(joined)))
    return joined
