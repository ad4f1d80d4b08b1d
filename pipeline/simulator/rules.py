"""The simulator's stand-in for a model: a deterministic keyword rule. Pure functions, no IO.

Not a classifier: the verdict is 1 exactly when the lowercased content contains one of the
keywords of the policy's topic (guessed from words in the policy text).
"""

from __future__ import annotations

from dataclasses import dataclass

import orjson

#: topic → (words that reveal it in a policy, [(keyword, rule id), ...]). Order = priority on ties.
TOPICS: dict[str, tuple[tuple[str, ...], tuple[tuple[str, str], ...]]] = {
    "spam": (
        ("spam",),
        (
            ("giveaway", "SP1"),
            ("double your", "SP1"),
            ("guaranteed return", "SP1"),
            ("buy now", "SP2"),
            ("promo code", "SP2"),
            ("discount code", "SP2"),
            ("click here", "SP3"),
            ("follow for follow", "SP4"),
            ("seed phrase", "SP5"),
            ("airdrop", "SP1"),
            ("crypto trading bot", "SP1"),
            ("you've been selected to win", "SP1"),
            ("a day from my phone", "SP1"),
            ("use code", "SP2"),
            ("order now", "SP2"),
            ("check out my shop", "SP2"),
            ("sub4sub", "SP4"),
            ("verify your identity", "SP5"),
        ),
    ),
    "hate": (
        ("hate", "harass"),
        (
            ("vermin", "HH1"),
            ("subhuman", "HH1"),
            ("go back to your country", "HH1"),
            ("idiot", "HH2"),
            ("loser", "HH2"),
            ("worthless", "HH2"),
            ("a disease on this country", "HH1"),
            ("like rats", "HH1"),
            ("go back where you came from", "HH3"),
            ("waste of space", "HH5"),
            ("brain-dead", "HH5"),
            ("kys", "HH4"),
        ),
    ),
    "self_harm": (
        ("self-harm", "self harm", "suicide"),
        (
            ("kill myself", "SH1"),
            ("end my life", "SH1"),
            ("want to die", "SH1"),
            ("hurt myself", "SH2"),
            ("better off without me", "SH3"),
            ("not be here anymore", "SH3"),
            ("i've decided i'm done", "SH3"),
            ("my last post", "SH3"),
            ("you should just end it", "SH1"),
            ("kys", "SH1"),
        ),
    ),
    "minors": (
        ("minor", "child", "csam"),
        (
            ("underage", "CS1"),
            ("meet a minor", "CS1"),
            ("keep it secret from your parents", "CS2"),
            ("don't tell your parents", "CS2"),
            ("your parents can't see", "CS2"),
            ("our secret", "CS2"),
            ("just between us", "CS2"),
            ("wouldn't understand our friendship", "CS2"),
        ),
    ),
}
#: used when no topic word appears in the policy.
GENERIC_KEYWORDS: tuple[tuple[str, str], ...] = (
    ("illegal", "GN1"),
    ("weapon", "GN1"),
    ("attack", "GN1"),
    ("scam", "GN2"),
)

JUNK_OUTPUT = "lorem ipsum dolor sit amet, this is not a verdict"
REFUSAL = "I'm sorry, but I can't help with that."
_MESSAGE_OVERHEAD = 4  # tokens a chat template adds around each message
_PRIMING = 3  # tokens that open the assistant's reply


@dataclass(slots=True, frozen=True)
class Decision:
    """The rule's verdict on one (policy, content) pair."""

    violation: int
    rule_ids: tuple[str, ...] = ()
    keyword: str | None = None

    @property
    def category(self) -> str | None:
        return self.rule_ids[0] if self.rule_ids else None


def output_format(system: str) -> str:
    """The answer format a policy asks for: "rationale", "category" or "binary"."""
    if '"rationale"' in system:
        return "rationale"
    if '"policy_category"' in system:
        return "category"
    return "binary"


def keywords_for(system: str) -> tuple[tuple[str, str], ...]:
    """Keywords of every topic named in the policy, the earliest-named topic first."""
    lowered = system.lower()
    found: list[tuple[int, tuple[tuple[str, str], ...]]] = []
    for markers, keywords in TOPICS.values():
        positions = [i for i in (lowered.find(m) for m in markers) if i >= 0]
        if positions:
            found.append((min(positions), keywords))
    if not found:
        return GENERIC_KEYWORDS
    found.sort(key=lambda pair: pair[0])
    return tuple(kw for _, keywords in found for kw in keywords)


def decide(keywords: tuple[tuple[str, str], ...], user: str) -> Decision:
    """Violation iff the lowercased content contains a keyword; rule ids in keyword order.

    >>> decide(keywords_for("Spam policy"), "Click here to BUY NOW").rule_ids
    ('SP2', 'SP3')
    """
    text = user.lower()
    hits = [(word, rule) for word, rule in keywords if word in text]
    if not hits:
        return Decision(0)
    rules = tuple(dict.fromkeys(rule for _, rule in sorted(hits, key=lambda h: h[1])))
    return Decision(1, rules, hits[0][0])


def render_answer(fmt: str, decision: Decision) -> str:
    """The answer text in the requested format."""
    if fmt == "binary":
        return "1" if decision.violation else "0"
    if fmt == "category":
        return orjson.dumps({"violation": decision.violation, "policy_category": decision.category}).decode()
    if decision.violation:
        rationale = f"The content contains '{decision.keyword}', listed under {decision.category}."
        confidence = "high"
    else:
        rationale = "The content contains none of the policy's listed phrases."
        confidence = "medium"
    answer = {
        "violation": decision.violation,
        "policy_category": decision.category,
        "rule_ids": list(decision.rule_ids),
        "confidence": confidence,
        "rationale": rationale,
    }
    return orjson.dumps(answer).decode()


def template_for(system: str, templates: list[tuple[str, str, str]]) -> tuple[str, str] | None:
    """The (violates, safe) answer templates of the first entry whose phrase the policy contains."""
    for phrase, violates, safe in templates:
        if phrase in system:
            return violates, safe
    return None


def render_template(template: tuple[str, str], decision: Decision) -> str:
    """An answer in a policy's own format: ``{rule}`` and ``{keyword}`` filled in from the decision.

    >>> render_template(("D-{rule}, R-SP0", "D-SP0, R-SP0"), decide(keywords_for("spam"), "click here"))
    'D-SP3, R-SP0'
    """
    text = template[0] if decision.violation else template[1]
    return text.replace("{rule}", decision.category or "").replace("{keyword}", decision.keyword or "")


def render_reasoning(decision: Decision) -> str:
    """One short sentence standing in for the model's reasoning."""
    if decision.violation:
        return f"Keyword rule: matched '{decision.keyword}', so this violates {decision.category}."
    return "Keyword rule: no listed phrase matched, so this does not violate the policy."


def count_tokens(text: str) -> int:
    """A cheap, deterministic token estimate (about four bytes per token)."""
    return len(text.encode()) // 4 + 1


def message_tokens(text: str) -> int:
    """Tokens one chat message costs, template overhead included."""
    return count_tokens(text) + _MESSAGE_OVERHEAD


def prompt_tokens(system_tokens: int, user: str) -> int:
    """Prompt tokens of a (system, user) request, given the system message's own count."""
    return system_tokens + message_tokens(user) + _PRIMING


def cached_tokens(system_tokens: int) -> int:
    """The cached prefix on a repeat of a system message: whole blocks of 64 tokens."""
    return system_tokens // 64 * 64
