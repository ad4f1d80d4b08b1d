from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.core.digests import DigestSet


@settings(max_examples=50, deadline=None)
@given(st.lists(st.lists(st.integers(0, 60), max_size=40), max_size=30))
def test_new_marks_exactly_the_first_sight_of_each_digest(batches: list[list[int]]) -> None:
    seen_set: set[int] = set()
    digests = DigestSet()
    for batch in batches:
        new = digests.add(np.array(batch, dtype=np.uint64)).tolist()
        expected = []
        for value in batch:
            expected.append(value not in seen_set)
            seen_set.add(value)
        assert new == expected
    assert len(digests) == len(seen_set)


def test_memory_is_eight_bytes_per_member() -> None:
    digests = DigestSet()
    rng = np.random.default_rng(3)
    for _ in range(100):
        digests.add(rng.integers(0, 2**63, 1000, dtype=np.uint64))
    assert digests.nbytes == 8 * len(digests) == 8 * 100_000


def test_large_digests_keep_their_order() -> None:
    digests = DigestSet()
    top = np.array([2**64 - 1, 2**63, 1], dtype=np.uint64)
    assert digests.add(top).tolist() == [True, True, True]
    assert digests.add(top[::-1]).tolist() == [False, False, False]
