"""Loading written policies from Markdown files.

A policy's name is its file's stem and its version a hash of its text (see :class:`Policy`).
A bare name such as ``spam`` that is not a path on disk resolves to the policy shipped in
``configs/policies/`` of this repository, so ``--policy spam`` works from anywhere.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from pipeline.records import Policy

__all__ = ["PolicyError", "builtin_policy_dir", "load_policies", "load_policy"]

_SUFFIX = ".md"


class PolicyError(Exception):
    """A policy file that cannot be used; the message is one line naming the file."""


def builtin_policy_dir() -> Path:
    """The folder of the policies shipped with the project (``configs/policies``)."""
    return Path(__file__).resolve().parent.parent / "configs" / "policies"


def _resolve(path: str | Path) -> Path:
    """The file a policy argument names: the path itself, else a shipped policy of that name."""
    candidate = Path(path).expanduser()
    if candidate.exists() or len(candidate.parts) != 1:
        return candidate
    builtin = builtin_policy_dir()
    for name in (candidate.name, candidate.name + _SUFFIX):
        shipped = builtin / name
        if shipped.is_file():
            return shipped
    return candidate


def load_policy(path: str | Path) -> Policy:
    """Read one policy file (UTF-8 text).

    ``path`` is a file path, or the bare name of a shipped policy (``"spam"``).
    Raises :class:`PolicyError` naming the file when it is missing, unreadable, not UTF-8 or empty.

    >>> load_policy("spam").name
    'spam'
    """
    resolved = _resolve(path)
    try:
        data = resolved.read_bytes()
    except FileNotFoundError:
        hint = ""
        if len(resolved.parts) == 1:
            shipped = ", ".join(sorted(p.stem for p in builtin_policy_dir().glob("*" + _SUFFIX)))
            hint = f" (nor a shipped policy: {shipped or 'none'})"
        raise PolicyError(f"policy file not found: {resolved}{hint}") from None
    except IsADirectoryError:
        raise PolicyError(f"policy path is a directory, not a file: {resolved}") from None
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise PolicyError(f"cannot read policy file {resolved}: {reason}") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise PolicyError(f"policy file is not valid UTF-8: {resolved} (byte {exc.start})") from None
    if not text.strip():
        raise PolicyError(f"policy file is empty: {resolved}")
    return Policy(name=resolved.stem, text=text)


def load_policies(paths: Sequence[str | Path]) -> list[Policy]:
    """Read several policies, in order. Two files with the same stem are an error.

    >>> [p.name for p in load_policies(["spam", "self_harm"])]
    ['spam', 'self_harm']
    """
    if isinstance(paths, str | Path):
        paths = [paths]
    policies: list[Policy] = []
    seen: dict[str, Path] = {}
    for path in paths:
        policy = load_policy(path)
        resolved = _resolve(path)
        if policy.name in seen:
            raise PolicyError(f"duplicate policy name {policy.name!r}: {seen[policy.name]} and {resolved}")
        seen[policy.name] = resolved
        policies.append(policy)
    return policies
