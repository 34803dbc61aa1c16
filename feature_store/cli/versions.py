"""`flask --app wsgi features versions`: each feature's version history, and recording a new
version after a feature's logic changed (see feature_store/versions.py and the README, "Changing
a feature's logic").

    flask --app wsgi features versions            the history; exit 1 while a definition is unrecorded
    flask --app wsgi features versions --record   append a version (today, UTC) for each changed one
    flask --app wsgi features versions --show T   what feature T's fingerprint is computed from
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

import click
from flask import current_app

from feature_store import versions
from feature_store.cli import FAILED, OK, UNAVAILABLE, features


@features.command("versions")
@click.option("--record", is_flag=True, help="append a version, beginning today (UTC), for every feature whose "
                                             "definition is not its latest recorded version")
@click.option("--show", "show", metavar="FEATURE_TYPE", help="print what the feature's fingerprint is computed from")
@click.option("--json", "as_json", is_flag=True, help="print the histories as JSON")
def versions_command(record: bool, show: str | None, as_json: bool) -> None:
    """List each feature's versions (exit 1 while a changed definition is not recorded)."""
    registry = current_app.extensions["feature_store"].registry
    if show is not None:
        feature = registry.get(show)
        if feature is None:
            raise click.exceptions.Exit(_say(f"unknown feature_type {show!r}; known: "
                                             f"{', '.join(registry.feature_types())}", UNAVAILABLE))
        click.echo(f"fingerprint {versions.fingerprint(feature)} of:\n{versions.definition(feature)}")
        return
    if record:
        changed = versions.record(registry, datetime.now(UTC).date())
        click.echo(f"recorded a new version of {', '.join(changed)} in {versions.HISTORY_PATH}; commit it"
                   if changed else "every feature's definition is already its latest recorded version")
        return
    recorded = versions.load_history()
    histories = {feature.feature_type: versions.history(feature, recorded) for feature in registry}
    if as_json:
        click.echo(json.dumps(histories, indent=2))
    else:
        for feature_type, entries in histories.items():
            line = ", ".join(f"v{e['version']} {e['fingerprint']} since {e['began'] or 'UNRECORDED'}" for e in entries)
            click.echo(f"{feature_type}: {line}")
    pending = versions.unrecorded(registry, recorded)
    if pending:
        raise click.exceptions.Exit(_say(
            f"changed without a recorded version: {', '.join(pending)}; run `flask --app wsgi features versions "
            f"--record` and commit {versions.HISTORY_PATH.name}", FAILED))
    raise click.exceptions.Exit(OK)


def _say(message: str, code: int) -> int:
    click.echo(message, err=True)
    return code
