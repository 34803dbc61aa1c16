"""Feature versions: a fingerprint derived from what a feature computes, and the recorded history.

A feature's *fingerprint* is computed from its declaration, never written beside it: the SQL of
its batch statement (compiled for SQLite and for PostgreSQL, with its bound constants such as
`'succeeded'`), its value function's source (normalized: comments, formatting and docstrings do
not count, and module-level functions it calls are included), its data type and its entity.
Metadata (name, description) is not part of it: rewording a description is not a new version.

The *history* is `versions.json` beside this file: per feature, the versions in order, each with
its fingerprint and the date it began. It is written by `flask --app wsgi features versions
--record` (which appends a version for every feature whose fingerprint is not its latest), not by
hand; a test fails while a definition has changed without a recorded version.

Every stored value carries the fingerprint that computed it (the `version` field of its hash); a
value of another fingerprint is not served (it is a miss, recomputed; the next run rewrites it).
So a feature's new logic never serves an old value, even before its version is recorded.
"""

from __future__ import annotations

import ast
import hashlib
import inspect
import json
import textwrap
import types
from dataclasses import dataclass
from datetime import date
from functools import cache
from pathlib import Path

from sqlalchemy.dialects import postgresql, sqlite

from feature_store.registry import Feature, Registry
from feature_store.warehouse.statements import Current

HISTORY_PATH = Path(__file__).with_name("versions.json")
FINGERPRINT_LENGTH = 12  # hex digits: 48 bits, for the few definitions one feature ever has
_DIALECTS = (sqlite.dialect(), postgresql.dialect())


@dataclass(frozen=True)
class Version:
    """One recorded version of a feature."""

    version: int
    fingerprint: str
    began: str  # ISO date


def _normalized_source(function) -> str:
    """The function's source without comments, formatting or docstrings (ast round trip); its
    bytecode when the source cannot be read (bytecode differs between Python versions, so the
    source is preferred)."""
    try:
        source = textwrap.dedent(inspect.getsource(function))
    except (OSError, TypeError):
        code = getattr(function, "__code__", None)
        return repr((code.co_code, code.co_consts, code.co_names)) if code is not None else repr(function)
    try:
        tree = ast.parse(source)
    except SyntaxError:  # a lambda cut out of a larger expression
        return source.strip()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(
                    first.value.value, str):
                node.body = node.body[1:] or [ast.Pass()]
    return ast.unparse(tree)


def _value_sources(function, seen: set | None = None) -> list[str]:
    """The normalized source of `function` and of the module-level functions it calls."""
    seen = set() if seen is None else seen
    if function in seen:
        return []
    seen.add(function)
    sources = [_normalized_source(function)]
    code = getattr(function, "__code__", None)
    module_globals = getattr(function, "__globals__", {})
    for name in code.co_names if code is not None else ():
        called = module_globals.get(name)
        if isinstance(called, types.FunctionType) and called.__module__ == function.__module__:
            sources.extend(_value_sources(called, seen))
    return sources


def definition(feature: Feature) -> str:
    """Everything the fingerprint is computed from, as text (for `features versions --show`)."""
    statement = feature.query(Current())
    parts = [f"entity: {feature.entity.entity_type} {feature.entity.table}",
             f"data_type: {feature.data_type.value}"]
    for dialect in _DIALECTS:
        compiled = statement.compile(dialect=dialect)
        parts.append(f"sql[{dialect.name}]: {compiled}")
        parts.append(f"params[{dialect.name}]: {sorted((k, repr(v)) for k, v in compiled.params.items())}")
    parts.extend(f"value: {source}" for source in _value_sources(feature.value))
    return "\n".join(parts)


@cache
def fingerprint(feature: Feature) -> str:
    """The feature's fingerprint: changes whenever what it computes changes."""
    return hashlib.sha256(definition(feature).encode()).hexdigest()[:FINGERPRINT_LENGTH]


def load_history(path: Path | None = None) -> dict[str, list[Version]]:
    """The recorded versions of every feature, oldest first ({} when there is no file)."""
    path = HISTORY_PATH if path is None else path
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    return {feature_type: [Version(**entry) for entry in entries] for feature_type, entries in raw.items()}


def history(feature: Feature, recorded: dict[str, list[Version]] | None = None) -> list[dict]:
    """The feature's versions, oldest first, the current one last. A definition changed since the
    last recorded version is listed as the next version, with `began: null` (not recorded yet)."""
    recorded = load_history() if recorded is None else recorded
    entries = [dict(v.__dict__) for v in recorded.get(feature.feature_type, [])]
    current = fingerprint(feature)
    if not entries or entries[-1]["fingerprint"] != current:
        entries.append({"version": len(entries) + 1, "fingerprint": current, "began": None})
    return entries


def current_versions(registry: Registry) -> dict[str, str]:
    """{feature_type: fingerprint} of every declared feature: what the online store writes with
    each value and requires of a value it serves."""
    return {feature.feature_type: fingerprint(feature) for feature in registry}


def unrecorded(registry: Registry, recorded: dict[str, list[Version]] | None = None) -> list[str]:
    """The features whose current definition is not their latest recorded version."""
    recorded = load_history() if recorded is None else recorded
    return [f.feature_type for f in registry
            if not recorded.get(f.feature_type) or recorded[f.feature_type][-1].fingerprint != fingerprint(f)]


def record(registry: Registry, today: date, path: Path | None = None) -> list[str]:
    """Append a version, beginning `today`, for every feature whose definition is not its latest
    recorded version; returns those features. Versions of features no longer declared stay."""
    path = HISTORY_PATH if path is None else path
    recorded = load_history(path)
    changed = unrecorded(registry, recorded)
    for feature_type in changed:
        entries = recorded.setdefault(feature_type, [])
        entries.append(Version(len(entries) + 1, fingerprint(registry.get(feature_type)), today.isoformat()))
    if changed:
        path.write_text(json.dumps({ft: [v.__dict__ for v in vs] for ft, vs in recorded.items()}, indent=2) + "\n")
    return changed
