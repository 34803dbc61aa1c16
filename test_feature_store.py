#!/usr/bin/env python3
"""Check a running feature store over HTTP: discovery, extraction, inference and training, with
their answers checked against the contract.

    python test_feature_store.py [--url http://localhost:25000] [--api-key KEY]

Prints one line per check (PASS, FAIL or SKIP, the check's name, then what was seen) and a
summary; exits 1 when any check failed, 0 otherwise. It only talks HTTP (requests), so it runs
against any deployment: embedded mode (./run.sh), gunicorn + rq workers, or a remote host.

Entity ids: POST /extract counts the entities of each feature; the demo warehouse numbers its
rows 1..N, so ids 1 and N of each entity type are looked up. For a warehouse numbered otherwise,
name ids that exist with --entity-id (e.g. --entity-id user_id=42 --entity-id quote_id=7).

This is a script, not a pytest module: it defines no test functions (tests/integration/
test_smoke_script.py runs it against a real deployment).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from datetime import datetime

import requests

API = "/api/v1/features"

# The four features of the contract: feature_type -> (entity_type, data_type).
FEATURES = {
    "user_policy_time_of_purchase": ("user_id", "datetime"),
    "quote_creation_to_binding_time": ("quote_id", "integer"),
    "user_failed_transaction_count": ("user_id", "integer"),
    "payment_type": ("payment_transaction_id", "string"),
}
CATALOG_FIELDS = ("feature_type", "name", "description", "entity_type", "data_type", "created_at")
EXTRACT_MESSAGE = "Feature extraction completed successfully"
ISO_NO_OFFSET = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?")
ABSENT_ID = str(2**63 - 1)  # a valid 64-bit id that no demo row has
NOT_AN_ID = "no-such-entity"  # not the decimal form of any id: names nothing
UNKNOWN_FEATURE = "no_such_feature_type"

# (name, body) of malformed request bodies: each must be refused with 400.
MALFORMED_INFERENCE = [
    ("not JSON", b"{not json"),
    ("a JSON array", b'[{"feature_type": "payment_type", "entity_id": "1"}]'),
    ("no entity_id", b'{"feature_type": "payment_type"}'),
    ("no feature_type", b'{"entity_id": "1"}'),
    ("feature_type not a string", b'{"feature_type": 5, "entity_id": "1"}'),
    ("entity_id a boolean", b'{"feature_type": "payment_type", "entity_id": true}'),
    ("entity_id a float", b'{"feature_type": "payment_type", "entity_id": 1.5}'),
    ("entity_id null", b'{"feature_type": "payment_type", "entity_id": null}'),
    ("entity_id a list", b'{"feature_type": "payment_type", "entity_id": [1]}'),
]
MALFORMED_TRAINING = [
    ("not JSON", b'{"features": [', None),
    ("no features", b"{}", None),
    ("features not a list", b'{"features": "payment_type"}', None),
    ("an item not an object", b'{"features": [{"feature_type": "payment_type", "entity_id": "1"}, 42]}',
     "features[1]"),
    ("an item with a boolean entity_id",
     b'{"features": [{"feature_type": "payment_type", "entity_id": "1"},'
     b' {"feature_type": "payment_type", "entity_id": true}]}', "features[1]"),
]


class Failed(Exception):
    """A check's answer is not what the contract says."""


class Unreachable(Exception):
    """The server does not answer at all: the remaining checks are not run."""


def expect(condition: bool, message: str) -> None:
    if not condition:
        raise Failed(message)


def short(value, limit: int = 160) -> str:
    """`value` as JSON (repr when it is not JSON), cut to `limit` characters."""
    try:
        text = json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def is_iso(value) -> bool:
    """ISO 8601 without offset, as the contract serves datetimes and computed_at."""
    if not isinstance(value, str) or not ISO_NO_OFFSET.fullmatch(value):
        return False
    try:
        datetime.fromisoformat(value)
    except ValueError:
        return False
    return True


