"""Request and response schemas (marshmallow). The same classes validate requests and document
the API in the OpenAPI document (see openapi.py). Unknown fields in a request are ignored."""

from __future__ import annotations

from datetime import UTC, datetime

from marshmallow import EXCLUDE, Schema, fields, validate


class EntityIdField(fields.Field):
    """An entity id: a JSON string or integer (never a boolean, float, list or null), as a string.

    Integers are turned into their decimal form exactly (Python ints are unbounded: no float in
    between), so 2**60 names the row 1152921504606846976.
    """

    default_error_messages = {"invalid": "must be a string or an integer", "null": "must be a string or an integer"}

    def _deserialize(self, value, attr, data, **kwargs):
        if isinstance(value, str):
            return value
        if isinstance(value, int) and not isinstance(value, bool):
            return str(value)
        raise self.make_error("invalid")

    def _serialize(self, value, attr, obj, **kwargs):
        return None if value is None else str(value)


class InstantField(fields.Field):
    """An ISO 8601 instant (`2025-03-01T00:00:00`, a date, fractions, `Z` or an offset), as a naive
    UTC datetime: no offset means UTC; an offset is converted to UTC."""

    default_error_messages = {"invalid": "must be an ISO 8601 instant such as 2025-03-01T00:00:00 (UTC unless "
                                         "it carries Z or an offset)"}
    default_error_messages["null"] = default_error_messages["invalid"]

    def _deserialize(self, value, attr, data, **kwargs):
        if not isinstance(value, str):
            raise self.make_error("invalid")
        try:
            moment = datetime.fromisoformat(value.strip())
            if moment.tzinfo is not None:
                moment = moment.astimezone(UTC).replace(tzinfo=None)
        except (ValueError, OverflowError):
            raise self.make_error("invalid") from None
        return moment

    def _serialize(self, value, attr, obj, **kwargs):
        return None if value is None else value.isoformat()


class _Request(Schema):
    class Meta:
        unknown = EXCLUDE


# A null field is worded like any other value of the wrong type (not marshmallow's "Field may not
# be null."), so every request error reads the same way.
class FeatureRequestSchema(_Request):
    feature_type = fields.String(required=True, error_messages={"null": "must be a string"},
                                 metadata={"example": "user_failed_transaction_count"})
    entity_id = EntityIdField(required=True, metadata={"example": "123", "oneOf": [{"type": "string"},
                                                                                   {"type": "integer"}]})
    as_of = InstantField(metadata={"type": "string", "example": "2025-03-01T00:00:00",
                                   "description": "the value as the warehouse's rows define it at this instant "
                                                  "(UTC unless Z or an offset); absent: the current value"})


class FeatureSetRequestSchema(_Request):
    feature_set = fields.String(required=True, error_messages={"null": "must be a string"},
                                metadata={"example": "underwriting_v1"})
    entity_id = EntityIdField(required=True, metadata={"example": "123", "oneOf": [{"type": "string"},
                                                                                   {"type": "integer"}]})
    as_of = InstantField(metadata={"type": "string", "example": "2025-03-01T00:00:00",
                                   "description": "the values at this instant (see FeatureRequest.as_of)"})


class TrainingRequestSchema(_Request):
    features = fields.List(fields.Nested(FeatureRequestSchema, error_messages={"null": "must be an object"}),
                           required=True, error_messages={"null": "must be a list"})


class ExtractRequestSchema(_Request):
    feature_types = fields.List(fields.String(error_messages={"null": "must be a string"}),
                                validate=validate.Length(min=1, error="must not be empty"),
                                error_messages={"null": "must be a list"},
                                metadata={"description": "refresh only these (default: every feature)",
                                          "example": ["payment_type"]})


class FeatureSchema(Schema):
    feature_type = fields.String(required=True)
    name = fields.String(required=True)
    description = fields.String(required=True)
    entity_type = fields.String(required=True)
    data_type = fields.String(required=True, metadata={"enum": ["datetime", "integer", "string"]})
    created_at = fields.String(required=True, metadata={"example": "2025-01-01T00:00:00"})
    version = fields.Integer()
    feature_sets = fields.List(fields.String(), metadata={"description": "the feature sets that list it"})


class FeatureSetSchema(Schema):
    name = fields.String(required=True, metadata={"example": "underwriting_v1"})
    description = fields.String(required=True)
    entity_type = fields.String(required=True)
    feature_types = fields.List(fields.String(), required=True)
    created_at = fields.String(required=True)


class _SetValueSchema(Schema):
    feature_value = fields.Raw(allow_none=True)
    computed_at = fields.String(required=True)


class FeatureSetValuesSchema(Schema):
    feature_set = fields.String(required=True)
    entity_type = fields.String()
    entity_id = fields.String(required=True)
    as_of = fields.String()
    values = fields.Dict(keys=fields.String(), values=fields.Nested(_SetValueSchema), allow_none=True, required=True)
    success = fields.Boolean(required=True)
    error = fields.String()
    known_feature_sets = fields.List(fields.String())
    request_id = fields.String()


