"""The catalog page's model (feature_store/web/page.py, charts.py): what each card and the run
table say, from the services' answers, including runs that failed for one feature."""

from __future__ import annotations

from datetime import datetime

from feature_store.web import charts, page

ENTRIES = [{"feature_type": "a_count", "name": "A", "description": "a", "entity_type": "user_id",
            "data_type": "integer", "created_at": "2025-01-01T00:00:00", "feature_sets": []},
           {"feature_type": "b_kind", "name": "B", "description": "b", "entity_type": "user_id",
            "data_type": "string", "created_at": "2025-01-01T00:00:00", "feature_sets": []}]


def run(job_id, ended_at, extracted, failed=None, feature_types=("a_count", "b_kind"), status=None):
    return {"job_id": job_id, "status": status or ("failed" if failed else "finished"), "trigger": "schedule",
            "feature_types": list(feature_types), "enqueued_at": ended_at, "started_at": ended_at,
            "ended_at": ended_at, "features_extracted": extracted, "failed_features": failed or {},
            "total_features": sum(extracted.values())}


def test_a_run_that_failed_for_one_feature_shows_why_on_its_card_and_its_counts_for_the_others():
    runs = [run("extract-2", "2026-01-02T00:00:00", {"b_kind": 7}, failed={"a_count": "no such table: quotes"}),
            run("extract-1", "2026-01-01T00:00:00", {"a_count": 5, "b_kind": 6})]
    built = page.build(ENTRIES, runs, now=datetime(2026, 1, 2, 3, 0))
    a, b = built["cards"]
    assert [r["outcome"] for r in a["runs"]] == ["failed", "refreshed"]
    assert a["runs"][0]["failure"] == "no such table: quotes"
    assert a["last_refresh"]["job_id"] == "extract-1"  # the last run that did refresh it
    assert b["last_refresh"]["job_id"] == "extract-2"
    assert [row["counts"] for row in built["runs"]] == [[None, 7], [5, 6]]
    assert built["runs"][0]["failed"] == ["a_count"]
    assert built["last_run"]["job_id"] == "extract-2" and built["last_run"]["total_features"] == 7
    assert page.ago("2026-01-01T00:00:00", built["now"]) == "1 d ago"


def test_a_run_of_some_features_is_listed_only_on_their_cards_and_one_in_progress_has_no_count():
    runs = [run("extract-3", None, {}, feature_types=("b_kind",), status="started"),
            run("extract-1", "2026-01-01T00:00:00", {"a_count": 5, "b_kind": 6})]
    a, b = page.build(ENTRIES, runs)["cards"]
    assert [r["job_id"] for r in a["runs"]] == ["extract-1"]
    assert [(r["job_id"], r["outcome"], r["count"]) for r in b["runs"]] == [("extract-3", "started", None),
                                                                            ("extract-1", "refreshed", 6)]


def test_without_the_run_history_the_cards_still_show():
    built = page.build(ENTRIES, None, "the online store (Redis) is unreachable")
    assert [card["entry"]["name"] for card in built["cards"]] == ["A", "B"]
    assert built["runs"] == [] and built["last_run"] is None and built["runs_error"]


def test_statistics_give_the_chart_the_figures_and_the_drift_of_each_run():
    history = {"a_count": [
        {"feature_type": "a_count", "data_type": "integer", "job_id": "extract-2", "computed_at": "2026-01-02T00:00:00",
         "count": 10, "nulls": 2, "null_fraction": 0.2, "distinct": 3, "min": 0, "max": 4, "mean": 1.25,
         "quantiles": {"p05": 0, "p50": 1, "p95": 4}, "histogram": {"edges": [0, 2, 4, 5], "counts": [5, 0, 3]},
         "drift": {"psi": 0.31, "ks": 0.2, "drifted": True, "psi_threshold": 0.2, "ks_threshold": None}},
        {"feature_type": "a_count", "data_type": "integer", "job_id": "extract-1", "computed_at": "2026-01-01T00:00:00",
         "count": 9, "nulls": 0, "null_fraction": 0.0, "distinct": 2, "drift": None}]}
    runs = [run("extract-2", "2026-01-02T00:00:00", {"a_count": 10, "b_kind": 1}),
            run("extract-1", "2026-01-01T00:00:00", {"a_count": 9, "b_kind": 1})]
    built = page.build(ENTRIES, runs, statistics=history)
    a, b = built["cards"]
    assert built["drifted"] == ["a_count"] and built["runs"][0]["drifted"] == ["a_count"]
    assert [r["drift"]["drifted"] if r["drift"] else None for r in a["runs"]] == [True, None]
    assert dict(a["statistics"]["figures"]) == {"values": "10", "nulls": "2 (20.0%)", "distinct": "≈3", "min": "0",
                                               "5%": "0", "median": "1", "95%": "4", "mean": "1.25", "max": "4"}
    bars = a["statistics"]["chart"]["bars"]
    assert [bar["count"] for bar in bars] == [5, 0, 3] and bars[1]["height"] == 0
    assert bars[0]["height"] == charts.HEIGHT - charts.LABEL_SPACE and bars[2]["height"] < bars[0]["height"]
    assert all(0 <= bar["x"] and bar["x"] + bar["width"] <= charts.WIDTH for bar in bars)
    assert b["statistics"] is None


def test_top_values_and_the_forms_of_statistics():
    chart = charts.top_values({"count": 4, "top_values": [{"value": "Debit", "count": 3},
                                                          {"value": "<b>", "count": 1}]})
    assert [(bar["label"], bar["share"]) for bar in chart["bars"]] == [("Debit", "75.0%"), ("<b>", "25.0%")]
    assert charts.value_text(1203482, "integer") == "1,203,482"
    assert charts.value_text(566742.0175, "integer") == "566,742"
    assert charts.value_text(0.32333, "integer") == "0.3233"
    assert charts.value_text("2024-08-15T04:50:53.123714", "datetime") == "2024-08-15 04:50:53"


def test_lineage_rows_say_how_each_table_reaches_the_entity():
    lineage = {"entity": {"table": "users", "column": "id"}, "tables": ["users", "policies"],
               "columns": {"users": {"id": ["selected", "grouped_by"]}, "policies": {"user_id": ["joined_on"]}},
               "paths": {"users": [], "policies": [{"table": "policies", "column": "user_id", "to_table": "users",
                                                    "to_column": "id"}]}}
    users, policies = page.lineage_rows(lineage)
    assert users["entity"] and users["columns"] == [{"name": "id", "roles": ["selected", "group by"]}]
    assert policies["route"] == "policies.user_id = users.id"


def test_versions_newest_first_and_spans_in_two_units():
    card = page.version_card([{"version": 1, "fingerprint": "aa", "began": "2025-01-01"},
                              {"version": 2, "fingerprint": "bb", "began": None}])
    assert card["current"]["version"] == 2 and [v["version"] for v in card["history"]] == [2, 1]
    assert page.version_card([]) is None
    assert [page.duration(s) for s in (0, 40, 3600, 90061, None)] == ["0 s", "40 s", "1 h", "1 d 1 h", "—"]