class Smoke:
    def __init__(self, url: str, api_key: str | None, timeout: float, extract_timeout: float) -> None:
        self.base = url.rstrip("/") + API
        self.session = requests.Session()
        self.session.headers["User-Agent"] = "feature-store-smoke-check"
        if api_key:
            self.session.headers["X-API-Key"] = api_key
        self.timeout = timeout
        self.extract_timeout = extract_timeout
        self.results = {"PASS": 0, "FAIL": 0, "SKIP": 0}
        self.catalog: dict[str, dict] = {}
        self.counts: dict[str, int] | None = None
        self.answers: dict[tuple[str, str], dict] = {}  # (feature_type, entity_id) -> /inference body

    # -- reporting ------------------------------------------------------------------------------

    def report(self, outcome: str, name: str, detail: str) -> None:
        self.results[outcome] += 1
        print(f"{outcome} {name}: {detail}", flush=True)

    def check(self, name: str, function, *args) -> bool:
        """Run one check; a connection failure stops the run (Unreachable)."""
        try:
            detail = function(*args)
        except Failed as exc:
            self.report("FAIL", name, str(exc))
            return False
        except requests.ConnectionError as exc:
            self.report("FAIL", name, f"cannot connect to {self.base}: {exc.__class__.__name__}")
            raise Unreachable from exc
        except requests.RequestException as exc:
            self.report("FAIL", name, f"request failed: {exc.__class__.__name__}: {exc}")
            return False
        self.report("PASS", name, detail)
        return True

    # -- HTTP -----------------------------------------------------------------------------------

    def call(self, method: str, path: str, body: bytes | dict | None = None, timeout: float | None = None,
             params: dict | None = None) -> tuple[int, object]:
        """(status, JSON body); every answer of the API is JSON, errors included."""
        kwargs: dict = {"timeout": timeout or self.timeout, "params": params}
        if isinstance(body, bytes):
            kwargs["data"] = body
            kwargs["headers"] = {"Content-Type": "application/json"}
        elif body is not None:
            kwargs["json"] = body
        response = self.session.request(method, self.base + path, **kwargs)
        try:
            return response.status_code, response.json()
        except ValueError:
            raise Failed(f"{method} {path} answered {response.status_code} with a body that is not JSON: "
                         f"{short(response.text)}") from None

    def post_ok(self, path: str, body) -> dict:
        status, answer = self.call("POST", path, body)
        expect(status == 200, f"POST {path} answered {status}: {short(answer)}")
        expect(isinstance(answer, dict), f"POST {path} answered {short(answer)}, not an object")
        return answer

    # -- discovery ------------------------------------------------------------------------------

    def discovery(self) -> str:
        status, answer = self.call("GET", "/discovery")
        expect(status == 200, f"GET /discovery answered {status}: {short(answer)}")
        expect(isinstance(answer, list), f"expected a JSON array, got {short(answer)}")
        for entry in answer:
            expect(isinstance(entry, dict), f"an entry is not an object: {short(entry)}")
            missing = [f for f in CATALOG_FIELDS if not isinstance(entry.get(f), str) or not entry.get(f)]
            expect(not missing, f"entry {short(entry.get('feature_type'))} lacks {', '.join(missing)}")
            expect(is_iso(entry["created_at"]), f"{entry['feature_type']}: created_at {entry['created_at']!r} "
                                                "is not ISO 8601")
            self.catalog[entry["feature_type"]] = entry
        for feature_type, (entity_type, data_type) in FEATURES.items():
            entry = self.catalog.get(feature_type)
            expect(entry is not None, f"{feature_type} is not listed (listed: {', '.join(self.catalog)})")
            seen = (entry["entity_type"], entry["data_type"])
            expect(seen == (entity_type, data_type),
                   f"{feature_type}: entity_type/data_type {seen[0]}/{seen[1]}, expected {entity_type}/{data_type}")
        others = sorted(set(self.catalog) - set(FEATURES))
        return (f"{len(FEATURES)} feature types with their entity_type/data_type"
                + (f" (and {len(others)} more: {', '.join(others)})" if others else ""))

    # -- extraction -----------------------------------------------------------------------------

    def extract(self, wait: bool) -> str:
        params = None if wait else {"wait": "false"}
        # The server waits up to EXTRACT_WAIT_SECONDS (25 s by default) before a 202.
        status, answer = self.call("POST", "/extract", timeout=max(self.timeout, 120), params=params)
        expect(isinstance(answer, dict), f"POST /extract answered {status}: {short(answer)}, not an object")
        if status == 202:
            return self.follow(answer)
        expect(status == 200, f"POST /extract answered {status}: {short(answer)}")
        expect(answer.get("message") == EXTRACT_MESSAGE,
               f"message {short(answer.get('message'))}, expected {EXTRACT_MESSAGE!r}")
        expect(isinstance(answer.get("job_id"), str) and answer["job_id"],
               f"no job_id: {short(answer)}")
        self.counts = self.checked_counts(answer)
        return f"200, job {answer['job_id']}: " + self.counts_text()

    def follow(self, accepted: dict) -> str:
        job_id = accepted.get("job_id")
        expect(isinstance(job_id, str) and job_id, f"202 without a job_id: {short(accepted)}")
        expect(accepted.get("status") in ("queued", "started", "finished"),
               f"202 with status {short(accepted.get('status'))}")
        expect(isinstance(accepted.get("status_url"), str) and job_id in accepted["status_url"],
               f"202 status_url {short(accepted.get('status_url'))} does not name the job")
        deadline = time.monotonic() + self.extract_timeout
        while True:
            status, run = self.call("GET", f"/extract/{job_id}")
            expect(status == 200 and isinstance(run, dict), f"GET /extract/{job_id} answered {status}: {short(run)}")
            expect(run.get("job_id") == job_id, f"GET /extract/{job_id} names job {short(run.get('job_id'))}")
            state = run.get("status")
            expect(state in ("queued", "started", "finished", "failed"), f"job status {short(state)}")
            if state == "failed":
                raise Failed(f"job {job_id} failed: {short(run.get('error'))}")
            if state == "finished":
                break
            expect(time.monotonic() < deadline, f"job {job_id} still {state} after {self.extract_timeout:.0f}s")
            time.sleep(0.5)
        result = run.get("result")
        expect(isinstance(result, dict), f"finished job {job_id} has no result: {short(run)}")
        self.counts = self.checked_counts(result)
        return f"202, then job {job_id} finished: " + self.counts_text()

    def checked_counts(self, body: dict) -> dict[str, int]:
        counts = body.get("features_extracted")
        expect(isinstance(counts, dict), f"features_extracted is {short(counts)}, not an object")
        for feature_type in FEATURES:
            expect(feature_type in counts, f"features_extracted has no {feature_type}: {short(counts)}")
        for feature_type, count in counts.items():
            expect(type(count) is int and count >= 0, f"features_extracted[{feature_type!r}] is {short(count)}")
        total = body.get("total_features")
        expect(type(total) is int and total == sum(counts.values()),
               f"total_features {short(total)} is not the sum of features_extracted ({sum(counts.values())})")
        return counts

    def counts_text(self) -> str:
        assert self.counts is not None
        return ", ".join(f"{t} {n}" for t, n in self.counts.items()) + f", total {sum(self.counts.values())}"

    # -- inference ------------------------------------------------------------------------------

    def ids_of(self, entity_type: str, overrides: dict[str, str]) -> list[str]:
        """Ids that exist: named with --entity-id, else 1 and N of a demo warehouse numbered 1..N."""
        if entity_type in overrides:
            return [overrides[entity_type]]
        if self.counts is None:
            return ["1"]
        count = max((self.counts.get(t, 0) for t, (e, _) in FEATURES.items() if e == entity_type), default=0)
        return sorted({"1", str(count)}, key=int) if count else []

    def value_ok(self, feature_type: str, value) -> bool:
        data_type = FEATURES[feature_type][1]
        if feature_type == "user_failed_transaction_count":  # 0 when none, never null
            return type(value) is int and value >= 0
        if value is None:
            return True
        return {"datetime": is_iso(value), "integer": type(value) is int,
                "string": isinstance(value, str)}[data_type]

    def inference(self, feature_type: str, entity_id: str) -> str:
        answer = self.post_ok("/inference", {"feature_type": feature_type, "entity_id": entity_id})
        expect(answer.get("success") is True, f"success is {short(answer.get('success'))}: {short(answer)}")
        expect(answer.get("feature_type") == feature_type, f"feature_type {short(answer.get('feature_type'))}")
        expect(answer.get("entity_id") == entity_id, f"entity_id {short(answer.get('entity_id'))}, "
                                                     f"expected the string {entity_id!r}")
        expect("feature_value" in answer, f"no feature_value: {short(answer)}")
        expect(self.value_ok(feature_type, answer["feature_value"]),
               f"feature_value {short(answer['feature_value'])} is not a {FEATURES[feature_type][1]} value")
        expect(is_iso(answer.get("computed_at")), f"computed_at {short(answer.get('computed_at'))} is not "
                                                  "ISO 8601 (2025-01-20T12:00:00)")
        self.answers[(feature_type, entity_id)] = answer
        return f"200, feature_value {short(answer['feature_value'])}, computed_at {answer['computed_at']}"

    def integer_id(self, feature_type: str, entity_id: str) -> str:
        answer = self.post_ok("/inference", {"feature_type": feature_type, "entity_id": int(entity_id)})
        expect(answer.get("success") is True, f"success is {short(answer.get('success'))}: {short(answer)}")
        expect(answer.get("entity_id") == entity_id, f"entity_id {short(answer.get('entity_id'))}, expected "
                                                     f"the string {entity_id!r}")
        string_answer = self.answers[(feature_type, entity_id)]
        expect(answer.get("feature_value") == string_answer["feature_value"],
               f"feature_value {short(answer.get('feature_value'))}, but {short(string_answer['feature_value'])} "
               f"for the string {entity_id!r}")
        return f"{feature_type} entity_id {entity_id} (a JSON integer) answers as the string {entity_id!r}"

    def not_found(self, feature_type: str, entity_id: str, unknown_feature: bool = False) -> str:
        status, answer = self.call("POST", "/inference", {"feature_type": feature_type, "entity_id": entity_id})
        expect(status == 404, f"answered {status}, expected 404: {short(answer)}")
        expect(isinstance(answer, dict) and answer.get("success") is False,
               f"expected success false: {short(answer)}")
        expect(isinstance(answer.get("error"), str) and answer["error"], f"no error: {short(answer)}")
        expect("feature_value" in answer and answer["feature_value"] is None,
               f"feature_value {short(answer.get('feature_value'))}, expected null")
        expect(answer.get("feature_type") == feature_type and answer.get("entity_id") == entity_id,
               f"does not echo the request's feature_type and entity_id: {short(answer)}")
        if unknown_feature:
            missing = [t for t in FEATURES if t not in answer["error"]]
            expect(not missing, f"the error does not name the known feature types ({', '.join(missing)}): "
                                f"{short(answer['error'])}")
        return f"404, error {short(answer['error'], 100)}"

    # -- training -------------------------------------------------------------------------------

    def training(self, items: list[dict], expected_success: list[bool]) -> str:
        answer = self.post_ok("/training", {"features": items})
        results = answer.get("results")
        expect(isinstance(results, list), f"results is {short(results)}, not a list")
        expect(len(results) == len(items), f"{len(results)} results for {len(items)} items")
        expect(answer.get("total_requested") == len(items),
               f"total_requested {short(answer.get('total_requested'))}, expected {len(items)}")
        successful = 0
        for i, (item, result, ok) in enumerate(zip(items, results, expected_success, strict=True)):
            expect(isinstance(result, dict), f"results[{i}] is {short(result)}")
            expect(result.get("feature_type") == item["feature_type"] and result.get("entity_id") == str(
                item["entity_id"]), f"results[{i}] is for {short(result.get('feature_type'))} "
                                    f"{short(result.get('entity_id'))}, not in request order ({short(item)})")
            expect(result.get("success") is ok, f"results[{i}] success {short(result.get('success'))}, "
                                                f"expected {ok}: {short(result)}")
            if ok:
                successful += 1
                expect(is_iso(result.get("computed_at")), f"results[{i}] computed_at "
                                                          f"{short(result.get('computed_at'))} is not ISO 8601")
                expect(self.value_ok(item["feature_type"], result.get("feature_value")),
                       f"results[{i}] feature_value {short(result.get('feature_value'))}")
                inferred = self.post_ok("/inference", item)
                expect(inferred.get("feature_value") == result.get("feature_value"),
                       f"results[{i}] feature_value {short(result.get('feature_value'))}, but /inference "
                       f"answers {short(inferred.get('feature_value'))} for {short(item)}")
            else:
                expect(result.get("feature_value") is None and isinstance(result.get("error"), str),
                       f"results[{i}] failed without feature_value null and an error: {short(result)}")
        expect(answer.get("total_successful") == successful,
               f"total_successful {short(answer.get('total_successful'))}, but {successful} results succeeded")
        return (f"{len(items)} items in request order, {successful} successful (each value as /inference "
                f"answers it), {len(items) - successful} failed as expected")

    # -- malformed bodies -----------------------------------------------------------------------

    def malformed(self, path: str, body: bytes, names: str | None = None) -> str:
        status, answer = self.call("POST", path, body)
        expect(status == 400, f"answered {status}, expected 400: {short(answer)}")
        expect(isinstance(answer, dict) and answer.get("success") is False and isinstance(answer.get("error"), str),
               f"expected {{\"success\": false, \"error\": ...}}: {short(answer)}")
        if names is not None:
            expect(names in answer["error"], f"the error does not name {names}: {short(answer['error'])}")
        return f"400, error {short(answer['error'], 100)}"