class FeatureValueSchema(Schema):
    feature_type = fields.String(required=True)
    entity_id = fields.String(required=True)
    feature_value = fields.Raw(allow_none=True, metadata={"description": "null when there is none"})
    computed_at = fields.String(allow_none=True, metadata={"example": "2025-01-20T12:00:00"})
    as_of = fields.String(metadata={"description": "the item's as_of instant, in UTC (only when it had one)",
                                    "example": "2025-03-01T00:00:00"})
    success = fields.Boolean(required=True)
    error = fields.String()


class TrainingResponseSchema(Schema):
    results = fields.List(fields.Nested(FeatureValueSchema), required=True)
    total_requested = fields.Integer(required=True)
    total_successful = fields.Integer(required=True)


class ExtractionResultSchema(Schema):
    message = fields.String(required=True)
    features_extracted = fields.Dict(keys=fields.String(), values=fields.Integer(), required=True)
    total_features = fields.Integer(required=True)
    job_id = fields.String(required=True)
    joined = fields.Boolean(metadata={"description": "true when this request joined a run in progress"})


_COUNTS = {"keys": fields.String(), "values": fields.Integer()}
_REASONS = {"keys": fields.String(), "values": fields.String()}
_STATUS = {"enum": ["queued", "started", "finished", "failed"]}


class ExtractionAcceptedSchema(Schema):
    job_id = fields.String(required=True)
    status = fields.String(required=True, metadata=_STATUS)
    status_url = fields.String(required=True)
    joined = fields.Boolean()
    workers = fields.Integer(allow_none=True, metadata={
        "description": "workers listening on the extraction queue (null in embedded mode)"})
    warning = fields.String(metadata={"description": "set when no worker listens: the run stays queued"})


class _RunFields(Schema):
    job_id = fields.String(required=True)
    status = fields.String(required=True, metadata=_STATUS)
    trigger = fields.String(required=True, metadata={"enum": ["api", "schedule"]})
    feature_types = fields.List(fields.String(), required=True)
    enqueued_at = fields.String(allow_none=True)
    started_at = fields.String(allow_none=True)
    ended_at = fields.String(allow_none=True)


class ExtractionStatusSchema(_RunFields):
    result = fields.Dict(metadata={"description": "when finished (and what a failed run did)"})
    success = fields.Boolean(metadata={"description": "false when failed"})
    error = fields.String(metadata={"description": "when failed: names every failed feature"})
    failed_features = fields.Dict(**_REASONS, metadata={"description": "when failed: feature type -> reason"})
    features_extracted = fields.Dict(**_COUNTS, metadata={"description": "when failed: the features refreshed"})
    total_features = fields.Integer()


class RunSummarySchema(_RunFields):
    features_extracted = fields.Dict(**_COUNTS, metadata={"description": "once ended"})
    total_features = fields.Integer(metadata={"description": "once ended"})
    failed_features = fields.Dict(**_REASONS, metadata={"description": "once ended"})
    error = fields.String(metadata={"description": "when failed"})


class RunListSchema(Schema):
    runs = fields.List(fields.Nested(RunSummarySchema), required=True)


class ErrorSchema(Schema):
    success = fields.Boolean(required=True, metadata={"example": False})
    error = fields.String(required=True)
    request_id = fields.String()


class ExtractionFailedSchema(ErrorSchema):
    job_id = fields.String(required=True)
    failed_features = fields.Dict(**_REASONS, required=True)
    features_extracted = fields.Dict(**_COUNTS, required=True)
    total_features = fields.Integer(required=True)


class HealthSchema(Schema):
    status = fields.String(required=True, metadata={"example": "ok"})


class ReadySchema(Schema):
    status = fields.String(required=True, metadata={"enum": ["ready", "not ready"]})
    checks = fields.Dict(keys=fields.String(), values=fields.String(), required=True,
                         metadata={"description": "redis, warehouse: \"ok\" or what is wrong"})
    workers = fields.Integer(allow_none=True, required=True,
                             metadata={"description": "workers listening on the extraction queue"})
    queue = fields.String(required=True)
    embedded = fields.Boolean(required=True)
    success = fields.Boolean(metadata={"description": "false when not ready"})
    error = fields.String(metadata={"description": "when not ready: what does not answer"})
    request_id = fields.String()


def first_error(messages, path: str = "") -> str:
    """One readable line from marshmallow's nested error messages, naming the item's path."""
    if isinstance(messages, dict):
        name, inner = next(iter(messages.items()))
        if isinstance(name, int):
            segment = f"{path}[{name}]"
        elif name == "_schema":
            segment = path
        else:
            segment = f"{path}.{name}" if path else str(name)
        return first_error(inner, segment)
    if isinstance(messages, list) and messages:
        return first_error(messages[0], path)
    text = str(messages)
    if text == "Missing data for required field.":
        text = "is required"
    elif text == "Invalid input type.":
        text = "must be an object"
    elif text == "Not a valid string.":
        text = "must be a string"
    elif text == "Not a valid list.":
        text = "must be a list"
    return f"{path}: {text}" if path else text

