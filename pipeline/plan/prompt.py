"""Pure prompt rendering: system message from a policy, user message from content, fingerprints.

The policy is the system message and the content the user message (gpt-oss-safeguard guide).
Content never reaches the system message, and strings that look like Harmony special tokens are
neutralised so a row cannot open a new message of its own.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata

from pipeline.core.records import OutputFormat, Policy

#: bump when the rendering below changes: it is part of every fingerprint.
PROMPT_VERSION = "1"

#: where a policy file wants the answer format spelled out (it may appear several times).
FORMAT_MARKER = "{{OUTPUT_FORMAT}}"

FORMAT_INSTRUCTIONS: dict[OutputFormat, str] = {
    OutputFormat.BINARY: (
        "Answer with exactly one character and nothing else: 1 if the content violates this "
        "policy, 0 if it does not."
    ),
    OutputFormat.CATEGORY: (
        'Answer with one JSON object and nothing else: '
        '{"violation": 1, "policy_category": "<rule id>"} when the content violates this policy, '
        'or {"violation": 0, "policy_category": null} when it does not.'
    ),
    OutputFormat.RATIONALE: (
        'Answer with one JSON object and nothing else: {"violation": 0 or 1, "policy_category": '
        '"<main rule id>" or null, "rule_ids": ["<every rule id that applies>"], "confidence": '
        '"low" | "medium" | "high", "rationale": "<one short sentence>"}.'
    ),
}

# Harmony's special tokens (o200k_harmony) and chat-template look-alikes. A zero-width joiner
# after the opening "<" keeps the text readable for the model but no longer a token match.
_SPECIAL_TOKEN = re.compile(
    r"<\|(start|end|message|channel|constrain|return|call|endoftext|startoftext|endofprompt"
    r"|im_start|im_end|im_sep|reserved_\d+)\|>",
    re.IGNORECASE,
)
_NEUTRAL = "<\u200d|"


def render_system(policy: Policy, output_format: OutputFormat) -> str:
    """The system message for a policy: the policy text, with the answer format filled in.

    With the policy's own format the text is sent exactly as written.

    >>> render_system(Policy("p", "Rules.\\n{{OUTPUT_FORMAT}}"), OutputFormat.BINARY).endswith("not.")
    True
    >>> render_system(Policy("p", " Rules.\\r\\n"), OutputFormat.POLICY)
    ' Rules.\\r\\n'
    """
    if output_format is OutputFormat.POLICY:
        return policy.text
    instructions = FORMAT_INSTRUCTIONS[output_format]
    if FORMAT_MARKER not in policy.text:  # a policy that does not say where: state it at the end
        return f"{policy.text.strip()}\n\n{instructions}"
    return policy.text.replace(FORMAT_MARKER, instructions).strip()


# A line that says how to answer: a heading such as "LABEL FORMAT" or "## Output format", or a line
# such as "Output: VALID" or "Respond with ...". Markdown decoration and emoji around it are ignored.
_OWN_FORMAT = re.compile(
    r"^(?:(?:output|label|labels|answer|response|verdict|classification|return)\s+(?:format|instructions)\b"
    r"|(?:output|answer|response)\s*:"
    r"|(?:output|answer|response|labels?)$"
    r"|(?:answer|respond|reply)\s+(?:with|only|in)\b"
    r"|return\s+(?:only|exactly|a\s+json|json)\b)",
    re.IGNORECASE,
)
_DECORATION = re.compile(r"^[\W_\d]+|[\W_]+$")


def own_output_format(text: str) -> tuple[int, str] | None:
    """The first line of a policy that states how to answer, as (line number, line); None if none does.

    >>> own_output_format("Spam Policy\\nRules.\\n\\nLABEL FORMAT\\nEach item gets two labels")
    (4, 'LABEL FORMAT')
    >>> own_output_format("## INSTRUCTIONS\\nClassify the content.") is None
    True
    """
    for number, line in enumerate(text.splitlines(), 1):
        bare = _DECORATION.sub("", line.strip()).strip()
        if bare and len(bare) <= 200 and _OWN_FORMAT.match(bare):
            return number, line.strip()
    return None


def neutralise(text: str) -> str:
    """Defuse strings that would be parsed as Harmony special tokens; everything else is kept."""
    if "<|" not in text:
        return text
    return _SPECIAL_TOKEN.sub(lambda m: _NEUTRAL + m.group(0)[2:], text)


def normalise(text: str) -> str:
    """The form of a text that decides whether two rows are the same content.

    Unicode NFC, line endings as ``\\n``, surrounding whitespace stripped. Inner spacing,
    case and emoji are kept: they can change a verdict. Lone surrogates (which cannot be
    sent as UTF-8) become ``?``.
    """
    if not text.isascii():
        text = text.encode("utf-8", "replace").decode("utf-8")
        text = unicodedata.normalize("NFC", text)
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    return text.strip()


def request_key(
    *, model: str, system: str, reasoning_effort: str, output_format: OutputFormat, structured: bool = False,
    patterns: tuple[str, str] | None = None,
) -> bytes:
    """The part of a fingerprint shared by every row of one policy (hash it once per run).

    ``structured``: the request asks for the verdict's JSON schema (a different request, so a
    different answer; without it the key is what it always was, and stores stay valid).
    ``patterns``: the label and violation patterns that read an answer in the policy's own format:
    the stored verdict depends on them.
    """
    parts: tuple[str, ...] = (PROMPT_VERSION, model, reasoning_effort, output_format.value, system)
    if structured:
        parts += ("json_schema",)
    if patterns is not None:
        parts += ("patterns", *patterns)
    return hashlib.blake2b("\x1f".join(parts).encode(), digest_size=16).digest()


def fingerprint(key: bytes, text: str) -> bytes:
    """Content address of one request: hash(model, policy text, effort, format, version, text)."""
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16, key=key).digest()
