"""The catalog page at `/`: every feature with what the services know of it, rendered on the
server from this package's own template, stylesheet and inline SVG (no script, nothing loaded from
elsewhere). The view is thin: it reads the services the API reads and hands them to page.build."""

from __future__ import annotations

from flask import Blueprint, current_app, render_template

from feature_store.errors import FeatureStoreError
from feature_store.services import discovery, statistics
from feature_store.web import page

bp = Blueprint("catalog", __name__, template_folder="templates", static_folder="static",
               static_url_path="/catalog/static")


@bp.get("/")
def index():
    """The feature catalog page."""
    services = current_app.extensions["feature_store"]
    # Discovery's entries, as GET /discovery answers them (versions, lineage, freshness, drift).
    entries = discovery.catalog(services.registry, services.store, services.server.max_ages)
    return render_template("catalog/index.html", fmt=page, page=page.build(entries, **_read(services, entries)))


def _read(services, entries: list[dict]) -> dict:
    """What the services say beyond discovery: the run list and each feature's recent
    statistics. What cannot be read (Redis down) is left out, with why, so the rest of the
    catalog still shows."""
    found: dict = {}
    try:
        found["runs"] = [run.summary() for run in services.runs.runs(page.RUNS_READ)]
    except FeatureStoreError as exc:
        found["runs"], found["runs_error"] = None, str(exc)
    try:
        found["statistics"] = {entry["feature_type"]: statistics.statistics_history(
            services.store.redis, entry["feature_type"], page.FEATURE_RUNS_SHOWN) for entry in entries}
    except FeatureStoreError as exc:
        found["statistics_error"] = str(exc)
    return found
