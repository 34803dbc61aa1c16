"""Command-line tools on the same services as the API (no HTTP): `flask --app wsgi features ...`.

    flask --app wsgi features list [--json]
    flask --app wsgi features extract [--feature-type T ...] [--no-wait] [--timeout S] [--json]
    flask --app wsgi features runs [--limit 20] [--json]
    flask --app wsgi features run JOB_ID [--json]
    flask --app wsgi features demo-warehouse --users N [--url URL] [--seed 7] [--replace] [--if-missing]
    flask --app wsgi features parity [--sample 100] [--feature-type T ...] [--json]
    flask --app wsgi features lineage [--table T [--column C]] [--json]
    flask --app wsgi features stream-slot status|drop [--slot NAME]
    flask --app wsgi features versions [--record | --show FEATURE_TYPE] [--json]

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

import click
from flask import current_app
from flask.cli import AppGroup

from feature_store.errors import FeatureStoreError

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


def init_app(app) -> None:
    app.cli.add_command(features)


# The commands, registered on `features` by importing their modules.
from feature_store.cli import catalog, runs, stream, versions  # noqa: E402,F401
from feature_store.cli.runs import _describe_progress  # noqa: E402,F401 - tests
