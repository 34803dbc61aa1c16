"""The OpenAPI document, generated from the same marshmallow schemas that validate requests (and
from the response schemas beside them), for the app that serves it: its API keys (with keys
configured, the operations carry the security requirement and their 401/403 answers; without, the
API is open and the document says so) and its limits.

Every answer is listed: each status code an operation can give, each body (closed schemas: no
undeclared field) and the headers that come with it. tests/api/test_openapi_conformance.py runs
schemathesis against the served document and fails on any difference.
"""

from __future__ import annotations

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin
from flask import Blueprint, current_app

from config import Config
from feature_store.api import schemas, statistics_schemas
from feature_store.api.access import ADMIN_ENDPOINTS
from feature_store.api.errors import json_response
from feature_store.features import REGISTRY

bp = Blueprint("openapi", __name__, url_prefix="/api/v1")

BASE = "/api/v1/features"
JSON = "application/json"
SECURITY = [{"ApiKey": []}, {"Bearer": []}]

# Components registered from marshmallow schemas (name -> class).
SCHEMAS = {
    "FeatureRequest": schemas.FeatureRequestSchema, "FeatureSetRequest": schemas.FeatureSetRequestSchema,
    "TrainingRequest": schemas.TrainingRequestSchema, "ExtractRequest": schemas.ExtractRequestSchema,
    # Nested ones before the schemas that nest them (apispec would register them under these names).
    "LineageStep": schemas.LineageStepSchema, "LineageEntity": schemas.LineageEntitySchema,
    "Lineage": schemas.LineageSchema, "LineageReader": schemas.LineageReaderSchema,
    "LineageReaders": schemas.LineageReadersSchema,
    "Feature": schemas.FeatureSchema, "FeatureSet": schemas.FeatureSetSchema,
    "FeatureValue": schemas.FeatureValueSchema, "FeatureValueMissing": schemas.FeatureValueMissingSchema,
    "FeatureNotFound": schemas.FeatureNotFoundSchema, "FeatureSetValue": schemas.FeatureSetValueSchema,
    "FeatureSetValues": schemas.FeatureSetValuesSchema, "FeatureSetNotFound": schemas.FeatureSetNotFoundSchema,
    "TrainingResponse": schemas.TrainingResponseSchema, "TrainingSetTable": schemas.TrainingSetTableSchema,
    "ExtractionResult": schemas.ExtractionResultSchema, "ExtractionAccepted": schemas.ExtractionAcceptedSchema,
    **statistics_schemas.SCHEMAS,
    "RunResult": schemas.RunResultSchema, "RunPending": schemas.RunPendingSchema,
    "RunFinished": schemas.RunFinishedSchema, "RunFailed": schemas.RunFailedSchema,
    "RunEndedSummary": schemas.RunEndedSummarySchema, "RunList": schemas.RunListSchema,
    "ParityDisagreement": schemas.ParityDisagreementSchema, "FeatureParity": schemas.FeatureParitySchema,
    "ParityReport": schemas.ParityReportSchema, "Error": schemas.ErrorSchema,
    "UnknownFeatureTypeError": schemas.UnknownFeatureTypeErrorSchema, "JobNotFound": schemas.JobNotFoundSchema,
    "ExtractionFailed": schemas.ExtractionFailedSchema, "Health": schemas.HealthSchema,
    "ReadyChecks": schemas.ReadyChecksSchema, "Ready": schemas.ReadySchema, "NotReady": schemas.NotReadySchema,
}


def _ref(name: str, kind: str = "schemas") -> dict:
    return {"$ref": f"#/components/{kind}/{name}"}


def _one_of(*names: str) -> dict:
    return {"oneOf": [_ref(name) for name in names]} if len(names) > 1 else _ref(names[0])


def _answer(description: str, *names: str, media: str = JSON, schema: dict | None = None,
            headers: dict | None = None) -> dict:
    """A response: its body (one of the named schemas, or `schema`) and its headers (X-Request-ID
    on every answer)."""
    response = {"description": description,
                "headers": {"X-Request-ID": _ref("RequestId", "headers"), **(headers or {})}}
    if names or schema is not None:
        response["content"] = {media: {"schema": schema if schema is not None else _one_of(*names)}}
    return response


