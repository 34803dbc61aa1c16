"""The feature declarations and their building blocks."""

from datetime import datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from feature_store.features import REGISTRY, _whole_seconds
from feature_store.registry import DataType, Entity, Feature, Registry
from tests.scenario import NON_IDS


@pytest.mark.parametrize("entity_id, expected", [
    ("0", 0), ("7", 7), ("-5", -5), (str(2**53 + 1), 2**53 + 1), (str(2**63 - 1), 2**63 - 1),
    (str(-(2**63)), -(2**63)),
])
def test_decimal_ids_name_rows(entity_id, expected):
    assert Entity.parse_id(entity_id) == expected


@pytest.mark.parametrize("entity_id", NON_IDS + [str(2**63), str(-(2**63) - 1)])
def test_ids_not_written_as_a_row_id_name_no_row(entity_id):
    assert Entity.parse_id(entity_id) is None


@pytest.mark.parametrize("start, end, seconds", [
    ("2024-03-01 08:00:00.750000", "2024-03-01 08:00:02.250000", 1),
    ("2024-03-01 08:00:00.250000", "2024-03-01 08:00:01", 0),
    ("2024-03-01 08:00:00", "2024-03-01 08:00:00", 0),
    ("2024-03-01 08:00:02.250000", "2024-03-01 08:00:00.750000", -1),  # toward zero, not floor
    ("2000-01-01 00:00:00", "2100-01-01 00:00:00.999999", 3155760000),
])
def test_binding_time_is_whole_seconds_truncated_toward_zero(start, end, seconds):
    assert _whole_seconds(datetime.fromisoformat(start), datetime.fromisoformat(end)) == seconds


def test_unbound_quote_has_no_binding_time():
    assert _whole_seconds(datetime(2024, 1, 1), None) is None


def test_values_encode_as_json_with_iso_datetimes():
    feature = REGISTRY.get("user_policy_time_of_purchase")
    assert feature.encode((datetime(2025, 1, 15, 10, 30),)) == b'"2025-01-15T10:30:00"'
    assert feature.encode((datetime(2025, 1, 15, 10, 30, 0, 250000),)) == b'"2025-01-15T10:30:00.250000"'
    assert feature.encode((None,)) == b"null"
    assert REGISTRY.get("quote_creation_to_binding_time").encode(
        (datetime(2024, 1, 1), datetime(2024, 1, 1) + timedelta(seconds=90, microseconds=5))) == b"90"


def test_the_catalog_declares_the_four_contract_features():
    assert [(f.feature_type, f.entity.entity_type, f.data_type.value) for f in REGISTRY] == [
        ("user_policy_time_of_purchase", "user_id", "datetime"),
        ("quote_creation_to_binding_time", "quote_id", "integer"),
        ("user_failed_transaction_count", "user_id", "integer"),
        ("payment_type", "payment_transaction_id", "string"),
    ]


def test_a_feature_type_is_declared_once():
    feature = REGISTRY.get("payment_type")
    with pytest.raises(ValueError, match="declared twice"):
        Registry([feature, feature])


def test_feature_types_are_snake_case_so_keys_and_scan_patterns_stay_literal():
    with pytest.raises(ValueError):
        Feature(feature_type="bad:type*", name="x", description="x", entity=REGISTRY.get("payment_type").entity,
                data_type=DataType.STRING, created_at=datetime(2025, 1, 1), query=lambda q: None)


def _outcome(call):
    try:
        return call()
    except (TypeError, ValueError, ArithmeticError, AttributeError) as exc:
        return type(exc).__mro__[1:]  # the kind of failure (orjson's own error subclasses TypeError)


ANY_INPUT = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70), st.floats(allow_nan=False),
    st.text(), st.datetimes(), st.datetimes(timezones=st.timezones()), st.just("12"),
)


@settings(max_examples=400, deadline=None)
@given(data_type=st.sampled_from(list(DataType)), inputs=st.lists(ANY_INPUT, max_size=20))
def test_batch_encoding_gives_the_bytes_encode_gives(data_type, inputs):
    feature = Feature(feature_type="f", name="F", description="", entity=Entity("f_id", "fs"),
                      data_type=data_type, created_at=datetime(2025, 1, 1), query=lambda q: None)
    rows = [(i, value) for i, value in enumerate(inputs)]
    batch = _outcome(lambda: feature.rows_encoder()(rows))
    one_by_one = _outcome(lambda: [(i, feature.encode((value,))) for i, value in rows])
    assert batch == one_by_one


def test_every_declared_feature_encodes_batches_as_it_encodes_one_row():
    start = datetime(2024, 1, 1, 12, 0, 0, 500)
    samples = {"user_policy_time_of_purchase": [(start,), (None,)],
               "quote_creation_to_binding_time": [(start, start + timedelta(seconds=61)), (start, None)],
               "user_failed_transaction_count": [(0,), (12,)], "payment_type": [("Credit",), ("Débit \"x\"",)]}
    for feature in REGISTRY:
        rows = [(i, *inputs) for i, inputs in enumerate(samples[feature.feature_type])]
        assert feature.rows_encoder()(rows) == [(row[0], feature.encode(row[1:])) for row in rows]