def run(smoke: Smoke, args: argparse.Namespace) -> None:
    smoke.check("discovery", smoke.discovery)
    if args.skip_extract:
        smoke.report("SKIP", "extract", "--skip-extract")
    else:
        smoke.check("extract", smoke.extract, not args.no_wait)

    ids = {feature_type: smoke.ids_of(entity_type, args.entity_id)
           for feature_type, (entity_type, _) in FEATURES.items()}
    found: list[tuple[str, str]] = []
    for feature_type, entity_ids in ids.items():
        if not entity_ids:
            smoke.report("SKIP", f"inference {feature_type}", "the extraction counted no entity")
        for entity_id in entity_ids:
            if smoke.check(f"inference {feature_type} {entity_id}", smoke.inference, feature_type, entity_id):
                found.append((feature_type, entity_id))
    if found:
        smoke.check("inference integer entity_id", smoke.integer_id, *found[0])
    else:
        smoke.report("SKIP", "inference integer entity_id", "no entity was found")

    smoke.check("inference unknown feature_type", smoke.not_found, UNKNOWN_FEATURE, "1", True)
    for feature_type in FEATURES:
        smoke.check(f"inference {feature_type} nonexistent entity", smoke.not_found, feature_type, ABSENT_ID)
    smoke.check("inference entity_id naming no row", smoke.not_found, "payment_type", NOT_AN_ID)

    if found:
        items = [{"feature_type": t, "entity_id": e} for t, e in found]
        items.insert(1, {"feature_type": found[0][0], "entity_id": int(found[0][1])})
        items.insert(2, {"feature_type": found[0][0], "entity_id": ABSENT_ID})
        items.append({"feature_type": UNKNOWN_FEATURE, "entity_id": found[-1][1]})
        expected = [True, True, False, *([True] * (len(found) - 1)), False]
        smoke.check("training", smoke.training, items, expected)
    else:
        smoke.report("SKIP", "training", "no entity was found")

    for name, body in MALFORMED_INFERENCE:
        smoke.check(f"inference malformed body ({name})", smoke.malformed, "/inference", body)
    for name, body, names in MALFORMED_TRAINING:
        smoke.check(f"training malformed body ({name})", smoke.malformed, "/training", body, names)


