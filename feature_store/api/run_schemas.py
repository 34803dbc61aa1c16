"""Extraction runs' and the parity check's response schemas (re-exported by api/schemas.py, where the
OpenAPI document finds every schema)."""

from __future__ import annotations

from marshmallow import Schema, fields

from feature_store.api.schema_parts import _COUNTS, _REASONS, _ref, _success
from feature_store.api.statistics_schemas import RunFeatureStatisticsSchema
from feature_store.services.jobs import TRIGGERS


class ExtractionResultSchema(Schema):
    message = fields.String(required=True, metadata={"example": "Feature extraction completed successfully"})
    features_extracted = fields.Dict(**_COUNTS, required=True, metadata={"description": "feature type -> values "
                                                                                        "written"})
    total_features = fields.Integer(required=True)
    job_id = fields.String(required=True)
    joined = fields.Boolean(required=True, metadata={"description": "true when this request joined a run in "
                                                                    "progress"})
    drifted_features = fields.List(fields.String(), required=True, metadata={
        "description": "features whose values drifted against the previous run (GET /statistics/{feature_type})"})


class ExtractionAcceptedSchema(Schema):
    job_id = fields.String(required=True)
    status = fields.String(required=True, metadata={"enum": ["queued", "started", "finished", "failed"]})
    status_url = fields.String(required=True, metadata={"format": "uri", "description": "GET it to follow the run "
                                                                                       "(also the Location header)"})
    joined = fields.Boolean(required=True)
    workers = fields.Integer(required=True, allow_none=True, metadata={
        "description": "workers listening on the extraction queue (null in embedded mode)"})
    warning = fields.String(metadata={"description": "set when no worker listens: the run stays queued"})


class RunResultSchema(Schema):
    """What a run did (its job's result)."""

    features_extracted = fields.Dict(**_COUNTS, required=True, metadata={"description": "feature type -> values "
                                                                                        "written"})
    total_features = fields.Integer(required=True)
    failed_features = fields.Dict(**_REASONS, required=True, metadata={"description": "feature type -> reason"})
    removed = fields.Dict(**_COUNTS, required=True, metadata={"description": "feature type -> stale values "
                                                                            "removed"})
    computed_at = fields.String(required=True, allow_none=True, metadata={
        "description": "the values' computed_at (null when the run could not start)"})
    partitions = fields.Integer(metadata={"description": "id-range partitions, when the run was split"})
    statistics = fields.Dict(keys=fields.String(), values=fields.Nested(RunFeatureStatisticsSchema), metadata={
        "description": "feature type -> its statistics and drift (absent when STATISTICS=0)"})
    drifted_features = fields.List(fields.String(), metadata={"description": "features flagged as drifted"})
    stages = fields.Dict(keys=fields.String(), values=fields.Float(), required=True,
                         metadata={"description": "stage -> seconds"})


class _RunFields(Schema):
    job_id = fields.String(required=True, metadata={"example": "extract-3f0c2b9e"})
    status = fields.String(required=True, metadata={"enum": ["queued", "started"]})
    trigger = fields.String(required=True, metadata={
        "enum": list(TRIGGERS), "description": "what started the run: a request (api), the schedule, or the "
                                               "streaming process (stream: changes it cannot follow row by row)"})
    feature_types = fields.List(fields.String(), required=True, metadata={"description": "what the run refreshes"})
    enqueued_at = fields.String(required=True, allow_none=True)
    started_at = fields.String(required=True, allow_none=True)
    ended_at = fields.String(required=True, allow_none=True)


class RunPendingSchema(_RunFields):
    """A run queued or started (GET /extract/{job_id}, and as GET /extract lists it)."""


class RunFinishedSchema(_RunFields):
    status = fields.String(required=True, metadata={"enum": ["finished"]})
    result = fields.Nested(RunResultSchema, required=True)


class RunFailedSchema(_RunFields):
    status = fields.String(required=True, metadata={"enum": ["failed"]})
    success = _success(False)
    error = fields.String(required=True, metadata={"description": "names every failed feature"})
    failed_features = fields.Dict(**_REASONS, required=True, metadata={"description": "feature type -> reason"})
    features_extracted = fields.Dict(**_COUNTS, required=True, metadata={"description": "the features refreshed"})
    total_features = fields.Integer(required=True)
    result = fields.Nested(RunResultSchema, metadata={"description": "what the run did (absent when it died)"})


class RunEndedSummarySchema(_RunFields):
    """An ended run as GET /extract lists it."""

    status = fields.String(required=True, metadata={"enum": ["finished", "failed"]})
    features_extracted = fields.Dict(**_COUNTS, required=True)
    total_features = fields.Integer(required=True)
    failed_features = fields.Dict(**_REASONS, required=True)
    error = fields.String(metadata={"description": "when failed"})


class RunListSchema(Schema):
    runs = fields.List(fields.Raw(metadata=_ref("RunPending", "RunEndedSummary")), required=True,
                       metadata={"description": "newest first"})


class ParityDisagreementSchema(Schema):
    entity_id = fields.String(required=True)
    computed_at = fields.String(required=True)
    stored = fields.String(required=True, metadata={"description": "the stored value (JSON text)"})
    as_of_value = fields.String(required=True, allow_none=True, metadata={
        "description": "the value as of computed_at (JSON text); null when the entity did not exist then"})


class FeatureParitySchema(Schema):
    checked = fields.Integer(required=True)
    agree = fields.Integer(required=True)
    disagree = fields.Integer(required=True)
    agreement = fields.Float(required=True, allow_none=True, metadata={"description": "agree / checked (null when "
                                                                                     "none was checked)"})
    disagreements = fields.List(fields.Nested(ParityDisagreementSchema), required=True,
                                metadata={"description": "the first 20"})


class ParityReportSchema(Schema):
    sample_per_feature = fields.Integer(required=True)
    window_seconds = fields.Integer(required=True, metadata={
        "description": "a value also agrees when it equals the value this many seconds after its computed_at (it "
                       "was read a little after)"})
    checked_at = fields.String(required=True)
    features = fields.Dict(keys=fields.String(), values=fields.Nested(FeatureParitySchema), required=True)
