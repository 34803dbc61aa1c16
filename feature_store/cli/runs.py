"""`features extract`, `runs`, `run`: extraction runs from the command line, waiting with a progress bar."""

from __future__ import annotations

import sys
import time

import click
import redis
from rq.exceptions import NoSuchJobError
from rq.job import Job

from feature_store.cli import (
    FAILED,
    INTERRUPTED,
    NO_WORKER,
    NOT_FOUND,
    NOT_OVER,
    OK,
    _check_feature_types,
    _echo_json,
    _fail,
    _services,
    _stores_reported,
    _table,
    features,
)
from feature_store.services.jobs import RUNS_KEPT, RunStatus


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
