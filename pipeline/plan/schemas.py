"""The verdict's JSON schema for each output format, sent as structured output where hosts allow it.

Pure: the schemas mirror the answer formats of `pipeline.plan.prompt.FORMAT_INSTRUCTIONS`, so a host
that constrains its output to them can only answer with something `parse_verdict` reads.
"""

from __future__ import annotations

from typing import Any

from pipeline.core.records import OutputFormat

_VIOLATION: dict[str, Any] = {"type": "integer", "enum": [0, 1]}
_CATEGORY: dict[str, Any] = {"type": ["string", "null"]}


def verdict_schema(output_format: OutputFormat) -> dict[str, Any]:
    """The JSON schema of one answer in ``output_format``.

    >>> verdict_schema(OutputFormat.BINARY)
    {'type': 'integer', 'enum': [0, 1]}
    >>> verdict_schema(OutputFormat.CATEGORY)["required"]
    ['violation', 'policy_category']
    """
    if output_format is OutputFormat.BINARY:  # a bare 0 or 1 is a JSON integer
        return dict(_VIOLATION)
    properties: dict[str, Any] = {"violation": _VIOLATION, "policy_category": _CATEGORY}
    if output_format is OutputFormat.RATIONALE:
        properties |= {
            "rule_ids": {"type": "array", "items": {"type": "string"}},
            "confidence": {"type": "string", "enum": ["low", "medium", "high"]},
            "rationale": {"type": "string"},
        }
    return {"type": "object", "properties": properties, "required": list(properties),
            "additionalProperties": False}


def response_format(output_format: OutputFormat) -> dict[str, Any]:
    """The ``response_format`` request field asking for answers that match `verdict_schema`.

    Strict mode (where a host has one) needs an object at the top, so the binary schema is sent
    without it.
    """
    schema = verdict_schema(output_format)
    return {"type": "json_schema",
            "json_schema": {"name": f"verdict_{output_format.value}", "strict": schema["type"] == "object",
                            "schema": schema}}
