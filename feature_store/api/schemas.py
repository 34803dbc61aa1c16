"""Request and response schemas (marshmallow). The same classes validate requests and document
the API in the OpenAPI document (see openapi.py). Unknown fields in a request are ignored."""

from __future__ import annotations

from marshmallow import EXCLUDE, Schema, fields, validate

from feature_store.services.training_sets import parse_instant


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
        try:
            return parse_instant(value)
        except (ValueError, OverflowError):
            raise self.make_error("invalid") from None

    def _serialize(self, value, attr, obj, **kwargs):
        return None if value is None else value.isoformat()


# How the document shows an instant: the forms datetime.fromisoformat reads (a date; a time to the
# hour, minute, second or microsecond; `Z` or an offset), on real calendar days (29 February left
# out: valid in leap years only) of the years 1000 to 9998 (any offset keeps them in range).
# Documentation only: InstantField decides, and reads more (other years, 29 February).
INSTANT_PATTERN = (r"^([1-8][0-9]{3}|9[0-8][0-9]{2}|99[0-8][0-9]|999[0-8])-"
                   r"((0[13578]|1[02])-(0[1-9]|[12][0-9]|3[01])|(0[469]|11)-(0[1-9]|[12][0-9]|30)"
                   r"|02-(0[1-9]|1[0-9]|2[0-8]))"
                   r"([T ]([01][0-9]|2[0-3])(:[0-5][0-9](:[0-5][0-9]([.,][0-9]{1,6})?)?)?"
                   r"(Z|[+-]([01][0-9]|2[0-3])(:?[0-5][0-9])?)?)?$")
INSTANT_DOC = {"type": "string", "pattern": INSTANT_PATTERN, "example": "2025-03-01T00:00:00"}


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
    as_of = InstantField(metadata={**INSTANT_DOC, "description": "the value as the warehouse's rows define it at "
                                                               "this instant (UTC unless Z or an offset); absent: "
                                                               "the current value"})


class FeatureSetRequestSchema(_Request):
    feature_set = fields.String(required=True, error_messages={"null": "must be a string"},
                                metadata={"example": "underwriting_v1"})
    entity_id = EntityIdField(required=True, metadata={"example": "123", "oneOf": [{"type": "string"},
                                                                                   {"type": "integer"}]})
    as_of = InstantField(metadata={**INSTANT_DOC, "description": "the values at this instant (see "
                                                               "FeatureRequest.as_of)"})


class TrainingRequestSchema(_Request):
    features = fields.List(fields.Nested(FeatureRequestSchema, error_messages={"null": "must be an object"}),
                           required=True, error_messages={"null": "must be a list"})


class ExtractRequestSchema(_Request):
    feature_types = fields.List(fields.String(error_messages={"null": "must be a string"}),
                                validate=validate.Length(min=1, error="must not be empty"),
                                error_messages={"null": "must be a list"},
                                metadata={"description": "refresh only these (default: every feature)",
                                          "example": ["payment_type"]})


# --- Response schemas (documentation only: answers are built in the views and bodies.py) --------
#
# Every answer's shape is fixed, so each schema is closed: apispec emits additionalProperties false
# for a schema whose Meta.unknown is RAISE (marshmallow's default), unless its Meta has a
# description (apispec then leaves additionalProperties out): none here has one. Fields that
# are always present are required; `success` is a constant where the answer is a success or an
# error. Where an answer has several shapes, the document lists each (oneOf), told apart by
# required fields and closed schemas.

# Split out to keep each file short; re-exported here, where the views and the OpenAPI document look.
from feature_store.api.catalog_schemas import *  # noqa: E402,F403
from feature_store.api.run_schemas import *  # noqa: E402,F403
from feature_store.api.schema_parts import _COUNTS, _INSTANT, _NULL, _REASONS, _ref, _success  # noqa: E402

_AGE = fields.Integer(required=True, metadata={"description": "seconds since computed_at", "example": 42})
_STALE = fields.Boolean(required=True, metadata={
    "description": "true when the value is older than its feature's max age and is served because the warehouse "
                   "could not recompute it (see the README, Freshness)"})



class FeatureValueSchema(Schema):
    """One value (POST /inference 200, and a successful item of POST /training)."""

    feature_type = fields.String(required=True)
    entity_id = fields.String(required=True, metadata={"description": "as requested (an integer as its decimal "
                                                                      "form)"})
    feature_value = fields.Raw(required=True, allow_none=True, metadata={
        "description": "the value (JSON of the feature's data_type); null when the entity has none"})
    computed_at = fields.String(required=True, metadata={
        "description": "when the value was computed (UTC)", "example": "2025-01-20T12:00:00"})
    age_seconds = _AGE
    stale = _STALE
    as_of = fields.String(metadata={"description": "the item's as_of instant, in UTC (only when it had one)",
                                    **_INSTANT})
    success = _success(True)


class FeatureValueMissingSchema(Schema):
    """An item of POST /training without a value: an unknown feature type, or no such entity."""

    feature_type = fields.String(required=True)
    entity_id = fields.String(required=True)
    feature_value = fields.Raw(required=True, allow_none=True, metadata=_NULL)
    as_of = fields.String(metadata={"description": "the item's as_of instant, in UTC (only when it had one)",
                                    **_INSTANT})
    success = _success(False)
    error = fields.String(required=True, metadata={"example": "no payment_type value: entity '7' does not exist"})
    known_feature_types = fields.List(fields.String(), metadata={"description": "when the feature type is "
                                                                               "unknown: the known ones"})


