"""`features list`, `demo-warehouse`, `parity`, `lineage`: the catalog and what is derived from it."""

from __future__ import annotations

import json
import sys
import time

import click
from flask import current_app
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from feature_store.cli import (
    UNAVAILABLE,
    _echo_json,
    _fail,
    _services,
    _table,
    features,
)
from feature_store.errors import FeatureStoreError
from feature_store.services import discovery
from feature_store.services import lineage as lineage_service
from feature_store.services import parity as parity_check


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
