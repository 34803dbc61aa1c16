"""Command-line tools on the same services as the API (no HTTP): `flask --app wsgi features ...`.

    flask --app wsgi features list [--json]
    flask --app wsgi features extract [--feature-type T ...] [--no-wait] [--timeout S] [--json]
    flask --app wsgi features runs [--limit 20] [--json]
    flask --app wsgi features run JOB_ID [--json]
    flask --app wsgi features demo-warehouse --users N [--url URL] [--seed 7] [--replace] [--if-missing]
    flask --app wsgi features parity [--sample 100] [--feature-type T ...] [--json]
    flask --app wsgi features lineage [--table T [--column C]] [--json]
    flask --app wsgi features stream-slot status|drop [--slot NAME]

The commands use the app's configuration (REDIS_URL, WAREHOUSE_URL, EXTRACT_QUEUE, ...). With a
REDIS_URL they act on that deployment: `extract` starts or joins a run that the RQ workers do,
`runs` and `run` read its history. Without one (embedded mode) the online store lives in the
command's own process: `extract` runs inline and its values go when the command ends.

Exit codes:
    0  success (extract: the run finished; run: it finished; parity: every sampled value agrees)
    1  the run failed (extract, run: some or every feature failed); parity: some values disagree
    2  a usage or configuration error (an unknown feature type, a bad option), or the online
       store (Redis) or the warehouse is unreachable
    3  extract: no worker listens on the extraction queue (the run stays queued, its job id is
       printed, and it starts when a worker does)
    4  run: no extraction run has that job id (unknown, or expired); stream-slot: no such slot
    5  the run is not over yet (extract: still queued or running when --timeout ran out; run:
       queued or started); its job id is printed
  130  extract: interrupted (Ctrl-C) while waiting; the run goes on
"""

from __future__ import annotations

import functools
import json
import sys
import time

import click
import redis
from flask import current_app
from flask.cli import AppGroup
from rq.exceptions import NoSuchJobError
from rq.job import Job
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from feature_store.errors import FeatureStoreError
from feature_store.services import discovery
from feature_store.services import lineage as lineage_service
from feature_store.services import parity as parity_check
from feature_store.services.jobs import RUNS_KEPT, RunStatus

OK, FAILED, UNAVAILABLE, NO_WORKER, NOT_FOUND, NOT_OVER, INTERRUPTED = 0, 1, 2, 3, 4, 5, 130

features = AppGroup("features", help="Feature store commands (exit codes: see `flask features --help`).",
                    epilog="Exit codes: 0 success; 1 the run failed (parity: disagreements); 2 usage or "
                           "configuration error, or Redis or the warehouse unreachable; 3 no worker listens "
                           "(extract); 4 no such run (run); 5 the run is not over yet (extract --timeout, run).")


def _services():
    return current_app.extensions["feature_store"]


def _fail(message: str, code: int) -> None:
    click.echo(message, err=True)
    sys.exit(code)


def _stores_reported(command):
    """Exit 2 with the service's own message when Redis or the warehouse is unreachable."""
    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except FeatureStoreError as exc:
            _fail(f"error: {exc}", UNAVAILABLE)
    return wrapper


def _check_feature_types(feature_types: tuple[str, ...]) -> None:
    known = _services().registry.feature_types()
    unknown = [ft for ft in feature_types if ft not in known]
    if unknown:
        _fail(f"unknown feature type(s): {', '.join(unknown)}; known feature types: {', '.join(known)}",
              UNAVAILABLE)


def _echo_json(body) -> None:
    click.echo(json.dumps(body, indent=2))


def _table(rows: list[tuple[str, ...]]) -> None:
    """Columns padded to their widest cell (the last one left as it is)."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        click.echo("  ".join([*(cell.ljust(width) for cell, width in zip(row, widths, strict=False)), row[-1]]))


@features.command("list")
@click.option("--json", "as_json", is_flag=True, help="print the catalog as JSON (GET /discovery's entries "
                                                       "and GET /feature-sets')")
def list_features(as_json: bool) -> None:
    """List the features (entity type, data type, feature sets) and the feature sets."""
    services = _services()
    registry = services.registry
    catalog = discovery.catalog(registry, services.store, services.server.max_ages)
    sets = discovery.feature_sets(registry)
    if as_json:
        _echo_json({"features": catalog, "feature_sets": sets})
        return
    rows = [("FEATURE TYPE", "ENTITY TYPE", "DATA TYPE", "FEATURE SETS")]
    rows += [(f["feature_type"], f["entity_type"], f["data_type"], ", ".join(f["feature_sets"]) or "-")
             for f in catalog]
    _table(rows)
    if sets:
        click.echo("\nfeature sets:")
        for s in sets:
            click.echo(f"  {s['name']} ({s['entity_type']}): {', '.join(s['feature_types'])}")


def _progress(job_id: str) -> dict | None:
    """The run's progress as its job records it ({"phase", "counts"}; see workers/jobs.py), if any."""
    try:
        return Job.fetch(job_id, connection=_services().runs.redis, serializer="json").meta.get("progress")
    except (NoSuchJobError, redis.RedisError):
        return None


