"""Discovery's response schemas: a feature's catalog entry, with its versions, freshness, drift and
lineage (re-exported by api/schemas.py, where the OpenAPI document finds every schema)."""

from __future__ import annotations

from marshmallow import Schema, fields

from feature_store.registry import DataType


class LineageStepSchema(Schema):
    """One join-key equality on a path: table.column = to_table.to_column."""

    table = fields.String(required=True, metadata={"example": "payment_transactions"})
    column = fields.String(required=True, metadata={"example": "policy_id"})
    to_table = fields.String(required=True, metadata={"example": "policies"})
    to_column = fields.String(required=True, metadata={"example": "id"})


class LineageEntitySchema(Schema):
    table = fields.String(required=True, metadata={"example": "users"})
    column = fields.String(required=True, metadata={"example": "id"})


_LINEAGE_ROLES = fields.List(fields.String(metadata={"enum": ["selected", "joined_on", "filtered_on",
                                                               "grouped_by"]}))
_LINEAGE_COLUMNS = {"keys": fields.String(), "values": _LINEAGE_ROLES}
_LINEAGE_PATH = fields.List(fields.Nested(LineageStepSchema), allow_none=True, metadata={
    "description": "the join-key equalities from a row of the table to the entity's key ([] for the entity's "
                   "own table; null when no equality links them)"})


class LineageSchema(Schema):
    """What a feature reads, derived from its statement (feature_store/lineage.py)."""

    entity = fields.Nested(LineageEntitySchema, required=True, metadata={"description": "the entity's key"})
    tables = fields.List(fields.String(), required=True, metadata={"description": "the tables read"})
    columns = fields.Dict(keys=fields.String(), values=fields.Dict(**_LINEAGE_COLUMNS), required=True,
                          metadata={"description": "table -> column -> its roles"})
    paths = fields.Dict(keys=fields.String(), values=_LINEAGE_PATH, required=True,
                        metadata={"description": "table -> how its rows reach the entity"})


class LineageReaderSchema(Schema):
    feature_type = fields.String(required=True)
    entity_type = fields.String(required=True)
    columns = fields.Dict(**_LINEAGE_COLUMNS, required=True, metadata={
        "description": "the table's columns the feature reads (only the one asked for, when one was) -> roles"})
    path = fields.Nested(LineageStepSchema, many=True, required=True, allow_none=True, metadata={
        "description": "how the table's rows reach the feature's entity ([] for the entity's own table; null when "
                       "no equality links them)"})


class LineageReadersSchema(Schema):
    table = fields.String(required=True, metadata={"example": "policies"})
    column = fields.String(required=True, allow_none=True, metadata={"description": "null when not asked"})
    features = fields.List(fields.Nested(LineageReaderSchema), required=True,
                           metadata={"description": "the features that read it, in declaration order"})



class FeatureVersionSchema(Schema):
    """One version of a feature's definition (feature_store/versions.py)."""

    version = fields.Integer(required=True, metadata={"example": 1})
    fingerprint = fields.String(required=True, metadata={
        "description": "derived from the feature's compiled statement and value function", "example": "dd10035c2287"})
    began = fields.String(required=True, allow_none=True, metadata={
        "description": "the date it began (UTC); null for a changed definition not recorded yet",
        "example": "2025-01-01"})


class FeatureFreshnessSchema(Schema):
    """How fresh a feature's values are (services/freshness.py)."""

    max_age_seconds = fields.Integer(required=True, allow_none=True, metadata={
        "description": "how old a served value may be before it is recomputed on read; null: no limit"})
    last_refreshed_at = fields.String(required=True, allow_none=True, metadata={
        "description": "when the values of the last run that refreshed it were computed (UTC); null: no run yet"})
    last_run_id = fields.String(required=True, allow_none=True, metadata={"description": "that run's job id"})
    age_seconds = fields.Integer(required=True, allow_none=True, metadata={"description": "seconds since then"})
    fresh = fields.Boolean(required=True, allow_none=True, metadata={
        "description": "whether that is within the max age; null: no run yet"})


class FeatureDriftSchema(Schema):
    """The drift its last run found against the run before (services/statistics.py)."""

    drifted = fields.Boolean(required=True)
    psi = fields.Float(required=True, allow_none=True)
    ks = fields.Float(required=True, allow_none=True, metadata={"description": "numbers and datetimes only"})
    psi_threshold = fields.Float(required=True, allow_none=True)
    ks_threshold = fields.Float(required=True, allow_none=True)
    job_id = fields.String(required=True, allow_none=True, metadata={"description": "the run"})
    computed_at = fields.String(required=True, allow_none=True)
    previous_job_id = fields.String(required=True, allow_none=True, metadata={"description": "the run compared with"})
    previous_computed_at = fields.String(required=True, allow_none=True)


class FeatureSchema(Schema):
    feature_type = fields.String(required=True, metadata={"example": "user_failed_transaction_count"})
    name = fields.String(required=True)
    description = fields.String(required=True)
    entity_type = fields.String(required=True, metadata={"example": "user_id"})
    data_type = fields.String(required=True, metadata={"enum": [t.value for t in DataType]})
    created_at = fields.String(required=True, metadata={"example": "2025-01-01T00:00:00"})
    version = fields.Integer(required=True, metadata={"description": "the current version (the last of versions)"})
    fingerprint = fields.String(required=True, metadata={"description": "the current version's fingerprint"})
    versions = fields.List(fields.Nested(FeatureVersionSchema), required=True, metadata={
        "description": "every version, oldest first"})
    feature_sets = fields.List(fields.String(), required=True, metadata={"description": "the feature sets that "
                                                                                         "list it"})
    lineage = fields.Nested(LineageSchema, required=True)
    freshness = fields.Nested(FeatureFreshnessSchema, required=True, allow_none=True, metadata={
        "description": "null when the online store cannot be read"})
    drift = fields.Nested(FeatureDriftSchema, required=True, allow_none=True, metadata={
        "description": "at its last run against the run before; null until two runs recorded statistics, or "
                       "when the store cannot be read"})


class FeatureSetSchema(Schema):
    name = fields.String(required=True, metadata={"example": "underwriting_v1"})
    description = fields.String(required=True)
    entity_type = fields.String(required=True)
    feature_types = fields.List(fields.String(), required=True)
    created_at = fields.String(required=True)