def _feature_types_query(description: str) -> dict:
    """A comma-separated list of feature types in the query (only declared ones: else 400)."""
    return {"name": "feature_types", "in": "query", "required": False, "style": "form", "explode": False,
            "description": f"{description}; comma-separated", "example": ["payment_type"],
            "schema": {"type": "array", "items": {"type": "string", "enum": REGISTRY.feature_types()}}}


def _spine_row() -> dict:
    entity_columns = sorted({feature.entity.entity_type for feature in REGISTRY})
    return {
        "type": "object",
        "description": "one training example: the entity (entity_id, or the entity type's own column such as "
                       f"{entity_columns[0]}), its instant (as_of) and any other columns, passed through to the "
                       "table; every row has the first row's columns",
        "properties": {"entity_id": {"oneOf": [{"type": "string"}, {"type": "integer"}]},
                       **{column: {"oneOf": [{"type": "string"}, {"type": "integer"}]} for column in entity_columns},
                       "as_of": {**schemas.INSTANT_DOC, "description": "the row's instant (UTC unless Z or an "
                                                                       "offset)"}},
        "required": ["as_of"],
        "anyOf": [{"required": ["entity_id"]}, *({"required": [column]} for column in entity_columns)],
        "additionalProperties": True,
    }


class _Document:
    """Builds the document of one configuration."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.keys = bool(config.API_KEYS_READ or config.API_KEYS_ADMIN)

    def operation(self, summary: str, op_id: str, tag: str, responses: dict, *, endpoint: str,
                  description: str | None = None, parameters: list | None = None,
                  body: dict | None = None) -> dict:
        """The operation of the Flask view `endpoint`: its responses with the ones every operation
        of its kind can give (405, 500; 401, and 403 for the admin scope, when keys are configured).
        Its scope is the one access.py enforces: the features blueprint needs a key (admin for
        ADMIN_ENDPOINTS), the rest is public."""
        scope = "admin" if endpoint in ADMIN_ENDPOINTS else "read" if endpoint.startswith("features.") else None
        answers = dict(responses)
        answers.setdefault("405", _ref("MethodNotAllowed", "responses"))
        answers.setdefault("500", _ref("InternalError", "responses"))
        operation: dict = {"summary": summary, "operationId": op_id, "tags": [tag]}
        if self.keys and scope is not None:
            answers["401"] = _ref("Unauthorized", "responses")
            if scope == "admin":
                answers["403"] = _ref("Forbidden", "responses")
            operation["security"] = SECURITY
        elif self.keys:
            operation["security"] = []  # public, like the probes and the documentation
        scope_text = {None: "Public: no API key.", "read": "API key scope: read (or admin).",
                      "admin": "API key scope: admin."}[scope]
        if not self.keys:
            scope_text = "Open: this deployment configures no API keys." if scope else scope_text
        operation["description"] = f"{description}\n\n{scope_text}" if description else scope_text
        if scope is not None:
            operation["x-api-key-scope"] = scope
        operation["parameters"] = ["RequestId", *(parameters or [])]  # apispec: a name is a $ref
        if body is not None:
            operation["requestBody"] = body
        operation["responses"] = dict(sorted(answers.items()))
        return operation

    def info_description(self) -> str:
        config = self.config
        access = ("API keys are required: send one as `X-API-Key: <key>` or `Authorization: Bearer <key>`. A read "
                  "key calls discovery, feature sets, inference, training and training sets; an admin key also "
                  "extraction and parity. A missing or unknown key is 401 (with `WWW-Authenticate`), a read key "
                  "on an admin operation 403." if self.keys else
                  "This deployment configures no API keys: every operation is open. (With API_KEYS_READ or "
                  "API_KEYS_ADMIN set, operations need `X-API-Key: <key>` or `Authorization: Bearer <key>`, "
                  "and this document lists their 401 and 403 answers.)")
        return (
            "Features computed once from the warehouse, served from Redis.\n\n"
            f"{access}\n\n"
            "Every answer carries `X-Request-ID` (the caller's, when it is 1 to 128 of `A-Za-z0-9._-`; else a "
            "new one), and every error body is `{\"success\": false, \"error\": \"...\", \"request_id\": "
            "\"...\"}` with, for some, the fields its schema lists. Request bodies are read as JSON whatever "
            "their Content-Type says (POST /training-sets also reads CSV and NDJSON, by Content-Type), so no "
            "operation answers 415. 408 (a body that stops arriving for "
            f"{config.REQUEST_BODY_TIMEOUT:g} s, REQUEST_BODY_TIMEOUT) happens under gunicorn only. A path "
            "asked with a method it does not serve is 405, with `Allow`; HEAD and OPTIONS are answered for "
            "every path (OPTIONS: `{\"success\": true, \"allowed_methods\": [...]}`; under "
            f"{BASE}, with keys configured, they need a key as the path's operations do); any other path "
            "is 404 with an error body.")

    def build(self) -> dict:
        spec = APISpec(
            title="Feature store", version="1.0.0", openapi_version="3.0.3",
            plugins=[MarshmallowPlugin()], info={"description": self.info_description()},
            tags=[{"name": "features", "description": "the catalog and the values"},
                  {"name": "extraction", "description": "refreshing the values from the warehouse, and checking "
                                                        "them"},
                  {"name": "ops", "description": "probes and metrics (public)"},
                  {"name": "docs", "description": "this document and its interactive page (public)"}],
        )
        for name, schema in SCHEMAS.items():
            spec.components.schema(name, schema=schema)
        if self.keys:
            spec.components.security_scheme("ApiKey", {
                "type": "apiKey", "in": "header", "name": "X-API-Key",
                "description": "a read or admin key (API_KEYS_READ, API_KEYS_ADMIN)"})
            spec.components.security_scheme("Bearer", {
                "type": "http", "scheme": "bearer", "description": "the same keys, as `Authorization: Bearer <key>`"})
        self.components(spec)
        self.paths(spec)
        document = spec.to_dict()
        # Only declared feature types are accepted (400 names the known ones).
        extract = document["components"]["schemas"]["ExtractRequest"]["properties"]["feature_types"]
        extract["items"]["enum"] = REGISTRY.feature_types()
        return document

    def components(self, spec: APISpec) -> None:
        config = self.config
        string = {"type": "string"}
        spec.components.header("RequestId", {"description": "the request's id, also in its log line (and in an "
                                                            "error body's request_id)",
                                             "required": True, "schema": string})
        spec.components.parameter("RequestId", "header", {
            "name": "X-Request-ID", "required": False, "schema": string,
            "description": "your id for this request: kept when it is 1 to 128 of A-Za-z0-9._- (else replaced), "
                           "and sent back in X-Request-ID"})
        error = _answer
        responses = {
            "Unauthorized": error("no API key, or an unknown one", "Error", headers={"WWW-Authenticate": {
                "description": "the scheme to use: `ApiKey header=\"X-API-Key\"`", "required": True,
                "schema": string}}),
            "Forbidden": error("a read key on an operation that needs the admin scope", "Error"),
            "MethodNotAllowed": error("this path does not serve the method sent (OpenAPI has no place for the "
                                      "answer of a method a path does not declare, so each operation lists it)",
                                      "Error", headers={"Allow": {"description": "the methods the path serves",
                                                                  "required": True, "schema": string}}),
            "InternalError": error("an unexpected error (a defect): the body says only `internal error`; the log "
                                   "has the details under the request id", "Error"),
            "BodyTimeout": error(f"the request body stopped arriving for {config.REQUEST_BODY_TIMEOUT:g} s "
                                 "(REQUEST_BODY_TIMEOUT; under gunicorn only)", "Error"),
            "Unavailable": error("the online store (Redis) or the warehouse is down or not answering (within about "
                                 "a second)", "Error"),
            "WarehouseData": error("the warehouse holds a row the feature cannot read (a malformed timestamp, "
                                   "say): the error names the feature", "Error"),
        }
        for name, response in responses.items():
            spec.components.response(name, response)

    def paths(self, spec: APISpec) -> None:
        config = self.config
        body_too_large = f"the body is larger than {config.MAX_CONTENT_LENGTH} bytes (MAX_CONTENT_LENGTH)"
        bad = "malformed request: the error says what is wrong (an empty body, not JSON, nested too deeply, or " \
              "the field, e.g. `entity_id: must be a string or an integer`)"
        timeout = _ref("BodyTimeout", "responses")
        unavailable = _ref("Unavailable", "responses")
        warehouse_data = _ref("WarehouseData", "responses")

        spec.path(path=f"{BASE}/discovery", operations={"get": self.operation(
            "List every feature with its metadata", "discovery", "features", endpoint="features.discover",
            responses={"200": _answer("the catalog, in declaration order",
                                      schema={"type": "array", "items": _ref("Feature")})})})
        spec.path(path=f"{BASE}/lineage", operations={"get": self.operation(
            "List the features that read a warehouse table or column", "lineage", "features",
            endpoint="features.lineage_readers",
            description="Derived from each feature's statement (see discovery's lineage field): each feature "
                        "with the table's columns it reads and their roles, and how the table's rows reach its "
                        "entity.",
            parameters=[{"name": "table", "in": "query", "required": True, "example": "policies",
                         "schema": {"type": "string"}},
                        {"name": "column", "in": "query", "required": False, "example": "user_id",
                         "schema": {"type": "string"}, "description": "only the features that read this column"}],
            responses={"200": _answer("the features that read it (none is an empty list)", "LineageReaders"),
                       "400": _answer("table is missing or empty, or column is empty", "Error"),
                       "404": _answer("no such table in the warehouse, or no such column of it", "Error")})})
        spec.path(path=f"{BASE}/feature-sets", operations={"get": self.operation(
            "List the named feature sets", "featureSets", "features", endpoint="features.feature_sets",
            responses={"200": _answer("the feature sets, in declaration order",
                                      schema={"type": "array", "items": _ref("FeatureSet")})})})
        spec.path(path=f"{BASE}/inference", operations={"post": self.operation(
            "Get one feature value (or a feature set's values) for real-time inference", "inference", "features",
            endpoint="features.inference",
            description="A value that is not cached is computed from the warehouse for that entity, stored and "
                        "returned; with as_of, the value as of that instant. A body with feature_set (and no "
                        "feature_type) asks for a feature set's values.",
            body={"required": True, "content": {JSON: {
                "schema": {"anyOf": [_ref("FeatureRequest"), _ref("FeatureSetRequest")]},
                "examples": {
                    "feature": {"value": {"feature_type": "user_failed_transaction_count", "entity_id": "3"}},
                    "as_of": {"value": {"feature_type": "user_failed_transaction_count", "entity_id": 3,
                                        "as_of": "2024-10-01T00:00:00Z"}},
                    "feature_set": {"value": {"feature_set": "underwriting_v1", "entity_id": 3}}}}}},
            responses={
                "200": _answer("the value (or the feature set's values)", "FeatureValue", "FeatureSetValues"),
                "400": _answer(bad, "Error"),
                "404": _answer("unknown feature type (known_feature_types lists the known ones) or feature set "
                               "(known_feature_sets), or the entity does not exist (at as_of)",
                               "FeatureNotFound", "FeatureSetNotFound"),
                "408": timeout, "413": _answer(body_too_large, "Error"),
                "502": warehouse_data, "503": unavailable})})
        spec.path(path=f"{BASE}/training", operations={"post": self.operation(
            "Get many feature values at once, in request order", "training", "features", endpoint="features.training",
            description="Cached values are read in one Redis round trip; the misses are computed with one warehouse "
                        "query per feature type. An item may carry as_of (point-in-time value). At most "
                        f"{config.TRAINING_MAX_ITEMS} items (TRAINING_MAX_ITEMS).",
            body={"required": True, "content": {JSON: {"schema": _ref("TrainingRequest"), "example": {"features": [
                {"feature_type": "user_failed_transaction_count", "entity_id": 42},
                {"feature_type": "payment_type", "entity_id": "7", "as_of": "2025-03-01T00:00:00"}]}}}},
            responses={
                "200": _answer("one answer per item, in request order (an item without a value says why)",
                               "TrainingResponse"),
                "400": _answer(bad + "; an item's error names it: `features[1].entity_id: ...`", "Error"),
                "408": timeout,
                "413": _answer(f"more than {config.TRAINING_MAX_ITEMS} items, or {body_too_large}", "Error"),
                "502": warehouse_data,
                "503": _answer("Redis or the warehouse is down (a request with any value to compute fails as a "
                               "whole while the warehouse is)", "Error")})})
        self.training_sets(spec, body_too_large)
        self.extraction(spec, body_too_large)
        self.statistics(spec)
        spec.path(path=f"{BASE}/parity", operations={"get": self.operation(
            "Check training/serving parity", "parity", "extraction", endpoint="features.parity",
            description="Samples stored values per feature and recomputes each as of its own computed_at through "
                        "the as-of path: how many agree, and the disagreements.",
            parameters=[
                {"name": "sample", "in": "query", "required": False, "description": "stored values per feature",
                 "schema": {"type": "integer", "minimum": 1, "maximum": 10000, "default": 100}},
                _feature_types_query("the features to check (default: every feature)"),
                {"name": "window", "in": "query", "required": False,
                 "description": "seconds after its computed_at within which a value also agrees (it was read a "
                                "little after)",
                 "schema": {"type": "integer", "minimum": 0, "maximum": 999999, "default": 60}}],
            responses={"200": _answer("the report", "ParityReport"),
                       "400": _answer("sample is not a whole number from 1 to 10000, window not a whole number of "
                                      "seconds, or a feature type is unknown (known_feature_types lists the known "
                                      "ones)", "Error", "UnknownFeatureTypeError"),
                       "502": warehouse_data, "503": unavailable})})
        self.public(spec)

    def training_sets(self, spec: APISpec, body_too_large: str) -> None:
        config = self.config
        feature_sets = [feature_set.name for feature_set in REGISTRY.feature_sets()]
        text = {"type": "string"}
        spine_text = ("the spine as text; the columns (feature_set or feature_types) come from the query. ")
        spec.path(path=f"{BASE}/training-sets", operations={"post": self.operation(
            "Build a training set: values as of each spine row's instant, as a table", "trainingSet", "features",
            endpoint="features.training_set",
            description="The spine (JSON, CSV or NDJSON, by Content-Type) is validated while it is spooled to disk, "
                        "then the table is computed a chunk at a time and streamed. Columns: entity_id, as_of, the "
                        "spine's other columns, entity_existed, one per feature. The format is `format`, else the "
                        "Accept header's (text/csv, application/x-ndjson, application/vnd.apache.parquet or "
                        "application/x-parquet, application/json), else JSON. An error once the table has started "
                        "cuts it short (the status is already sent). At most "
                        f"{config.TRAINING_SET_MAX_ROWS} rows (TRAINING_SET_MAX_ROWS); a CSV or NDJSON spine at most "
                        f"{config.TRAINING_SET_MAX_BYTES} bytes (TRAINING_SET_MAX_BYTES), a JSON one "
                        f"{config.MAX_CONTENT_LENGTH} (MAX_CONTENT_LENGTH).",
            parameters=[
                {"name": "format", "in": "query", "required": False, "description": "the table's format "
                 "(case-insensitive; default: from Accept, else json)",
                 "schema": {"type": "string", "enum": ["json", "ndjson", "csv", "parquet"]}},
                {"name": "feature_set", "in": "query", "required": False,
                 "schema": {"type": "string", "enum": feature_sets},
                 "description": "CSV and NDJSON spines: the columns, by feature set (this or feature_types, not "
                                "both)"},
                _feature_types_query("CSV and NDJSON spines: the columns, by feature type (this or feature_set, "
                                     "not both)")],
            body={"required": True, "content": {
                JSON: {"schema": {
                    "type": "object",
                    "properties": {
                        "feature_set": {"type": "string", "enum": feature_sets,
                                        "description": "the columns, by feature set"},
                        "feature_types": {"type": "array", "minItems": 1, "uniqueItems": True,
                                          "items": {"type": "string", "enum": REGISTRY.feature_types()},
                                          "description": "the columns, by feature type (of one entity type)"},
                        "spine": {"type": "array", "items": _spine_row(), "minItems": 1}},
                    "required": ["spine"],
                    "oneOf": [{"required": ["feature_set"]}, {"required": ["feature_types"]}]},
                    "example": {"feature_set": "underwriting_v1", "spine": [
                        {"entity_id": 3, "as_of": "2024-10-01T00:00:00Z", "label": 1}]}},
                **{media: {"schema": {**text, "description": spine_text + "A header entity_id (or the entity "
                                      "type's column),as_of[,other columns], then one row per line."},
                           "example": "entity_id,as_of,label\n3,2024-10-01T00:00:00Z,1\n"}
                   for media in ("text/csv", "application/csv")},
                **{media: {"schema": {**text, "description": spine_text + "One JSON object per line, as the JSON "
                                      "spine's rows."},
                           "example": '{"entity_id": 3, "as_of": "2024-10-01T00:00:00Z", "label": 1}\n'}
                   for media in ("application/x-ndjson", "application/jsonl", "application/ndjson")}}},
            responses={
                "200": {"description": "the table: one row per spine row, in spine order",
                        "headers": {"X-Request-ID": _ref("RequestId", "headers"),
                                    "X-Total-Rows": {"description": "the table's row count", "required": True,
                                                     "schema": {"type": "integer", "minimum": 1}},
                                    "X-As-Of-Indexed": {"description": "the features whose values were read from "
                                                        "their as-of index (comma-separated; empty: every one "
                                                        "ran its statements)", "required": True,
                                                        "schema": {"type": "string"}}},
                        "content": {
                            JSON: {"schema": _ref("TrainingSetTable")},
                            "application/x-ndjson": {"schema": {**text, "description": "one JSON object per row "
                                                                "and line, as the JSON table's rows"}},
                            "text/csv": {"schema": {**text, "description": "a header of the columns, then one line "
                                                    "per row (true/false; an empty field for null)"}},
                            "application/vnd.apache.parquet": {"schema": {**text, "format": "binary"}}}},
                "400": _answer("a malformed spine (the error names the row and column), neither or both of "
                               "feature_set and feature_types, an unknown feature or feature set, features of "
                               "several entity types, invalid CSV, JSON or UTF-8, or an unknown format", "Error"),
                "408": _ref("BodyTimeout", "responses"),
                "413": _answer("too many spine rows, or the spine is too large (" + body_too_large + " for JSON)",
                               "Error"),
                "502": _ref("WarehouseData", "responses"), "503": _ref("Unavailable", "responses")})})

    def extraction(self, spec: APISpec, body_too_large: str) -> None:
        config = self.config
        job_id = {"name": "job_id", "in": "path", "required": True, "schema": {"type": "string"},
                  "example": "extract-3f0c2b9e"}
        spec.path(path=f"{BASE}/extract", operations={"post": self.operation(
            "Run batch extraction of every feature, or of some, into the online store", "startExtraction",
            "extraction", endpoint="features.extract",
            description="Starts a run (an RQ job), or joins the one in progress when it refreshes what is asked, "
                        f"and waits for it up to {config.EXTRACT_WAIT_SECONDS:g} s (EXTRACT_WAIT_SECONDS): 200 when "
                        "it finished, 500 when it failed, 202 when it is still running (or wait=false, or no "
                        "worker listens).",
            parameters=[{"name": "wait", "in": "query", "required": False,
                         "schema": {"type": "string", "enum": ["true", "false"], "default": "true"},
                         "description": "false: answer 202 at once with the job id (case-insensitive)"}],
            body={"required": False, "description": "none, or an empty body: every feature",
                  "content": {JSON: {"schema": _ref("ExtractRequest")}}},
            responses={
                "200": _answer("the run finished", "ExtractionResult"),
                "202": _answer("the run is queued or running (at once when no worker listens, with a warning)",
                               "ExtractionAccepted", headers={"Location": {
                                   "description": "the run's status URL (status_url)", "required": True,
                                   "schema": {"type": "string", "format": "uri"}}}),
                "400": _answer("a wait other than true or false, a malformed body, or unknown feature_types "
                               "(known_feature_types lists the known ones)", "Error", "UnknownFeatureTypeError"),
                "408": _ref("BodyTimeout", "responses"), "413": _answer(body_too_large, "Error"),
                "500": _answer("the run failed (some or every feature: ExtractionFailed), or an unexpected error "
                               "(Error, `internal error`)", "ExtractionFailed", "Error"),
                "503": _ref("Unavailable", "responses")}), "get": self.operation(
            "List extraction runs, newest first", "listExtractions", "extraction", endpoint="features.extraction_runs",
            parameters=[{"name": "limit", "in": "query", "required": False,
                         "schema": {"type": "integer", "minimum": 1, "maximum": 100, "default": 20}}],
            responses={"200": _answer("the runs still kept (EXTRACT_JOB_TTL)", "RunList"),
                       "400": _answer("limit is not a whole number from 1 to 100", "Error"),
                       "503": _ref("Unavailable", "responses")})})
        spec.path(path=f"{BASE}/extract/{{job_id}}", operations={"get": self.operation(
            "Get an extraction run's status, result or error", "getExtraction", "extraction",
            endpoint="features.extraction_status",
            parameters=[job_id],
            responses={"200": _answer("the run: queued or started, finished (its result), or failed (why)",
                                      "RunPending", "RunFinished", "RunFailed"),
                       "404": _answer("no such run (unknown, or expired)", "JobNotFound"),
                       "503": _ref("Unavailable", "responses")})})

    def statistics(self, spec: APISpec) -> None:
        spec.path(path=f"{BASE}/statistics", operations={"get": self.operation(
            "Get every feature's statistics from its last extraction run, with its drift", "statisticsOverview",
            "extraction", endpoint="features.statistics_latest",
            responses={"200": _answer("each feature's last statistics (null before its first run)",
                                      "StatisticsOverview"),
                       "503": _ref("Unavailable", "responses")})})
        spec.path(path=f"{BASE}/statistics/{{feature_type}}", operations={"get": self.operation(
            "Get a feature's statistics: its last extraction run's and its history, newest first",
            "featureStatistics", "extraction", endpoint="features.feature_statistics",
            description="Computed by every extraction run from the values it writes: count, nulls, distinct "
                        "values, and for numbers and datetimes min, max, mean, quantiles and a histogram, for "
                        "strings the top values; drift (PSI, KS) against the previous run. "
                        f"The last {self.config.STATISTICS_HISTORY} runs are kept (STATISTICS_HISTORY).",
            parameters=[{"name": "feature_type", "in": "path", "required": True,
                         "schema": {"type": "string"}, "example": "user_failed_transaction_count"},
                        {"name": "limit", "in": "query", "required": False, "description": "runs of history",
                         "schema": {"type": "integer", "minimum": 1, "maximum": 1000}}],
            responses={"200": _answer("the statistics", "FeatureStatistics"),
                       "400": _answer("limit is not a whole number from 1 to 1000", "Error"),
                       "404": _answer("unknown feature type (known_feature_types lists the known ones)",
                                      "UnknownFeatureTypeError"),
                       "503": _ref("Unavailable", "responses")})})

    def public(self, spec: APISpec) -> None:
        spec.path(path="/health", operations={"get": self.operation(
            "Liveness: the web process serves", "health", "ops", endpoint="ops.health",
            responses={"200": _answer("serving", "Health")})})
        spec.path(path="/ready", operations={"get": self.operation(
            "Readiness: Redis and the warehouse answer", "ready", "ops", endpoint="ops.ready",
            responses={"200": _answer("ready", "Ready"),
                       "503": _answer("not ready: names what does not answer", "NotReady")})})
        spec.path(path="/metrics", operations={"get": self.operation(
            "Prometheus metrics of every web process together, and of the store", "metrics", "ops",
            endpoint="ops.prometheus_metrics",
            responses={"200": _answer("the exposition (Prometheus text format)", media="text/plain",
                                      schema={"type": "string"})})})
        spec.path(path="/api/v1/openapi.json", operations={"get": self.operation(
            "This document", "openapi", "docs", endpoint="openapi.openapi_document",
            responses={"200": _answer("the OpenAPI document", schema={"type": "object"})})})
        spec.path(path="/docs/", operations={"get": self.operation(
            "Interactive documentation (Swagger UI, served from the app's own files)", "docs", "docs",
            endpoint="swagger_ui.show",
            description="GET /docs redirects here (308).",
            responses={"200": _answer("the page", media="text/html", schema={"type": "string"})})})


def build_spec(config: Config | None = None) -> dict:
    """The OpenAPI document for `config` (default: the environment's)."""
    return _Document(config or Config.from_env()).build()


@bp.get("/openapi.json")
def openapi_document():
    """The OpenAPI document of this API (built once per app, for its configuration)."""
    document = current_app.extensions.get("feature_store_openapi")
    if document is None:
        document = build_spec(current_app.extensions["feature_store"].config)
        current_app.extensions["feature_store_openapi"] = document
    return json_response(document)
