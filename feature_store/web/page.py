"""What the catalog page shows, shaped from the services' answers: the discovery entries, the
run list (as GET /extract lists it) and each feature's run statistics (services/statistics.py).
Plain data in, plain data out: no Flask, no Redis."""

from __future__ import annotations

from datetime import UTC, datetime

from feature_store.web import charts

RUNS_READ = 20  # the run list the page reads (the contract keeps at least the last 20)
RUNS_SHOWN = 8  # runs in the page's run table
FEATURE_RUNS_SHOWN = 5  # runs in each feature's card
QUANTILES_SHOWN = (("p05", "5%"), ("p50", "median"), ("p95", "95%"))
ROLE_WORDS = {"selected": "selected", "joined_on": "join key", "filtered_on": "filter", "grouped_by": "group by"}


def moment(iso: str | None) -> str:
    """An ISO 8601 instant (UTC, no offset) as the page writes it."""
    if not iso:
        return "—"
    return iso.replace("T", " ").split(".")[0] + " UTC"


def short_id(job_id: str) -> str:
    """A run's id as the page shows it (the whole id is its title)."""
    return job_id.removeprefix("extract-")[:8]


def ago(iso: str | None, now: datetime) -> str:
    """How long before `now` the instant `iso` was, in the largest whole unit."""
    if not iso:
        return ""
    seconds = int((now - datetime.fromisoformat(iso)).total_seconds())
    if seconds < 0:
        return "just now"
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds // size} {unit} ago"
    return f"{seconds} s ago"


def duration(seconds: int | float | None) -> str:
    """A span of seconds in its two largest units (`3 d 4 h`, `12 min`, `40 s`)."""
    if seconds is None:
        return "—"
    seconds = int(seconds)
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60), ("s", 1)):
        if seconds >= size or (unit == "s" and not parts):
            parts.append(f"{seconds // size} {unit}")
            seconds %= size
        if len(parts) == 2:
            break
    return " ".join(parts)


def version_card(history: list[dict] | None) -> dict | None:
    """The version part of a card from the feature's version history (versions.history: oldest
    first, the current one last): the current version and every version, newest first."""
    if not history:
        return None
    return {"current": history[-1], "history": list(reversed(history))}


def feature_runs(feature_type: str, runs: list[dict]) -> list[dict]:
    """The runs (newest first) that had `feature_type` to refresh, with what each did for it:
    its count of values written, or the reason it failed, or neither while the run is not over."""
    found = []
    for run in runs:
        if feature_type not in run.get("feature_types", ()):
            continue
        failed = run.get("failed_features") or {}
        count = (run.get("features_extracted") or {}).get(feature_type)
        outcome = "failed" if feature_type in failed else "refreshed" if count is not None else run["status"]
        found.append({"job_id": run["job_id"], "status": run["status"], "trigger": run["trigger"],
                      "outcome": outcome, "count": count, "failure": failed.get(feature_type),
                      "ended_at": run.get("ended_at"), "started_at": run.get("started_at")})
    return found


def run_rows(runs: list[dict], feature_types: list[str]) -> list[dict]:
    """The run table's rows: each run with its count per feature (None where it did not refresh
    the feature) and how long it took."""
    rows = []
    for run in runs:
        extracted = run.get("features_extracted") or {}
        seconds = None
        if run.get("started_at") and run.get("ended_at"):
            seconds = (datetime.fromisoformat(run["ended_at"])
                       - datetime.fromisoformat(run["started_at"])).total_seconds()
        rows.append({**run, "counts": [extracted.get(ft) for ft in feature_types], "seconds": seconds,
                     "failed": sorted((run.get("failed_features") or {}).keys())})
    return rows


def figures(statistics: dict) -> list[tuple[str, str]]:
    """The numbers beside the chart: counts, then the value statistics the data type has."""
    data_type = statistics["data_type"]
    shown = [("values", f"{statistics['count']:,}"),
             ("nulls", f"{statistics['nulls']:,} ({statistics['null_fraction']:.1%})"),
             ("distinct", f"≈{statistics['distinct']:,}")]
    if "min" in statistics:
        quantiles = statistics.get("quantiles") or {}
        shown += [("min", charts.value_text(statistics["min"], data_type))]
        shown += [(label, charts.value_text(quantiles[key], data_type))
                  for key, label in QUANTILES_SHOWN if key in quantiles]
        shown += [("mean", charts.value_text(statistics["mean"], data_type)),
                  ("max", charts.value_text(statistics["max"], data_type))]
    return shown


