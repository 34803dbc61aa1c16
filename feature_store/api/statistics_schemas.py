"""Response schemas of run statistics and drift (documentation only, as in schemas.py: the
answers are built by services/statistics.py; each schema is closed)."""

from __future__ import annotations

from marshmallow import Schema, fields

from feature_store.registry import DataType

_VALUE = {"description": "a value in the feature's own form: a number, or ISO 8601 for datetimes"}


class RunFeatureStatisticsSchema(Schema):
    """One feature's statistics as a run's result lists them."""

    count = fields.Integer(required=True, metadata={"description": "values written (nulls included)"})
    nulls = fields.Integer(required=True)
    distinct = fields.Integer(required=True, metadata={"description": "distinct non-null values (an estimate, "
                                                                      "about 1.2% relative error)"})
    psi = fields.Float(required=True, allow_none=True, metadata={"description": "against the previous run (null on "
                                                                                "the feature's first)"})
    ks = fields.Float(required=True, allow_none=True, metadata={"description": "KS statistic against the previous "
                                                                              "run (numbers and datetimes)"})
    drifted = fields.Boolean(required=True)


class DriftSchema(Schema):
    psi = fields.Float(required=True, metadata={"description": "population stability index over the previous "
                                                               "run's bins"})
    ks = fields.Float(required=True, allow_none=True, metadata={"description": "largest gap between the two runs' "
                                                                              "CDFs (null for strings)"})
    bins = fields.Integer(required=True, metadata={"description": "bins PSI compared (null and other included)"})
    drifted = fields.Boolean(required=True)
    psi_threshold = fields.Float(required=True, metadata={"description": "DRIFT_PSI_THRESHOLD at the run"})
    ks_threshold = fields.Float(required=True, allow_none=True, metadata={"description": "DRIFT_KS_THRESHOLD "
                                                                                        "(null: not used)"})
    previous_job_id = fields.String(required=True, allow_none=True)
    previous_computed_at = fields.String(required=True)


class HistogramSchema(Schema):
    edges = fields.List(fields.Raw(metadata=_VALUE), required=True, metadata={"description": "bin i is "
                        "[edges[i], edges[i+1]); the last includes the max"})
    counts = fields.List(fields.Integer(), required=True, metadata={"description": "values per bin (estimated)"})


class TopValueSchema(Schema):
    value = fields.Raw(required=True)
    count = fields.Integer(required=True, metadata={"description": "exact while the feature has under 96 distinct "
                                                                   "values, else a lower bound"})


class StatisticsEntrySchema(Schema):
    """One feature's statistics of one extraction run."""

    feature_type = fields.String(required=True)
    data_type = fields.String(required=True, metadata={"enum": [t.value for t in DataType]})
    job_id = fields.String(required=True, allow_none=True, metadata={"description": "the run"})
    computed_at = fields.String(required=True, metadata={"description": "the run's values' computed_at"})
    count = fields.Integer(required=True)
    nulls = fields.Integer(required=True)
    null_fraction = fields.Float(required=True)
    distinct = fields.Integer(required=True)
    min = fields.Raw(allow_none=True, metadata={**_VALUE, "description": "numbers and datetimes: exact"})
    max = fields.Raw(allow_none=True, metadata={**_VALUE, "description": "numbers and datetimes: exact"})
    mean = fields.Raw(allow_none=True, metadata={**_VALUE, "description": "numbers and datetimes: exact"})
    quantiles = fields.Dict(keys=fields.String(), values=fields.Raw(metadata=_VALUE), metadata={
        "description": "p01, p05, p10 ... p90, p95, p99 (KLL sketch: about 1.65% rank error)"})
    histogram = fields.Nested(HistogramSchema, allow_none=True)
    top_values = fields.List(fields.Nested(TopValueSchema), metadata={"description": "strings and booleans: the "
                                                                                     "most frequent, at most 10"})
    drift = fields.Nested(DriftSchema, required=True, allow_none=True, metadata={
        "description": "against the previous run that refreshed the feature (null on its first)"})


class FeatureStatisticsSchema(Schema):
    feature_type = fields.String(required=True)
    data_type = fields.String(required=True, metadata={"enum": [t.value for t in DataType]})
    latest = fields.Nested(StatisticsEntrySchema, required=True, allow_none=True, metadata={
        "description": "the last run's (null before any run)"})
    history = fields.List(fields.Nested(StatisticsEntrySchema), required=True, metadata={
        "description": "newest first, the last STATISTICS_HISTORY runs (or `limit`)"})


class LatestStatisticsSchema(Schema):
    feature_type = fields.String(required=True)
    latest = fields.Nested(StatisticsEntrySchema, required=True, allow_none=True)


class StatisticsOverviewSchema(Schema):
    features = fields.List(fields.Nested(LatestStatisticsSchema), required=True, metadata={
        "description": "every feature, in declaration order"})
    drifted_features = fields.List(fields.String(), required=True, metadata={"description": "flagged at their "
                                                                                           "last run"})


SCHEMAS = {"RunFeatureStatistics": RunFeatureStatisticsSchema, "Drift": DriftSchema, "Histogram": HistogramSchema,
           "TopValue": TopValueSchema, "StatisticsEntry": StatisticsEntrySchema,
           "FeatureStatistics": FeatureStatisticsSchema, "LatestStatistics": LatestStatisticsSchema,
           "StatisticsOverview": StatisticsOverviewSchema}
