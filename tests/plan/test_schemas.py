from __future__ import annotations

import orjson
import pytest

from pipeline.call.parser import parse_verdict
from pipeline.core.records import ANSWER_FORMATS, OutputFormat
from pipeline.plan.schemas import response_format, verdict_schema

EXAMPLES = {
    OutputFormat.BINARY: 1,
    OutputFormat.CATEGORY: {"violation": 1, "policy_category": "SP2"},
    OutputFormat.RATIONALE: {"violation": 1, "policy_category": "SP2", "rule_ids": ["SP2"], "confidence": "high",
                             "rationale": "Unsolicited offer."},
}


def conforms(value: object, schema: dict) -> bool:
    """Just enough JSON Schema for the verdict schemas (type, enum, properties, required, items)."""
    types = schema.get("type")
    types = types if isinstance(types, list) else [types]
    names = {"integer": int, "string": str, "null": type(None), "array": list, "object": dict}
    if not any(isinstance(value, names[t]) and not isinstance(value, bool) for t in types):
        return False
    if "enum" in schema and value not in schema["enum"]:
        return False
    if isinstance(value, dict):
        props = schema["properties"]
        return (set(schema["required"]) <= set(value) and set(value) <= set(props)
                and all(conforms(v, props[k]) for k, v in value.items()))
    if isinstance(value, list):
        return all(conforms(v, schema["items"]) for v in value)
    return True


@pytest.mark.parametrize("output_format", ANSWER_FORMATS)
def test_an_answer_matching_the_schema_is_a_verdict(output_format: OutputFormat) -> None:
    example = EXAMPLES[output_format]
    assert conforms(example, verdict_schema(output_format))
    assert parse_verdict(orjson.dumps(example).decode()).violation == 1


@pytest.mark.parametrize("output_format", [OutputFormat.CATEGORY, OutputFormat.RATIONALE])
def test_object_schemas_refuse_extra_or_missing_fields(output_format: OutputFormat) -> None:
    schema = verdict_schema(output_format)
    assert schema["additionalProperties"] is False
    assert not conforms({"violation": 2, "policy_category": None}, schema)
    assert not conforms({"policy_category": None}, schema)


def test_rationale_schema_names_every_field_of_the_rationale_format() -> None:
    assert verdict_schema(OutputFormat.RATIONALE)["required"] == [
        "violation", "policy_category", "rule_ids", "confidence", "rationale"]


def test_response_format_wraps_the_schema_strictly_when_it_is_an_object() -> None:
    wrapped = response_format(OutputFormat.CATEGORY)
    assert wrapped["type"] == "json_schema"
    assert wrapped["json_schema"]["schema"] == verdict_schema(OutputFormat.CATEGORY)
    assert wrapped["json_schema"]["strict"] is True
    assert response_format(OutputFormat.BINARY)["json_schema"]["strict"] is False