def _describe_progress(status: RunStatus, progress: dict | None) -> str:
    if status.status != "started":
        return status.status
    phase = (progress or {}).get("phase")
    counts = (progress or {}).get("counts") or {}
    if phase == "write":
        return f"started: writing {sum(counts.values()):,} values of {len(counts)} feature(s) to the online store"
    if phase == "remove_stale":
        return f"started: removing the values of gone entities ({sum(counts.values()):,} values written)"
    return "started: querying the warehouse"


class _StatusLine:
    """One line on stderr: rewritten in place on a terminal, a new line per change elsewhere."""

    def __init__(self, job_id: str) -> None:
        self.job_id = job_id
        self.tty = getattr(sys.stderr, "isatty", lambda: False)()
        self.started = time.monotonic()
        self.last = None
        self.width = 0

    def show(self, text: str) -> None:
        if self.tty:
            line = f"{self.job_id}: {text} ({time.monotonic() - self.started:.0f}s)"
            click.echo("\r" + line.ljust(self.width), err=True, nl=False)
            self.width = len(line)
        elif text != self.last:
            click.echo(f"{self.job_id}: {text}", err=True)
        self.last = text

    def end(self) -> None:
        if self.tty and self.width:
            click.echo(err=True)


def _wait(job_id: str, timeout: float | None) -> RunStatus | None:
    runs = _services().runs
    deadline = None if timeout is None else time.monotonic() + timeout
    line = _StatusLine(job_id)
    try:
        while True:
            # wait() also promotes a run queued behind one that is over (its worker died, say).
            left = 0.5 if deadline is None else max(0.0, min(0.5, deadline - time.monotonic()))
            status = runs.wait(job_id, left)
            if status is None or status.done:
                return status
            line.show(_describe_progress(status, _progress(job_id)))
            if deadline is not None and time.monotonic() >= deadline:
                return status
    finally:
        line.end()


def _result_lines(status: RunStatus) -> list[str]:
    result = status.result or {}
    lines = []
    extracted = result.get("features_extracted") or {}
    if extracted:
        lines.append(f"{result.get('total_features', sum(extracted.values())):,} values refreshed:")
        lines += [f"  {feature_type}: {count:,}" for feature_type, count in extracted.items()]
    removed = {ft: n for ft, n in (result.get("removed") or {}).items() if n}
    if removed:
        lines.append("removed (entities gone from the warehouse): "
                     + ", ".join(f"{ft} {n:,}" for ft, n in removed.items()))
    failed = result.get("failed_features") or {}
    if failed:
        lines.append("failed (previous values kept):")
        lines += [f"  {feature_type}: {reason}" for feature_type, reason in failed.items()]
    return lines


def _outcome(status: RunStatus) -> int:
    if status.status == "finished":
        return OK
    return FAILED if status.status == "failed" else NOT_OVER


@features.command("extract")
@click.option("--feature-type", "feature_types", multiple=True, help="refresh only these (repeatable); "
                                                                     "default: every feature")
@click.option("--no-wait", is_flag=True, help="start or join the run, print its job id and return")
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), default=None,
              help="seconds to wait for the run (default: until it ends); exit 5 if it has not")