class FeatureNotFoundSchema(FeatureValueMissingSchema):
    """POST /inference 404 for one feature: as a missing /training item, with the request id."""

    request_id = fields.String(required=True)


class FeatureSetValueSchema(Schema):
    feature_value = fields.Raw(required=True, allow_none=True)
    computed_at = fields.String(required=True)
    age_seconds = _AGE
    stale = _STALE


class FeatureSetValuesSchema(Schema):
    feature_set = fields.String(required=True, metadata={"example": "underwriting_v1"})
    entity_type = fields.String(required=True)
    entity_id = fields.String(required=True)
    as_of = fields.String(metadata={"description": "the request's as_of, in UTC (only when it had one)", **_INSTANT})
    values = fields.Dict(keys=fields.String(), values=fields.Nested(FeatureSetValueSchema), required=True,
                         metadata={"description": "feature type -> its value, for every feature of the set"})
    success = _success(True)


class FeatureSetNotFoundSchema(Schema):
    feature_set = fields.String(required=True)
    entity_type = fields.String(metadata={"description": "when the feature set is known"})
    entity_id = fields.String(required=True)
    as_of = fields.String(metadata={"description": "the request's as_of, in UTC (only when it had one)", **_INSTANT})
    values = fields.Raw(required=True, allow_none=True, metadata=_NULL)
    success = _success(False)
    error = fields.String(required=True)
    known_feature_sets = fields.List(fields.String(), metadata={"description": "when the feature set is unknown: "
                                                                              "the known ones"})
    request_id = fields.String(required=True)


class TrainingResponseSchema(Schema):
    results = fields.List(fields.Raw(metadata=_ref("FeatureValue", "FeatureValueMissing")), required=True,
                          metadata={"description": "one per requested item, in request order"})
    total_requested = fields.Integer(required=True)
    total_successful = fields.Integer(required=True)


class TrainingSetTableSchema(Schema):
    """POST /training-sets as JSON (the other formats have the same columns)."""

    feature_types = fields.List(fields.String(), required=True)
    columns = fields.List(fields.String(), required=True, metadata={
        "description": "entity_id, as_of, the spine's other columns, entity_existed, then one per feature",
        "example": ["entity_id", "as_of", "label", "entity_existed", "user_failed_transaction_count"]})
    total_rows = fields.Integer(required=True)
    rows = fields.List(fields.Dict(keys=fields.String()), required=True, metadata={
        "description": "one object per spine row, in spine order, keyed by the columns: entity_id (string), as_of "
                       "(UTC), the spine's other columns as sent, entity_existed (false: the entity did not exist "
                       "at as_of and its values are null), the features' values"})


class ErrorSchema(Schema):
    success = _success(False)
    error = fields.String(required=True, metadata={"description": "what went wrong, in words"})
    request_id = fields.String(required=True, metadata={"description": "the X-Request-ID of the answer (and of "
                                                                       "its log line)"})


class UnknownFeatureTypeErrorSchema(ErrorSchema):
    known_feature_types = fields.List(fields.String(), required=True)


class JobNotFoundSchema(ErrorSchema):
    job_id = fields.String(metadata={"description": "the job id asked for (absent when the path did not name one: "
                                                    "an id with a slash)"})


class ExtractionFailedSchema(ErrorSchema):
    job_id = fields.String(required=True)
    failed_features = fields.Dict(**_REASONS, required=True, metadata={"description": "feature type -> reason"})
    features_extracted = fields.Dict(**_COUNTS, required=True, metadata={"description": "the features refreshed"})
    total_features = fields.Integer(required=True)


class HealthSchema(Schema):
    status = fields.String(required=True, metadata={"enum": ["ok"]})


class ReadyChecksSchema(Schema):
    redis = fields.String(required=True, metadata={"description": "\"ok\", or what is wrong"})
    warehouse = fields.String(required=True, metadata={"description": "\"ok\", or what is wrong"})


class StreamSchema(Schema):
    slot = fields.String(required=True, metadata={"description": "the replication slot (STREAM_SLOT)"})
    state = fields.String(required=True, allow_none=True, metadata={
        "enum": ["streaming", "idle", "waiting", None],
        "description": "the streaming process's last report (null: none has reported)"})
    reason = fields.String(required=True, allow_none=True, metadata={"description": "why it is idle or waiting"})
    slot_exists = fields.Boolean(required=True, allow_none=True, metadata={
        "description": "whether the warehouse has the slot (null: unknown)"})
    confirmed_lsn = fields.String(required=True, allow_none=True)
    lag_bytes = fields.Integer(required=True, allow_none=True, metadata={
        "description": "WAL written since the slot's confirmed position"})
    lag_seconds = fields.Float(required=True, allow_none=True, metadata={
        "description": "how far the values are behind the committed changes"})
    wal_status = fields.String(required=True, allow_none=True)


class ReadySchema(Schema):
    status = fields.String(required=True, metadata={"enum": ["ready"]})
    checks = fields.Nested(ReadyChecksSchema, required=True)
    workers = fields.Integer(allow_none=True, required=True, metadata={
        "description": "workers listening on the extraction queue (null in embedded mode, or when Redis is down)"})
    queue = fields.String(required=True)
    embedded = fields.Boolean(required=True)
    stream = fields.Nested(StreamSchema, required=True, allow_none=True, metadata={
        "description": "the streaming process's replication slot (null: streaming is not set up)"})


class NotReadySchema(ReadySchema):
    status = fields.String(required=True, metadata={"enum": ["not ready"]})
    success = _success(False)
    error = fields.String(required=True, metadata={"description": "what does not answer"})
    request_id = fields.String(required=True)


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

