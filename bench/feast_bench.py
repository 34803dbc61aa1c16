"""Feast's side of the training-set comparison (BENCHMARKS.md, section 9), run by bench/run.py in
a subprocess with Feast's own virtual environment (not the project's requirements):

    python3 -m venv bench/.feast-venv && bench/.feast-venv/bin/pip install feast==0.67.0
    bench/.feast-venv/bin/python bench/feast_bench.py WORKDIR SIZE [SIZE ...]

WORKDIR holds events.parquet (user_id, event_timestamp, user_failed_transaction_count,
user_policy_time_of_purchase: one row per user at its creation and one per payment, the values
as of that event, precomputed from the warehouse by bench/run.py) and spine-SIZE.csv
(user_id,as_of,row: the very spines the feature store is sent). A file offline store repo
(registry, one entity, one feature view, no TTL) is applied there, then for each size:
get_historical_features(...).to_df(), timed with and without reading the CSV spine and writing
the result as Parquet. Prints one JSON object.
"""

from __future__ import annotations

import io
import json
import sys
import time
from datetime import timedelta
from pathlib import Path

FEATURES = ("user_failed_transaction_count", "user_policy_time_of_purchase")


def store(workdir: Path):
    from feast import Entity, FeatureStore, FeatureView, Field, FileSource, RepoConfig, ValueType
    from feast.types import Int64, UnixTimestamp

    config = RepoConfig(project="bench", provider="local", registry=str(workdir / "registry.db"),
                        online_store={"type": "sqlite", "path": str(workdir / "online.db")},
                        offline_store={"type": "file"}, entity_key_serialization_version=3,
                        repo_path=str(workdir))
    fs = FeatureStore(config=config)
    user = Entity(name="user", join_keys=["user_id"], value_type=ValueType.INT64)
    source = FileSource(name="user_events", path=str(workdir / "events.parquet"), timestamp_field="event_timestamp")
    view = FeatureView(name="user_features", entities=[user], ttl=timedelta(0), source=source,
                       schema=[Field(name="user_failed_transaction_count", dtype=Int64),
                               Field(name="user_policy_time_of_purchase", dtype=UnixTimestamp)])
    fs.apply([user, view])
    return fs


def run(fs, csv_bytes: bytes) -> dict:
    import pandas as pd

    refs = [f"user_features:{name}" for name in FEATURES]
    started = time.perf_counter()
    spine = pd.read_csv(io.BytesIO(csv_bytes))
    spine = spine.rename(columns={"as_of": "event_timestamp"})
    spine["event_timestamp"] = pd.to_datetime(spine["event_timestamp"], utc=True)
    loaded = time.perf_counter()
    df = fs.get_historical_features(entity_df=spine, features=refs).to_df()
    retrieved = time.perf_counter()
    out = io.BytesIO()
    df.to_parquet(out)
    written = time.perf_counter()
    return {"df": df, "spine_rows": len(spine), "load_s": loaded - started, "retrieve_s": retrieved - loaded,
            "total_s": written - started}


def main() -> None:
    workdir = Path(sys.argv[1])
    sizes = [int(s) for s in sys.argv[2:]]
    import feast
    import pandas as pd

    fs = store(workdir)
    warm = (workdir / f"spine-{sizes[0]}.csv").read_bytes()
    run(fs, warm)  # imports, registry and the event file's first read (as the feature store's warm-up)
    results = {"feast_version": feast.__version__}
    for size in sizes:
        csv_bytes = (workdir / f"spine-{size}.csv").read_bytes()
        runs = [run(fs, csv_bytes) for _ in range(3 if size <= 10_000 else 2)]
        best = min(runs, key=lambda r: r["total_s"])
        df = best["df"]
        rows_out = len(df)
        null_rows = int(df["user_failed_transaction_count"].isna().sum())
        picked = df[df["row"] % max(1, size // 200) == 0].sort_values("row")
        sample = [{"row": int(r.row), "user_id": int(r.user_id),
                   "user_failed_transaction_count": None if pd.isna(r.user_failed_transaction_count)
                   else int(r.user_failed_transaction_count),
                   "user_policy_time_of_purchase": None if pd.isna(r.user_policy_time_of_purchase)
                   else r.user_policy_time_of_purchase.isoformat()}
                  for r in picked.itertuples()]
        results[str(size)] = {
            "spine_rows": best["spine_rows"], "rows_out": rows_out, "dropped_rows": best["spine_rows"] - rows_out,
            "rows_without_feature_row": null_rows,
            "retrieve_s": round(min(r["retrieve_s"] for r in runs), 3), "total_s": round(best["total_s"], 3),
            "rows_per_s_retrieve": round(size / min(r["retrieve_s"] for r in runs)),
            "rows_per_s_total": round(size / best["total_s"]), "sample": sample,
        }
        print(size, json.dumps({k: v for k, v in results[str(size)].items() if k != "sample"}), file=sys.stderr,
              flush=True)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
