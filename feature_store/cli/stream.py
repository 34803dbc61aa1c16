"""`features stream-slot status|drop`: the streaming process's replication slot on the warehouse."""

from __future__ import annotations

import click
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from feature_store.cli import (
    NOT_FOUND,
    UNAVAILABLE,
    _echo_json,
    _fail,
    _services,
    features,
)


@features.group("stream-slot")
def stream_slot() -> None:
    """The streaming process's replication slot on the warehouse (STREAM_SLOT)."""


def _slot(name: str | None):
    from feature_store.streaming.slot import Slot

    url = _services().config.WAREHOUSE_URL
    if make_url(url).get_backend_name() != "postgresql":
        _fail("the warehouse is not PostgreSQL: there is no replication slot", UNAVAILABLE)
    try:
        return Slot(url, name or _services().config.STREAM_SLOT)
    except ValueError as exc:
        _fail(f"error: {exc}", UNAVAILABLE)


@stream_slot.command("status")
@click.option("--slot", "name", help="the slot's name  [default: STREAM_SLOT]")
@click.option("--json", "as_json", is_flag=True, help="print it as JSON")
def stream_slot_status(name: str | None, as_json: bool) -> None:
    """Show the slot: its confirmed position and the WAL it keeps (exit 4 when there is none)."""
    slot = _slot(name)
    try:
        state = slot.state()
    except SQLAlchemyError as exc:
        _fail(f"error: the warehouse is unreachable: {exc.__class__.__name__}", UNAVAILABLE)
    finally:
        slot.dispose()
    if state is None:
        _fail(f"no replication slot {slot.name!r} on this warehouse", NOT_FOUND)
    if as_json:
        return _echo_json(state.as_dict())
    click.echo(f"slot {state.slot}: confirmed {state.confirmed_lsn}, {state.lag_bytes:,} bytes of WAL kept "
               f"behind {state.current_lsn} ({state.wal_status}{', in use' if state.active else ''})")
    return None


@stream_slot.command("drop")
@click.option("--slot", "name", help="the slot's name  [default: STREAM_SLOT]")
def stream_slot_drop(name: str | None) -> None:
    """Drop the slot, freeing the WAL it keeps (stop the streaming process first: a process that
    starts again creates a new slot, which streams only the changes committed after it)."""
    slot = _slot(name)
    try:
        dropped = slot.drop()
    except SQLAlchemyError as exc:
        reason = str(getattr(exc, "orig", exc)).strip().splitlines()
        _fail(f"error: could not drop slot {slot.name!r}: {reason[0] if reason else exc.__class__.__name__}",
              UNAVAILABLE)
    finally:
        slot.dispose()
    if not dropped:
        _fail(f"no replication slot {slot.name!r} on this warehouse", NOT_FOUND)
    click.echo(f"dropped replication slot {slot.name!r}")
