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