def statistics_card(history: list[dict]) -> dict | None:
    """The statistics part of a card from the feature's statistics history (newest first): the
    last run's figures, chart and drift; None before any run recorded statistics."""
    if not history:
        return None
    latest = history[0]
    return {"latest": latest, "figures": figures(latest),
            "chart": charts.histogram(latest) or charts.top_values(latest), "drift": latest.get("drift")}


def lineage_rows(lineage: dict) -> list[dict]:
    """One row per table a feature reads (discovery's `lineage`, in its order): the columns with
    their roles, and how a row of the table reaches the entity (its join-key path)."""
    rows = []
    for table in lineage["tables"]:
        path = lineage["paths"].get(table)
        if path is None:
            route = "no join-key path to the entity"
        elif not path:
            route = f"the entity's table ({lineage['entity']['column']})"
        else:
            route = " → ".join(f"{step['table']}.{step['column']} = {step['to_table']}.{step['to_column']}"
                               for step in path)
        rows.append({"table": table, "entity": path == [], "route": route,
                     "columns": [{"name": name, "roles": [ROLE_WORDS.get(role, role) for role in roles]}
                                 for name, roles in lineage["columns"].get(table, {}).items()]})
    return rows


def _drift_by_run(history: list[dict]) -> dict[str, dict]:
    return {entry["job_id"]: entry["drift"] for entry in history if entry.get("job_id") and entry.get("drift")}


def build(entries: list[dict], runs: list[dict] | None, runs_error: str | None = None,
          statistics: dict[str, list[dict]] | None = None, statistics_error: str | None = None,
          now: datetime | None = None) -> dict:
    """The page: one card per discovery entry (in discovery's order) and the recent runs.

    Args:
        entries: discovery's entries (services.discovery.catalog): with their `versions`,
            `lineage` and `freshness` (None when the store could not be read).
        runs: the run list, newest first, as GET /extract lists it (RunStatus.summary()); None
            when it could not be read.
        runs_error: why the run list could not be read.
        statistics: {feature_type: its statistics history, newest first}
            (statistics.statistics_history); None when it could not be read.
        statistics_error: why the statistics could not be read.
        now: the page's clock (UTC, naive), for the ages it shows.
    """
    now = now or datetime.now(UTC).replace(tzinfo=None)
    feature_types = [entry["feature_type"] for entry in entries]
    drift = {ft: _drift_by_run((statistics or {}).get(ft, [])) for ft in feature_types}
    cards = []
    for entry in entries:
        feature_type = entry["feature_type"]
        recent = feature_runs(feature_type, runs or [])
        for run in recent:
            run["drift"] = drift[feature_type].get(run["job_id"])
        last_refresh = next((run for run in recent if run["outcome"] == "refreshed"), None)
        cards.append({"entry": entry, "runs": recent[:FEATURE_RUNS_SHOWN], "last_refresh": last_refresh,
                      "statistics": statistics_card((statistics or {}).get(feature_type, [])),
                      "lineage": lineage_rows(entry["lineage"]) if entry.get("lineage") else None,
                      "versions": version_card(entry.get("versions")),
                      "freshness": entry.get("freshness"), "freshness_unknown": entry.get("freshness", {}) is None})
    ended = [run for run in runs or [] if run.get("ended_at")]
    rows = run_rows((runs or [])[:RUNS_SHOWN], feature_types)
    last_run = run_rows(ended[:1], feature_types)
    for row in rows + last_run:  # the features flagged as drifted by each run
        row["drifted"] = [ft for ft in feature_types if (drift[ft].get(row["job_id"]) or {}).get("drifted")]
    return {
        "now": now,
        "cards": cards,
        "feature_types": feature_types,
        "runs": rows,
        "runs_error": runs_error,
        "statistics_error": statistics_error,
        "stale": [entry["feature_type"] for entry in entries if (entry.get("freshness") or {}).get("fresh") is False],
        "last_run": last_run[0] if last_run else None,
        "drifted": [card["entry"]["feature_type"] for card in cards
                    if card["statistics"] and (card["statistics"]["drift"] or {}).get("drifted")],
        "entity_types": sorted({entry["entity_type"] for entry in entries}),
    }
