"""Turn the model's answer text into a Verdict, or say in one line why it is not one.

The parser accepts the three answer formats of the gpt-oss-safeguard guide whichever one the prompt
asked for: models drift between them, and a well-formed answer in the wrong format is still an answer.
It tolerates the usual wrapping (code fences, an "Answer:" label, a sentence around one JSON object)
and is strict about what decides the label: the violation must be exactly 0 or 1, and an answer that
carries two different verdicts is rejected rather than guessed.

>>> parse_verdict('{"violation": 1, "policy_category": "H2.f"}')
Verdict(violation=1, category='H2.f', rule_ids=(), confidence=None, rationale=None)

A policy that defines its own labels (``output_format = "policy"``) is read by `PolicyLabels` instead:
two patterns from the run's config pick the label out of the answer and say which labels violate.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from pipeline.core.records import OutputFormat, Verdict

__all__ = ["InvalidOutput", "PolicyLabels", "parse_verdict", "verdict_reader"]


class InvalidOutput(Exception):
    """The answer is not a verdict. ``str(e)`` is a one-line reason fit for the `error` column."""


_CONFIDENCES = frozenset({"low", "medium", "high"})
_NO_CATEGORY = frozenset({"", "none", "null", "n/a", "na", "nil"})
_VIOLATION_VALUES: dict[Any, int] = {0: 0, 1: 1, "0": 0, "1": 1}
_FAST_BINARY = {"0": Verdict(0), "1": Verdict(1)}

# ```json ... ``` around the answer (the closing fence may be missing when the answer was cut short).
_FENCE = re.compile(r"^```[A-Za-z0-9_-]*[ \t]*\n?(.*?)\n?(?:```)?\s*$", re.DOTALL)
# "Answer:", "**Final answer:**", "Output -" ... in front of the answer.
_LABEL = re.compile(
    r"^[*_#\s]*(?:final\s+)?(?:answer|output|verdict|label|result|response)[*_\s]*[:=\-][*_\s]*",
    re.IGNORECASE,
)
_REFUSAL = re.compile(
    r"^\W*(?:i[’']?m sorry|i am sorry|sorry\b|i can(?:[’']?t|not)\b|i won[’']?t\b|i[’']?m unable|i am unable"
    r"|i[’']?m not able|as an ai\b)",
    re.IGNORECASE,
)
_JSON = json.JSONDecoder()
#: the end of reasoning a server left in the content (no reasoning parser): the answer follows the last one
_REASONING_END = re.compile(r"</think>|<\|channel\|>final<\|message\|>|assistantfinal", re.IGNORECASE)
#: zero-width spaces and joiners, direction marks, soft hyphens...: invisible, so never part of a label
_FORMAT_CHARACTERS = re.compile("[\u00ad\u061c\u180e\u200b-\u200f\u202a-\u202e\u2060-\u2064\ufeff]")
_QUOTE_MAX = 80
_MAX_ATTEMPTS = 200  # "{" positions tried: bounds the work on long junk full of braces


def _quote(text: str) -> str:
    """The start of ``text`` as a one-line Python literal: newlines escaped, at most ~80 characters."""
    text = text.strip()
    if len(text) > _QUOTE_MAX:
        return repr(text[:_QUOTE_MAX]) + "…"
    return repr(text)


def _show(value: Any) -> str:
    """A short description of a JSON value for an error message (containers are not printed)."""
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "a list"
    shown = repr(value)
    return shown if len(shown) <= _QUOTE_MAX else shown[:_QUOTE_MAX] + "…"


def parse_verdict(text: str) -> Verdict:
    """Parse one answer of the model into a Verdict; raise InvalidOutput when it is not one.

    Fast paths first: a bare ``0``/``1`` and a whole-text JSON object (via orjson) cover almost every
    answer; the slower search for a JSON object inside prose only runs for the rest.
    """
    if not text or text.isspace():
        raise InvalidOutput("empty answer")
    stripped = text.strip()
    binary = _FAST_BINARY.get(stripped)
    if binary is not None:
        return Verdict(binary.violation)
    if stripped[0] == "{" and stripped[-1] == "}":
        try:
            obj = orjson.loads(stripped)
        except orjson.JSONDecodeError:
            pass
        else:
            return _from_object(obj, stripped)
    return _parse_slow(stripped)


def _parse_slow(text: str) -> Verdict:
    """Unwrap fences and labels, then look for a bare digit or the JSON object(s) in the text."""
    body = text
    fenced = _FENCE.match(body)
    if fenced is not None:
        body = fenced.group(1).strip()
    labelled = _LABEL.match(body)
    if labelled is not None:
        body = body[labelled.end() :].strip()
    if fenced is None and body.startswith("```"):  # "Answer: ```json ...```"
        fenced = _FENCE.match(body)
        if fenced is not None:
            body = fenced.group(1).strip()
    token = body.strip(" \t\r\n*`\"'").rstrip(".")
    if token in _FAST_BINARY:
        return Verdict(_FAST_BINARY[token].violation)

    verdicts = [_from_object(obj, text) for obj in _json_objects(body)]
    if not verdicts:
        if _REFUSAL.match(body):
            raise InvalidOutput(f"refusal: {_quote(text)}")
        raise InvalidOutput(f"not a verdict: {_quote(text)}")
    first = verdicts[0]
    for other in verdicts[1:]:
        if other != first:
            raise InvalidOutput(f"two different verdicts: {_quote(text)}")
    return first


def _json_objects(text: str) -> list[dict[str, Any]]:
    """Every top-level JSON object in ``text`` that carries a violation field (nested or not)."""
    found: list[dict[str, Any]] = []
    others: list[dict[str, Any]] = []
    pos, attempts = text.find("{"), 0
    while pos != -1 and attempts < _MAX_ATTEMPTS:
        attempts += 1
        try:
            obj, end = _JSON.raw_decode(text, pos)
            if "\\u" in text[pos:end]:
                obj = _utf8(obj)
        except (ValueError, RecursionError):
            pos = text.find("{", pos + 1)
            continue
        if isinstance(obj, dict):
            target = _verdict_dict(obj)
            (found if target is not None else others).append(obj)
        pos = text.find("{", end)
    if not found and others:
        # a JSON answer without a violation field: let _from_object name the problem.
        return others[:1]
    return found


def _utf8(value: Any) -> Any:
    """``value`` with each lone surrogate in its strings as ``?``.

    The stdlib decoder turns an escape like ``\\ud800`` without its pair into a lone surrogate,
    which no UTF-8 output (shard, store) can hold; orjson, on the fast path, refuses them.
    """
    if isinstance(value, str):
        return value if value.isascii() else value.encode("utf-8", "replace").decode("utf-8")
    if isinstance(value, dict):
        return {_utf8(k): _utf8(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_utf8(v) for v in value]
    return value


def _verdict_dict(obj: dict[str, Any], *, unwrap: bool = True) -> dict[str, Any] | None:
    """The dict holding the verdict: ``obj`` itself, or its single nested dict (``{"result": {...}}``)."""
    if "violation" in obj:
        return obj
    for key in obj:
        if isinstance(key, str) and key.strip().lower() == "violation":
            return {k.strip().lower() if isinstance(k, str) else k: v for k, v in obj.items()}
    nested = [v for v in obj.values() if isinstance(v, dict)]
    if unwrap and len(nested) == 1:
        return _verdict_dict(nested[0], unwrap=False)
    return None


def _from_object(obj: Any, text: str) -> Verdict:
    """Build a Verdict from a decoded JSON value, normalising the tolerated variants."""
    if not isinstance(obj, dict):
        raise InvalidOutput(f"not a verdict: {_quote(text)}")
    fields = _verdict_dict(obj)
    if fields is None:
        raise InvalidOutput(f"no violation field: {_quote(text)}")
    violation = _violation(fields["violation"])
    category = fields.get("policy_category", fields.get("category"))
    return Verdict(
        violation=violation,
        category=_category(category),
        rule_ids=_rule_ids(fields.get("rule_ids")),
        confidence=_confidence(fields.get("confidence")),
        rationale=_rationale(fields.get("rationale")),
    )


def _violation(value: Any) -> int:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, float) and value in (0.0, 1.0):
        return int(value)
    if isinstance(value, (int, str)):
        key = value.strip() if isinstance(value, str) else value
        found = _VIOLATION_VALUES.get(key)
        if found is not None:
            return found
    raise InvalidOutput(f"violation must be 0 or 1, got {_show(value)}")


def _category(value: Any) -> str | None:
    """The main rule id; the descriptive fields never fail a row whose violation is clear."""
    if isinstance(value, list):
        ids = _rule_ids(value)
        return ids[0] if ids else None
    if value is None or isinstance(value, (bool, dict)):
        return None
    value = str(value).strip()
    return None if value.lower() in _NO_CATEGORY else value


def _rule_ids(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        value = value.strip()
        return () if value.lower() in _NO_CATEGORY else (value,)
    if isinstance(value, list):
        ids = []
        for item in value:
            if item is None or isinstance(item, (bool, list, dict)):
                continue
            item = str(item).strip()
            if item:
                ids.append(item)
        return tuple(ids)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return (str(value),)
    return ()


def _confidence(value: Any) -> str | None:
    if not isinstance(value, str):
        return None
    value = value.strip().lower()
    return value if value in _CONFIDENCES else None


def _rationale(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        value = json.dumps(value, ensure_ascii=False) if isinstance(value, (list, dict)) else str(value)
    value = value.strip()
    return value or None


@dataclass(slots=True, frozen=True)
class PolicyLabels:
    """Reads an answer written in the policy's own label format.

    The label is the first non-empty match of ``label`` in the answer (its group when it has one, else
    the whole match); the verdict is 1 when ``violation`` matches the whole label. The label becomes
    ``category`` (and the only rule id). The patterns are checked when the config is read. The answer is
    read in NFKC form without invisible format characters: ``ＳＰ３`` (full width) and ``SP<zero-width
    space>3`` are ``SP3``, not a label that would slip past the violation pattern as safe. Reasoning a server
    left in the content (``...</think>``, Harmony's ``assistantfinal``) is not read: labels it weighs
    there are not the answer.

    >>> read = PolicyLabels.from_patterns(r"\\bD-(SP[0-4])\\b", r"SP[2-4]")
    >>> read("D-SP3, R-SP0")
    Verdict(violation=1, category='SP3', rule_ids=('SP3',), confidence=None, rationale=None)
    >>> read("D-SP0, R-SP0").violation
    0
    """

    label: re.Pattern[str]
    violation: re.Pattern[str]

    @classmethod
    def from_patterns(cls, label: str, violation: str) -> PolicyLabels:
        return cls(re.compile(label), re.compile(violation))

    def __call__(self, text: str) -> Verdict:
        if not text or text.isspace():
            raise InvalidOutput("empty answer")
        answer = text
        if not answer.isascii():
            answer = _FORMAT_CHARACTERS.sub("", unicodedata.normalize("NFKC", answer))
        ends = [m.end() for m in _REASONING_END.finditer(answer)]
        if ends:
            answer = answer[ends[-1]:]
        for match in self.label.finditer(answer):
            found = match.group(1) if self.label.groups and match.group(1) is not None else match.group(0)
            label = _utf8(found).strip()
            if label:
                violation = 1 if self.violation.fullmatch(label) else 0
                return Verdict(violation, category=label, rule_ids=(label,))
        raise InvalidOutput(f"no label matching {self.label.pattern!r}: {_quote(text)}")


def verdict_reader(output_format: OutputFormat, label_pattern: str | None = None,
                   violation_pattern: str | None = None) -> Callable[[str], Verdict]:
    """What turns an answer into a verdict for ``output_format``: `parse_verdict`, or `PolicyLabels`."""
    if output_format is OutputFormat.POLICY:
        return PolicyLabels.from_patterns(label_pattern or "", violation_pattern or "")
    return parse_verdict
