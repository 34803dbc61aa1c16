"""The OpenAPI document, generated from the same marshmallow schemas that validate requests."""

from __future__ import annotations

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin
from flask import Blueprint

from feature_store.api import schemas
from feature_store.api.errors import json_response

bp = Blueprint("openapi", __name__, url_prefix="/api/v1")

BASE = "/api/v1/features"


def _error(description: str) -> dict:
    return {"description": description, "content": {"application/json": {"schema": "Error"}}}


def _ok(description: str, schema) -> dict:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def build_spec() -> dict:
    spec = APISpec(
        title="Feature store", version="1.0.0", openapi_version="3.0.3",
        plugins=[MarshmallowPlugin()],
        info={"description": "Features computed once from the warehouse, served from Redis."},
        components={"securitySchemes": {"ApiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"}}},
    )
    for name, schema in [
        ("FeatureRequest", schemas.FeatureRequestSchema), ("TrainingRequest", schemas.TrainingRequestSchema),
        ("Feature", schemas.FeatureSchema), ("FeatureValue", schemas.FeatureValueSchema),
        ("TrainingResponse", schemas.TrainingResponseSchema), ("ExtractionResult", schemas.ExtractionResultSchema),
        ("ExtractionAccepted", schemas.ExtractionAcceptedSchema), ("ExtractionStatus", schemas.ExtractionStatusSchema),
        ("ExtractRequest", schemas.ExtractRequestSchema), ("RunList", schemas.RunListSchema),
        ("ExtractionFailed", schemas.ExtractionFailedSchema), ("Health", schemas.HealthSchema),
        ("Ready", schemas.ReadySchema), ("Error", schemas.ErrorSchema),
        ("FeatureSetRequest", schemas.FeatureSetRequestSchema), ("FeatureSet", schemas.FeatureSetSchema),
        ("FeatureSetValues", schemas.FeatureSetValuesSchema),
    ]:
        spec.components.schema(name, schema=schema)

    unavailable = _error("the online store or the warehouse is unreachable")
    spec.path(path=f"{BASE}/discovery", operations={"get": {
        "summary": "List every feature with its metadata",
        "responses": {"200": _ok("the catalog", {"type": "array", "items": {"$ref": "#/components/schemas/Feature"}})},
    }})
    spec.path(path=f"{BASE}/feature-sets", operations={"get": {
        "summary": "List the named feature sets",
        "responses": {"200": _ok("the feature sets", {"type": "array",
                                                      "items": {"$ref": "#/components/schemas/FeatureSet"}})},
    }})
    spec.path(path=f"{BASE}/inference", operations={"post": {
        "summary": "Get one feature value (or a feature set's values) for real-time inference",
        "requestBody": {"required": True, "content": {"application/json": {"schema": {"oneOf": [
            {"$ref": "#/components/schemas/FeatureRequest"}, {"$ref": "#/components/schemas/FeatureSetRequest"}]}}}},
        "responses": {"200": {"description": "the value (or the feature set's values)", "content": {
                          "application/json": {"schema": {"oneOf": [
                              {"$ref": "#/components/schemas/FeatureValue"},
                              {"$ref": "#/components/schemas/FeatureSetValues"}]}}}},
                      "400": _error("malformed request"),
                      "404": {"description": "unknown feature type or feature set, or the entity does not exist",
                              "content": {"application/json": {"schema": {"oneOf": [
                                  {"$ref": "#/components/schemas/FeatureValue"},
                                  {"$ref": "#/components/schemas/FeatureSetValues"}]}}}},
                      "413": _error("body too large"), "503": unavailable},
    }})
    spec.path(path=f"{BASE}/training", operations={"post": {
        "summary": "Get many feature values at once, in request order",
        "requestBody": {"required": True, "content": {"application/json": {"schema": "TrainingRequest"}}},
        "responses": {"200": _ok("one answer per item", "TrainingResponse"), "400": _error("malformed request"),
                      "413": _error("too many items or body too large"), "503": unavailable},
    }})
    spec.path(path=f"{BASE}/extract", operations={"post": {
        "summary": "Run batch extraction of every feature, or of some, into the online store",
        "parameters": [{"name": "wait", "in": "query", "required": False,
                        "schema": {"type": "string", "enum": ["true", "false"]},
                        "description": "false: answer 202 at once with the job id (case-insensitive)"}],
        "requestBody": {"required": False, "content": {"application/json": {"schema": "ExtractRequest"}}},
        "responses": {"200": _ok("extraction finished", "ExtractionResult"),
                      "202": _ok("extraction queued or running (at once when no worker listens)",
                                 "ExtractionAccepted"),
                      "400": _error("bad wait parameter, or malformed or unknown feature_types"),
                      "500": _ok("the extraction failed (some or every feature)", "ExtractionFailed"),
                      "503": unavailable},
    }, "get": {
        "summary": "List extraction runs, newest first",
        "parameters": [{"name": "limit", "in": "query", "required": False,
                        "schema": {"type": "integer", "minimum": 1, "maximum": 100, "default": 20}}],
        "responses": {"200": _ok("the runs still kept", "RunList"), "400": _error("bad limit"),
                      "503": unavailable},
    }})
    spec.path(path=f"{BASE}/extract/{{job_id}}", operations={"get": {
        "summary": "Get an extraction run's status, result or error",
        "parameters": [{"name": "job_id", "in": "path", "required": True, "schema": {"type": "string"}}],
        "responses": {"200": _ok("the run", "ExtractionStatus"), "404": _error("no such job"),
                      "503": unavailable},
    }})
    table = {"description": "one row per spine row: entity_id, as_of, the spine's other columns, entity_existed, "
                            "one column per feature (X-Total-Rows: the row count)",
             "content": {"application/json": {"schema": {"type": "object"}}, "application/x-ndjson": {},
                         "text/csv": {}, "application/vnd.apache.parquet": {}}}
    spec.path(path=f"{BASE}/training-sets", operations={"post": {
        "summary": "Build a training set: values as of each spine row's instant, as a table",
        "parameters": [
            {"name": "format", "in": "query", "required": False,
             "schema": {"type": "string", "enum": ["json", "ndjson", "csv", "parquet"]},
             "description": "the table's format (default: from Accept, else json)"},
            {"name": "feature_set", "in": "query", "required": False, "schema": {"type": "string"},
             "description": "CSV and NDJSON spines: the columns, by feature set"},
            {"name": "feature_types", "in": "query", "required": False, "schema": {"type": "string"},
             "description": "CSV and NDJSON spines: the columns, comma-separated feature types"}],
        "requestBody": {"required": True, "content": {
            "application/json": {"schema": {"type": "object", "properties": {
                "feature_set": {"type": "string"}, "feature_types": {"type": "array", "items": {"type": "string"}},
                "spine": {"type": "array", "items": {"type": "object"}}}}},
            "text/csv": {"schema": {"type": "string", "description": "header entity_id,as_of[,...]"}},
            "application/x-ndjson": {"schema": {"type": "string", "description": "one JSON row per line"}}}},
        "responses": {"200": table, "400": _error("malformed spine, unknown or mixed features, bad format"),
                      "408": _error("the spine did not arrive in time"),
                      "413": _error("too many spine rows, or the spine is too large"), "503": unavailable},
    }})
    spec.path(path="/health", operations={"get": {
        "summary": "Liveness: the web process serves", "responses": {"200": _ok("serving", "Health")}}})
    spec.path(path="/ready", operations={"get": {
        "summary": "Readiness: Redis and the warehouse answer",
        "responses": {"200": _ok("ready", "Ready"), "503": _ok("not ready: names what does not answer", "Ready")},
    }})
    return spec.to_dict()


@bp.get("/openapi.json")
def openapi_document():
    """The OpenAPI document of this API."""
    return json_response(build_spec())
