"""Small pieces the response schemas share (api/schemas.py and the modules split out of it)."""

from __future__ import annotations

from marshmallow import fields

_INSTANT = {"example": "2025-03-01T00:00:00"}
_NULL = {"enum": [None], "description": "always null here"}
_COUNTS = {"keys": fields.String(), "values": fields.Integer()}
_REASONS = {"keys": fields.String(), "values": fields.String()}


def _success(value: bool) -> fields.Boolean:
    return fields.Boolean(required=True, metadata={"enum": [value]})


def _ref(*names: str) -> dict:
    return {"oneOf": [{"$ref": f"#/components/schemas/{name}"} for name in names]}