@click.option("--json", "as_json", is_flag=True, help="print the run's status as JSON (GET /extract/<job_id>'s)")
@_stores_reported
def extract(feature_types: tuple[str, ...], no_wait: bool, timeout: float | None, as_json: bool) -> None:
    """Start an extraction run (or join the one in progress), wait for it, print its result.

    While waiting, a status line on stderr follows the run. Without REDIS_URL the run is inline.
    """
    _check_feature_types(feature_types)
    services = _services()
    runs = services.runs
    services.store.ping()
    if services.config.embedded:  # the run is done here, against this warehouse
        services.warehouse.ping(batch=True)
    job_id, joined = runs.start_or_join(list(feature_types) or None)
    click.echo(f"{'joined the run in progress' if joined else 'started run'} {job_id}", err=True)
    workers = runs.listening_workers()
    if workers == 0:
        if as_json:
            status = runs.status(job_id)
            _echo_json((status.as_dict() if status else {"job_id": job_id}) | {"joined": joined, "workers": 0})
        else:
            click.echo(job_id)
        _fail(f"no worker listens on the extraction queue {runs.queue.name!r}: run {job_id} stays queued and "
              "starts when a worker does (start one: see the Procfile's worker line)", NO_WORKER)
    if no_wait:
        status = runs.status(job_id)
        if as_json:
            _echo_json((status.as_dict() if status else {"job_id": job_id}) | {"joined": joined})
        else:
            click.echo(job_id)
        return
    try:
        status = _wait(job_id, timeout)  # embedded mode: the run is over already (inline)
    except KeyboardInterrupt:
        _fail(f"stopped waiting; run {job_id} goes on (follow it: flask --app wsgi features run {job_id})",
              INTERRUPTED)
    if status is None:
        _fail(f"run {job_id} is gone (expired, or removed from Redis)", FAILED)
    if as_json:
        _echo_json(status.as_dict() | {"joined": joined})
    else:
        click.echo(f"run {job_id}: {status.status}")
        for line in _result_lines(status):
            click.echo(line)
    if status.status == "failed":
        _fail(f"extraction failed: {status.error}", FAILED)
    if not status.done:
        _fail(f"run {job_id} is not over after {timeout:g}s (still {status.status}); follow it: "
              f"flask --app wsgi features run {job_id}", NOT_OVER)


@features.command("runs")
@click.option("--limit", default=20, show_default=True, type=click.IntRange(1, RUNS_KEPT),
              help="how many runs to list")
@click.option("--json", "as_json", is_flag=True, help="print the runs as JSON (GET /extract's body)")
@_stores_reported
def list_runs(limit: int, as_json: bool) -> None:
    """List the extraction runs, newest first."""
    statuses = _services().runs.runs(limit)
    if as_json:
        _echo_json({"runs": [status.summary() for status in statuses]})
        return
    if not statuses:
        click.echo("no extraction runs", err=True)
        return
    rows = [("JOB ID", "STATUS", "TRIGGER", "ENQUEUED AT", "ENDED AT", "VALUES", "FEATURES")]
    every = set(_services().registry.feature_types())
    for status in statuses:
        summary = status.summary()
        values = f"{summary['total_features']:,}" if status.done else "-"
        if summary.get("failed_features"):
            values += f" ({len(summary['failed_features'])} failed)"
        features_ = "every feature" if set(status.feature_types) == every else ", ".join(status.feature_types)
        rows.append((status.job_id, status.status, status.trigger, status.enqueued_at or "-",
                     status.ended_at or "-", values, features_))
    _table(rows)


@features.command("run")
@click.argument("job_id")
@click.option("--json", "as_json", is_flag=True, help="print the run as JSON (GET /extract/<job_id>'s body)")
@_stores_reported
def show_run(job_id: str, as_json: bool) -> None:
    """Show one extraction run: its status, result or error (exit 0 finished, 1 failed, 5 not over)."""
    status = _services().runs.status(job_id)
    if status is None:
        _fail(f"no extraction job {job_id!r} (unknown, or expired)", NOT_FOUND)
    if as_json:
        _echo_json(status.as_dict())
    else:
        shown = status.status if status.done else _describe_progress(status, _progress(job_id))
        for name, value in (("job_id", status.job_id), ("status", shown), ("trigger", status.trigger),
                            ("feature_types", ", ".join(status.feature_types)),
                            ("enqueued_at", status.enqueued_at), ("started_at", status.started_at),
                            ("ended_at", status.ended_at)):
            click.echo(f"{name + ':':15}{value if value is not None else '-'}")
        if status.error:
            click.echo(f"{'error:':15}{status.error}")
        for line in _result_lines(status):
            click.echo(line)
    sys.exit(_outcome(status))


@features.command("demo-warehouse")
@click.option("--users", required=True, type=click.IntRange(min=1), help="number of users (3,000 makes about "
                                                                         "18,000 feature values)")
@click.option("--url", default=None, help="SQLAlchemy URL of the warehouse to create  [default: the app's "
                                          "WAREHOUSE_URL]")
