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
    entries = discovery.catalog(services.registry)
    runs, runs_error = None, None
    try:
        runs = [run.summary() for run in services.runs.runs(page.RUNS_READ)]
    except FeatureStoreError as exc:  # Redis down: the catalog itself still shows
        runs_error = str(exc)
    history, statistics_error = None, None
    try:
        history = {entry["feature_type"]: statistics.statistics_history(
            services.store.redis, entry["feature_type"], page.FEATURE_RUNS_SHOWN) for entry in entries}
    except FeatureStoreError as exc:
        statistics_error = str(exc)
    return render_template("catalog/index.html", fmt=page, page=page.build(
        entries, runs, runs_error, history, statistics_error))
