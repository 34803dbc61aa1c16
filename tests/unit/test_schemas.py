"""Request validation: what is malformed, and how the error names it."""

import pytest
from marshmallow import ValidationError

from feature_store.api.schemas import FeatureRequestSchema, TrainingRequestSchema, first_error


@pytest.mark.parametrize("entity_id, loaded", [("123", "123"), (123, "123"), (2**53 + 1, str(2**53 + 1)),
                                               (10**40, "1" + "0" * 40), ("abc", "abc")])
def test_entity_id_may_be_a_string_or_an_integer(entity_id, loaded):
    assert FeatureRequestSchema().load({"feature_type": "f", "entity_id": entity_id})["entity_id"] == loaded


@pytest.mark.parametrize("entity_id", [True, False, 1.0, 1.5, None, [1], {"id": 1}])
def test_booleans_floats_lists_and_null_are_malformed(entity_id):
    with pytest.raises(ValidationError) as info:
        FeatureRequestSchema().load({"feature_type": "f", "entity_id": entity_id})
    assert first_error(info.value.messages).startswith("entity_id:")


def test_unknown_fields_are_ignored():
    assert FeatureRequestSchema().load({"feature_type": "f", "entity_id": 1, "extra": 1}) == {
        "feature_type": "f", "entity_id": "1"}


def test_training_errors_name_the_item():
    with pytest.raises(ValidationError) as info:
        TrainingRequestSchema().load({"features": [{"feature_type": "f", "entity_id": 1},
                                                   {"feature_type": "f", "entity_id": True}]})
    assert first_error(info.value.messages) == "features[1].entity_id: must be a string or an integer"
    with pytest.raises(ValidationError) as info:
        TrainingRequestSchema().load({"features": [{"feature_type": "f", "entity_id": 1}, "x"]})
    assert first_error(info.value.messages) == "features[1]: must be an object"
    with pytest.raises(ValidationError) as info:
        TrainingRequestSchema().load({})
    assert first_error(info.value.messages) == "features: is required"


def test_the_views_fast_path_accepts_exactly_what_the_schemas_accept():
    """The inference/training views recognise well-formed items without the schema; property:
    for any body, they give the schema's answer (same items, or the same 400)."""
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from feature_store.api import ApiError, _item, _items

    values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
                          lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner,
                                                                                     max_size=3), max_leaves=6)
    instants = st.sampled_from(["2024-01-01", "2024-01-01T10:00:00.5Z", "2024-01-01 10:00:00+02:00", "soon",
                                "2024-13-01", " 2024-01-01 ", "", "0001-01-01T00:00:00+01:00"])
    items = st.one_of(values, st.fixed_dictionaries({"feature_type": values | st.text(max_size=5),
                                                     "entity_id": values},
                                                    optional={"x": values, "as_of": values | instants}))

    def via_schema(schema, body):
        if not isinstance(body, dict):
            return "400"
        try:
            return schema.load(body)
        except ValidationError as exc:
            return "400:" + first_error(exc.messages)

    def via_view(function, body):
        try:
            return function(body)
        except ApiError as exc:
            return "400:" + exc.error if exc.error != "the request body must be a JSON object" else "400"

    def triple(item):  # (feature_type, entity_id, as_of or None), whichever path answered
        return item if isinstance(item, str) else (item[0], item[1], item[2] if len(item) > 2 else None)

    def loaded(item):
        return (item["feature_type"], item["entity_id"], item.get("as_of"))

    @settings(max_examples=500, deadline=None)
    @given(body=items)
    def one(body):
        expected = via_schema(FeatureRequestSchema(), body)
        got = via_view(_item, body)
        assert triple(got) == (expected if isinstance(expected, str) else loaded(expected))

    @settings(max_examples=500, deadline=None)
    @given(body=st.one_of(values, st.fixed_dictionaries({"features": st.lists(items, max_size=4) | values})))
    def many(body):
        expected = via_schema(TrainingRequestSchema(), body)
        got = via_view(_items, body)
        assert (got if isinstance(got, str) else [triple(i) for i in got]) == (
            expected if isinstance(expected, str) else [loaded(i) for i in expected["features"]])

    one()
    many()