@click.option("--seed", default=7, show_default=True, type=int, help="random seed (the same seed, the same data)")
@click.option("--replace", is_flag=True, help="drop and recreate the warehouse tables if they exist")
@click.option("--if-missing", is_flag=True, help="leave a warehouse that has the tables as it is (exit 0)")
def demo_warehouse(users: int, url: str | None, seed: int, replace: bool, if_missing: bool) -> None:
    """Create a demo warehouse with generated data (feature_store.warehouse.demo)."""
    from feature_store.warehouse import demo

    url = url or _services().config.WAREHOUSE_URL
    try:
        shown = make_url(url).render_as_string(hide_password=True)
    except Exception as exc:  # noqa: BLE001 - SQLAlchemy raises several kinds for a malformed URL
        _fail(f"not a SQLAlchemy URL: {url!r} ({exc})", UNAVAILABLE)
    started = time.perf_counter()
    try:
        counts = demo.generate(url, users, seed=seed, replace=replace, if_missing=if_missing)
    except SystemExit as exc:  # the generator refuses to overwrite tables without --replace
        _fail(f"error: {exc.code}", UNAVAILABLE)
    except (SQLAlchemyError, OSError) as exc:
        _fail(f"error: could not create the warehouse {shown}: {exc.__class__.__name__}: "
              f"{str(exc).splitlines()[0] if str(exc) else ''}", UNAVAILABLE)
    if not counts:
        click.echo(f"warehouse {shown} exists; left as it is")
        return
    click.echo(f"warehouse {shown}: " + ", ".join(f"{n:,} {table}" for table, n in counts.items())
               + f" in {time.perf_counter() - started:.1f}s")


@features.command("parity")
@click.option("--sample", default=100, show_default=True, type=click.IntRange(1, 10_000),
              help="stored values to check per feature")
@click.option("--feature-type", "feature_types", multiple=True, help="check only these (repeatable)")
@click.option("--window", default=60, show_default=True, type=click.IntRange(0, 86_400),
              help="seconds after computed_at within which a change cannot be told from the value's own read")
@click.option("--json", "as_json", is_flag=True, help="print the report as JSON")
def parity(sample: int, feature_types: tuple[str, ...], window: int, as_json: bool) -> None:
    """Recompute sampled stored values as of their computed_at; report agreement per feature."""
    services = current_app.extensions["feature_store"]
    unknown = set(feature_types) - set(services.registry.feature_types())
    if unknown:
        click.echo(f"unknown feature type(s): {', '.join(sorted(unknown))}", err=True)
        sys.exit(2)
    try:
        report = parity_check.check(services.registry, services.store, services.warehouse, sample=sample,
                                    feature_types=list(feature_types) or None, window=window)
    except FeatureStoreError as exc:
        click.echo(f"parity check failed: {exc}", err=True)
        sys.exit(2)
    if as_json:
        click.echo(json.dumps(report, indent=2))
    else:
        for feature_type, result in report["features"].items():
            agreement = "n/a (no stored values)" if result["agreement"] is None else f"{result['agreement']:.2%}"
            click.echo(f"{feature_type}: {result['agree']}/{result['checked']} agree ({agreement})")
            for item in result["disagreements"]:
                click.echo(f"  {item['entity_id']} at {item['computed_at']}: stored {item['stored']}, "
                           f"as of then {item['as_of_value']}")
    sys.exit(1 if any(r["disagree"] for r in report["features"].values()) else 0)


def _path_text(path: list[dict] | None) -> str:
    if path is None:
        return "no join key links it to the entity"
    return " -> ".join(f"{s['table']}.{s['column']} = {s['to_table']}.{s['to_column']}" for s in path) or "the entity"


def _columns_text(columns: dict) -> str:
    return ", ".join(f"{column} [{', '.join(roles)}]" for column, roles in columns.items())


@features.command("lineage")
@click.option("--table", help="list the features that read this warehouse table")
@click.option("--column", help="with --table: only the features that read this column of it")
@click.option("--json", "as_json", is_flag=True, help="print discovery's lineage fields (or GET /lineage's answer)")
def lineage(table: str | None, column: str | None, as_json: bool) -> None:
    """Show what each feature reads (derived from its statement), or which features read a table."""
    registry = _services().registry
    if table is None:
        if column is not None:
            _fail("--column needs --table", UNAVAILABLE)
        entries = lineage_service.every_lineage(registry)
        if as_json:
            return _echo_json(entries)
        for feature_type, read in entries.items():
            click.echo(f"{feature_type} (entity {read['entity']['table']}.{read['entity']['column']})")
            for name in read["tables"]:
                click.echo(f"  {name}: {_columns_text(read['columns'][name])}; via {_path_text(read['paths'][name])}")
        return None
    try:
        answer = lineage_service.readers(registry, table, column)
    except lineage_service.UnknownSource as exc:
        _fail(f"error: {exc}", UNAVAILABLE)
    if as_json:
        return _echo_json(answer)
    if not answer["features"]:
        click.echo(f"no feature reads {table}{'.' + column if column else ''}")
    for item in answer["features"]:
        click.echo(f"{item['feature_type']} ({item['entity_type']}): {_columns_text(item['columns'])}; "
                   f"via {_path_text(item['path'])}")
    return None


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


def init_app(app) -> None:
    app.cli.add_command(features)


from feature_store import cli_versions as _cli_versions  # noqa: E402,F401 - registers `features versions`
