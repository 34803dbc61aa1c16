"""Command-line tools on the same services as the API: `flask --app wsgi features ...`.

    flask --app wsgi features parity [--sample 100] [--feature-type T ...] [--json]

Exit codes: 0 every sampled value agrees, 1 some disagree, 2 the check could not run.
"""

from __future__ import annotations

import json
import sys

import click
from flask import current_app
from flask.cli import AppGroup

from feature_store.errors import FeatureStoreError
from feature_store.services import parity as parity_check

features = AppGroup("features", help="Feature store commands.")


@features.command("parity")
@click.option("--sample", default=100, show_default=True, type=click.IntRange(1, 10_000),
              help="stored values to check per feature")
@click.option("--feature-type", "feature_types", multiple=True, help="check only these (repeatable)")
@click.option("--json", "as_json", is_flag=True, help="print the report as JSON")
def parity(sample: int, feature_types: tuple[str, ...], as_json: bool) -> None:
    """Recompute sampled stored values as of their computed_at; report agreement per feature."""
    services = current_app.extensions["feature_store"]
    unknown = set(feature_types) - set(services.registry.feature_types())
    if unknown:
        click.echo(f"unknown feature type(s): {', '.join(sorted(unknown))}", err=True)
        sys.exit(2)
    try:
        report = parity_check.check(services.registry, services.store, services.warehouse, sample=sample,
                                    feature_types=list(feature_types) or None)
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


def init_app(app) -> None:
    app.cli.add_command(features)
