"""Pay once per text across shards: which texts the run has answered, or is asking, anywhere.

User-generated content is full of copies (spam waves, reposts), and two copies of a text often
fall in different shards, labelled by different processes at once. A `CopyRegistry` (one per run,
in its own actor) is keyed by the request's fingerprint:

- a process *claims* the fingerprints its result store does not know, a batch of rows at a time:
  a fingerprint answered elsewhere comes back with its answer (a copy, not a call); one being asked
  elsewhere is *elsewhere* (the process waits for it); any other is now the process's own to send;
- a process *publishes* the final answers of what it sent (an answer that is not final, a failed
  or unsent row, *releases* the claim: a process waiting for it sends it itself);
- a claim whose process has been silent for ``silent_after`` seconds (a process killed) is taken
  over by the next process that waits for it, so no row waits forever.

Answers are kept for the ``keep`` most recently used fingerprints: a copy of a text answered
longer ago (beyond that many others) is asked again. Pure: no IO, time passed in.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

__all__ = ["CopyExchange", "CopyRegistry", "CopyReply"]

#: answers the registry keeps (an answer is a few hundred bytes to a few kilobytes)
KEEP_ANSWERS = 200_000
#: seconds without a call before a process's claims may be taken over
SILENT_AFTER_S = 30.0


@dataclass(slots=True)
class CopyExchange:
    """One call of a process to the registry."""

    owner: str
    claim: list[bytes] = field(default_factory=list)
    #: (fingerprint, answer) of requests this process sent
    publish: list[tuple[bytes, Any]] = field(default_factory=list)
    release: list[bytes] = field(default_factory=list)
    #: fingerprints this process waits for
    wait: list[bytes] = field(default_factory=list)


@dataclass(slots=True)
class CopyReply:
    #: claimed fingerprints that are now this process's to send
    mine: list[bytes] = field(default_factory=list)
    #: answers known, for claimed or awaited fingerprints
    answers: dict[bytes, Any] = field(default_factory=dict)
    #: claimed fingerprints another process is asking
    elsewhere: list[bytes] = field(default_factory=list)
    #: awaited fingerprints whose claim came to this process (released, or its process silent)
    taken_over: list[bytes] = field(default_factory=list)


class CopyRegistry:
    def __init__(self, *, keep: int = KEEP_ANSWERS, silent_after: float = SILENT_AFTER_S) -> None:
        self.keep, self.silent_after = keep, silent_after
        self._owners: dict[bytes, str] = {}
        self._answers: OrderedDict[bytes, Any] = OrderedDict()
        self._seen: dict[str, float] = {}
        #: calls answered, fingerprints claimed, answers handed out as copies
        self.calls = self.claimed = self.copies = 0

    def exchange(self, request: CopyExchange, *, now: float) -> CopyReply:
        self.calls += 1
        owner = request.owner
        self._seen[owner] = now
        owners, answers = self._owners, self._answers
        for fp, answer in request.publish:
            answers[fp] = answer
            answers.move_to_end(fp)
            if owners.get(fp) == owner:
                del owners[fp]
        while len(answers) > self.keep:
            answers.popitem(last=False)
        for fp in request.release:
            if owners.get(fp) == owner:
                del owners[fp]
        reply = CopyReply()
        self.claimed += len(request.claim)
        for fp in request.claim:
            if self._known(fp, reply):
                continue
            holder = owners.get(fp)
            if holder is None or holder == owner or self._silent(holder, now):
                owners[fp] = owner
                reply.mine.append(fp)
            else:
                reply.elsewhere.append(fp)
        for fp in request.wait:
            if self._known(fp, reply):
                continue
            holder = owners.get(fp)
            if holder is None or holder == owner or self._silent(holder, now):
                owners[fp] = owner
                reply.taken_over.append(fp)
        return reply

    def _known(self, fp: bytes, reply: CopyReply) -> bool:
        answer = self._answers.get(fp)
        if answer is None:
            return False
        self._answers.move_to_end(fp)
        reply.answers[fp] = answer
        self.copies += 1
        return True

    def _silent(self, owner: str, now: float) -> bool:
        return now - self._seen.get(owner, now) > self.silent_after
