"""A demo warehouse generator with the shape of real data.

    python -m feature_store.warehouse.demo --users 3000 [--url URL] [--seed 7] [--replace]

Shape: users without quotes; quotes never bound, bound later, or bound at creation; several
policies per user; payments succeeded, failed, pending and refunded, some timestamps with
fractions of a second. Any size: --users 1000000 makes about 6 million feature values.
"""

from __future__ import annotations

import argparse
import logging
import random
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import create_engine, inspect, text
from sqlalchemy.engine import Engine, make_url

SCHEMA_SQL = Path(__file__).with_name("schema.sql")
TABLES = ("users", "quotes", "policies", "payment_transactions")
PAYMENT_STATUSES = (("succeeded", 70), ("failed", 15), ("pending", 10), ("refunded", 5))
PAYMENT_TYPES = ("Credit", "Debit", "Prepaid")
POLICY_STATUSES = ("active", "cancelled", "expired")
START = datetime(2024, 1, 1)

log = logging.getLogger(__name__)


def create_schema(engine: Engine) -> None:
    """Create the warehouse tables from schema.sql (the spec's DDL, portable SQL)."""
    statements = [s.strip() for s in _strip_comments(SCHEMA_SQL.read_text()).split(";") if s.strip()]
    with engine.begin() as conn:
        for statement in statements:
            conn.exec_driver_sql(statement)


def drop_schema(engine: Engine) -> None:
    with engine.begin() as conn:
        for table in reversed(TABLES):
            conn.exec_driver_sql(f"DROP TABLE IF EXISTS {table}")


def _strip_comments(sql: str) -> str:
    return "\n".join(line.split("--", 1)[0] for line in sql.splitlines())


def _moment(rng: random.Random, after: datetime, max_seconds: int) -> datetime:
    moment = after + timedelta(seconds=rng.randint(1, max_seconds))
    if rng.random() < 0.3:  # some sources record fractions of a second
        moment += timedelta(microseconds=rng.randint(1, 999_999))
    return moment


def rows(users: int, seed: int) -> Iterator[tuple[str, tuple]]:
    """(table, row) for a warehouse of `users` users, parents before children."""
    rng = random.Random(seed)
    quote_id = policy_id = payment_id = 0
    weights = [w for _, w in PAYMENT_STATUSES]
    statuses = [s for s, _ in PAYMENT_STATUSES]
    for user_id in range(1, users + 1):
        user_created = _moment(rng, START, 365 * 86400)
        yield "users", (user_id, f"user{user_id}@example.com", user_created)
        # About one user in five never asks for a quote.
        for _ in range(rng.choice((0, 1, 1, 1, 2, 2, 3))):
            quote_id += 1
            quote_created = _moment(rng, user_created, 30 * 86400)
            roll = rng.random()
            if roll < 0.35:
                bound_at = None  # unbound
            elif roll < 0.40:
                bound_at = quote_created  # bound at creation
            else:
                bound_at = _moment(rng, quote_created, 14 * 86400)
            yield "quotes", (quote_id, user_id, rng.randint(5_000, 250_000), quote_created, bound_at)
            if bound_at is None:
                continue
            policy_id += 1
            yield "policies", (policy_id, user_id, quote_id, rng.choice(POLICY_STATUSES), bound_at)
            paid_at = bound_at
            for _ in range(rng.randint(0, 4)):
                payment_id += 1
                paid_at = _moment(rng, paid_at, 40 * 86400)
                status = rng.choices(statuses, weights)[0]
                yield "payment_transactions", (payment_id, policy_id, rng.randint(1_000, 50_000),
                                               rng.choice(PAYMENT_TYPES), status, paid_at)


def _sqlite_text(value):
    # SQLite keeps timestamps as text; both forms occur in real files.
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S.%f" if value.microsecond else "%Y-%m-%d %H:%M:%S")
    return value


def _insert_sql(table: str, width: int) -> str:
    return f"INSERT INTO {table} VALUES ({', '.join('?' * width)})"


def load(engine: Engine, users: int, seed: int = 7, batch: int = 50_000) -> dict[str, int]:
    """Insert a generated warehouse of `users` users (tables must exist and be empty)."""
    counts = dict.fromkeys(TABLES, 0)
    buffers: dict[str, list[tuple]] = {t: [] for t in TABLES}
    raw = engine.raw_connection()
    try:
        cursor = raw.cursor()
        dialect = engine.dialect.name

        def flush(table: str) -> None:
            buffered = buffers[table]
            if not buffered:
                return
            if dialect == "postgresql":
                with cursor.copy(f"COPY {table} FROM STDIN") as copy:
                    for row in buffered:
                        copy.write_row(row)
            elif dialect == "sqlite":
                cursor.executemany(_insert_sql(table, len(buffered[0])),
                                   [tuple(_sqlite_text(v) for v in row) for row in buffered])
            else:
                marker = "%s"
                cursor.executemany(f"INSERT INTO {table} VALUES ({', '.join([marker] * len(buffered[0]))})", buffered)
            counts[table] += len(buffered)
            buffered.clear()

        for table, row in rows(users, seed):
            buffers[table].append(row)
            if len(buffers[table]) >= batch:
                # Parents first, so foreign keys hold at every flush.
                for name in TABLES[: TABLES.index(table) + 1]:
                    flush(name)
        for table in TABLES:
            flush(table)
        raw.commit()
    finally:
        raw.close()
    return counts


def generate(url: str, users: int, seed: int = 7, replace: bool = False, if_missing: bool = False
             ) -> dict[str, int]:
    """Create (or with replace=True, recreate) the warehouse at `url` with generated data.

    With if_missing=True an existing warehouse is left as it is (and {} returned).
    """
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database:
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url)
    try:
        existing = set(inspect(engine).get_table_names())
        if existing & set(TABLES):
            if if_missing and not replace:
                return {}
            if not replace:
                raise SystemExit(f"{parsed.render_as_string(hide_password=True)} already has warehouse tables; "
                                 "pass --replace to recreate them")
            drop_schema(engine)
        create_schema(engine)
        counts = load(engine, users, seed)
        if engine.dialect.name == "postgresql":
            with engine.begin() as conn:
                # Old rows logged in full, so the streaming process sees what an update moved
                # (README, "Real-time updates"); it costs WAL only under wal_level = logical.
                for table in TABLES:
                    conn.execute(text(f"ALTER TABLE {table} REPLICA IDENTITY FULL"))
                conn.execute(text("ANALYZE"))
        return counts
    finally:
        engine.dispose()


def main(argv: list[str] | None = None) -> None:
    from config import DEMO_WAREHOUSE_URL

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default=DEMO_WAREHOUSE_URL, help="SQLAlchemy URL (default: the demo SQLite file)")
    parser.add_argument("--users", type=int, default=3000, help="number of users (default 3000)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--replace", action="store_true", help="drop and recreate existing tables")
    parser.add_argument("--if-missing", action="store_true", help="leave an existing warehouse as it is")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    counts = generate(args.url, args.users, args.seed, args.replace, args.if_missing)
    if not counts:
        print(f"warehouse {make_url(args.url).render_as_string(hide_password=True)} exists; left as it is")
        return
    print(f"warehouse {make_url(args.url).render_as_string(hide_password=True)}: "
          + ", ".join(f"{n} {t}" for t, n in counts.items()) + f" in {time.perf_counter() - started:.1f}s")


if __name__ == "__main__":
    main()
