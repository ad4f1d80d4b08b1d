"""The run's registry of answers: claimed once, copied after, taken over when its asker is gone."""

from __future__ import annotations

from pipeline.engines.ray.copies import CopyExchange, CopyRegistry


def test_a_text_is_sent_by_its_first_claimant_and_copied_by_the_others_once_answered() -> None:
    registry = CopyRegistry()
    a = registry.exchange(CopyExchange("a", claim=[b"x", b"y"]), now=0.0)
    b = registry.exchange(CopyExchange("b", claim=[b"x", b"z"]), now=0.1)
    assert (a.mine, b.mine, b.elsewhere) == ([b"x", b"y"], [b"z"], [b"x"])
    assert registry.exchange(CopyExchange("b", wait=[b"x"]), now=0.2).answers == {}
    registry.exchange(CopyExchange("a", publish=[(b"x", "answer-x")]), now=0.3)
    assert registry.exchange(CopyExchange("b", wait=[b"x"]), now=0.4).answers == {b"x": "answer-x"}
    assert registry.exchange(CopyExchange("c", claim=[b"x"]), now=0.5).answers == {b"x": "answer-x"}
    assert registry.copies == 2


def test_a_released_claim_goes_to_the_next_that_waits() -> None:
    registry = CopyRegistry()
    registry.exchange(CopyExchange("a", claim=[b"x"]), now=0.0)
    registry.exchange(CopyExchange("b", claim=[b"x"]), now=0.0)
    registry.exchange(CopyExchange("c", release=[b"x"]), now=0.1)  # not c's to release
    assert registry.exchange(CopyExchange("b", wait=[b"x"]), now=0.2).taken_over == []
    registry.exchange(CopyExchange("a", release=[b"x"]), now=0.3)
    assert registry.exchange(CopyExchange("b", wait=[b"x"]), now=0.4).taken_over == [b"x"]
    assert registry.exchange(CopyExchange("a", claim=[b"x"]), now=0.5).elsewhere == [b"x"]


def test_the_claims_of_a_silent_process_are_taken_over() -> None:
    registry = CopyRegistry(silent_after=30.0)
    registry.exchange(CopyExchange("a", claim=[b"x"]), now=0.0)
    assert registry.exchange(CopyExchange("b", wait=[b"x"]), now=29.0).taken_over == []
    assert registry.exchange(CopyExchange("b", wait=[b"x"]), now=31.0).taken_over == [b"x"]


def test_only_the_most_recently_used_answers_are_kept() -> None:
    registry = CopyRegistry(keep=2)
    registry.exchange(CopyExchange("a", claim=[b"x", b"y", b"z"]), now=0.0)
    registry.exchange(CopyExchange("a", publish=[(b"x", 1), (b"y", 2)]), now=0.0)
    registry.exchange(CopyExchange("b", claim=[b"x"]), now=0.0)  # x used: y is now the oldest
    registry.exchange(CopyExchange("a", publish=[(b"z", 3)]), now=0.0)
    reply = registry.exchange(CopyExchange("b", claim=[b"x", b"y", b"z"]), now=0.0)
    assert reply.answers == {b"x": 1, b"z": 3} and reply.mine == [b"y"]