def entity_id_option(text: str) -> tuple[str, str]:
    entity_type, sep, entity_id = text.partition("=")
    entity_types = sorted({e for e, _ in FEATURES.values()})
    if not sep or entity_type not in entity_types or not entity_id:
        raise argparse.ArgumentTypeError(f"expected ENTITY_TYPE=ID with ENTITY_TYPE one of {', '.join(entity_types)}")
    return entity_type, entity_id


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="http://localhost:25000",
                        help="the server's root URL (default http://localhost:25000)")
    parser.add_argument("--api-key", help="sent as X-API-Key (an admin key when API keys are configured: "
                                          "/extract needs one)")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds per request (default 10)")
    parser.add_argument("--extract-timeout", type=float, default=300.0,
                        help="longest wait for an extraction run to finish (default 300)")
    parser.add_argument("--no-wait", action="store_true", help="POST /extract?wait=false, then follow the run")
    parser.add_argument("--skip-extract", action="store_true", help="do not run an extraction (ids default to 1)")
    parser.add_argument("--entity-id", type=entity_id_option, action="append", default=[], metavar="TYPE=ID",
                        help="an id that exists, per entity type (user_id, quote_id, payment_transaction_id)")
    args = parser.parse_args(argv)
    args.entity_id = dict(args.entity_id)

    smoke = Smoke(args.url, args.api_key, args.timeout, args.extract_timeout)
    print(f"checking {smoke.base}", flush=True)
    try:
        run(smoke, args)
    except Unreachable:
        print("stopped: the server does not answer", flush=True)
    results = smoke.results
    failed = results["FAIL"] > 0
    print(f"{'FAILED' if failed else 'OK'}: {results['PASS']} passed, {results['FAIL']} failed, "
          f"{results['SKIP']} skipped", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
