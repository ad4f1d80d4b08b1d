"""Loading written policies from Markdown files.

A policy's name is its file's stem and its version a hash of its text (see :class:`Policy`).
A bare name such as ``spam`` that is not a path on disk resolves to the policy shipped inside the
package (``pipeline/builtin/policies/``, read with ``importlib.resources``), so ``--policy spam``
works from anywhere, installed or not.
"""

from __future__ import annotations

from collections.abc import Sequence
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path, PurePath

from pipeline.core.errors import UserError
from pipeline.core.records import OutputFormat, Policy
from pipeline.plan.prompt import FORMAT_MARKER, own_output_format

__all__ = ["PolicyError", "builtin_policy_dir", "builtin_policy_files", "format_warnings", "load_policies",
           "load_policy"]

_SUFFIX = ".md"


class PolicyError(UserError):
    """A policy file that cannot be used; the message is one line naming the file."""


def builtin_policy_dir() -> Traversable:
    """The package folder of the shipped policies (``pipeline/builtin/policies``)."""
    return resources.files("pipeline") / "builtin" / "policies"


def builtin_policy_files() -> list[Traversable]:
    """The shipped policy files, sorted by name: what a run uses when no policy is given."""
    return sorted((p for p in builtin_policy_dir().iterdir() if p.name.endswith(_SUFFIX)), key=lambda p: p.name)


def _resolve(path: str | Path | Traversable) -> Path | Traversable:
    """The file a policy argument names: the path itself, else a shipped policy of that name."""
    if not isinstance(path, str | PurePath):
        return path  # a shipped file, from builtin_policy_files()
    candidate = Path(path).expanduser()
    if candidate.exists() or len(candidate.parts) != 1:
        return candidate
    builtin = builtin_policy_dir()
    for name in (candidate.name, candidate.name + _SUFFIX):
        shipped = builtin / name
        if shipped.is_file():
            return shipped
    return candidate


def load_policy(path: str | Path | Traversable) -> Policy:
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
        if isinstance(resolved, Path) and len(resolved.parts) == 1:
            shipped = ", ".join(PurePath(p.name).stem for p in builtin_policy_files())
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
    return Policy(name=PurePath(resolved.name).stem, text=text)


def load_policies(paths: Sequence[str | Path | Traversable]) -> list[Policy]:
    """Read several policies, in order. Two files with the same stem are an error.

    >>> [p.name for p in load_policies(["spam", "self_harm"])]
    ['spam', 'self_harm']
    """
    if isinstance(paths, str | Path):
        paths = [paths]
    policies: list[Policy] = []
    seen: dict[str, Path | Traversable] = {}
    for path in paths:
        policy = load_policy(path)
        resolved = _resolve(path)
        if policy.name in seen:
            raise PolicyError(f"duplicate policy name {policy.name!r}: {seen[policy.name]} and {resolved}")
        seen[policy.name] = resolved
        policies.append(policy)
    return policies


def format_warnings(files: Sequence[str | Path | Traversable], policies: Sequence[Policy],
                    output_format: OutputFormat) -> list[str]:
    """Lines to warn about how each policy meets the run's output format (one per policy at most).

    A policy that states its own answer format but has no ``{{OUTPUT_FORMAT}}`` marker would get our
    instructions appended after its own: two formats in one system message. With
    ``output_format = "policy"`` a marker would be sent as it is: that is refused (PolicyError).
    """
    lines = []
    for file, policy in zip(files, policies, strict=True):
        shown = _resolve(file)
        if output_format is OutputFormat.POLICY:
            if FORMAT_MARKER in policy.text:
                raise PolicyError(f"policy {shown} has the {FORMAT_MARKER} marker, which only our output formats "
                                  "fill in: use --output-format rationale|category|binary, or take the marker out "
                                  "to send the policy as written")
            continue
        if FORMAT_MARKER in policy.text:
            continue
        found = own_output_format(policy.text)
        if found is not None:
            number, line = found
            shown_line = line if len(line) <= 40 else line[:40] + "…"
            lines.append(f"moderate: warning: policy {shown} states its own output format (line {number}: "
                         f"{shown_line!r}) and has no {FORMAT_MARKER} marker: the {output_format.value} answer "
                         "instructions are appended after it; --output-format policy sends it as written")
    return lines
