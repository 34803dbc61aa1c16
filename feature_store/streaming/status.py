"""What the streaming process tells the others, in the online store's Redis (one hash per slot,
`feature-store:stream:{slot}`), so /ready and /metrics report it from any web process.

Fields: `state` (streaming, idle: it cannot stream, waiting: the warehouse or Redis is out),
`reason`, `confirmed_lsn`, `caught_up_at` (epoch seconds: every change committed before it is in
Redis, so lag in seconds is now minus it), `updated_at` (the last time the process wrote here) and
`pid`.
"""

from __future__ import annotations

import os
import time

import redis

from feature_store.errors import FeatureStoreError

STREAMING, IDLE, WAITING = "streaming", "idle", "waiting"


def status_key(slot: str) -> str:
    return f"feature-store:stream:{slot}"


def publish(client: redis.Redis, slot: str, state: str, **fields) -> None:
    """Record the process's state (best effort: Redis may be the thing that is out)."""
    mapping = {"state": state, "updated_at": f"{time.time():.3f}", "pid": os.getpid(),
               **{name: ("" if value is None else value) for name, value in fields.items()}}
    try:
        client.hset(status_key(slot), mapping=mapping)
    except redis.RedisError:
        pass


def read(client: redis.Redis, slot: str) -> dict | None:
    """The streaming process's last report, with `lag_seconds` (None unless streaming), or None
    when no streaming process has reported for this slot.

    Raises:
        redis.RedisError: Redis is unreachable.
    """
    raw = client.hgetall(status_key(slot))
    if not raw:
        return None
    fields = {k.decode(): v.decode() for k, v in raw.items()}
    now = time.time()
    caught_up = float(fields["caught_up_at"]) if fields.get("caught_up_at") else None
    updated = float(fields["updated_at"]) if fields.get("updated_at") else None
    return {
        "state": fields.get("state"),
        "reason": fields.get("reason") or None,
        "confirmed_lsn": fields.get("confirmed_lsn") or None,
        "lag_seconds": round(max(0.0, now - caught_up), 3) if caught_up is not None else None,
        "reported_seconds_ago": round(max(0.0, now - updated), 3) if updated is not None else None,
    }


def report(client: redis.Redis, warehouse, slot: str) -> dict | None:
    """The streaming process's report joined with the slot's own state on the warehouse, as /ready
    and /metrics show it; None when neither exists (streaming is not set up).

    `lag_bytes` is the WAL written since the slot's confirmed position (the warehouse's figure,
    whatever the process is doing); `lag_seconds` is how far behind the committed changes the
    values are (the process's figure: it grows while the process is down or paused). With no
    `warehouse` (it did not answer a moment ago), the slot's own state is not asked for.
    """
    from feature_store.streaming.slot import slot_state

    try:
        process = read(client, slot)
    except redis.RedisError:
        process = None
    state, exists = None, None  # exists: None when unknown (not PostgreSQL, or no answer)
    if warehouse is not None and warehouse.dialect == "postgresql":
        try:
            state = warehouse.read(lambda conn: slot_state(conn, slot))
            exists = state is not None
        except FeatureStoreError:
            pass
    if process is None and not exists:
        return None
    process = process or {}
    return {
        "slot": slot,
        "state": process.get("state"),
        "reason": process.get("reason"),
        "slot_exists": exists,
        "confirmed_lsn": state.confirmed_lsn if state else process.get("confirmed_lsn"),
        "lag_bytes": state.lag_bytes if state else None,
        "lag_seconds": process.get("lag_seconds") if process.get("state") != IDLE else None,
        "wal_status": state.wal_status if state else None,
    }
