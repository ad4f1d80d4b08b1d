"""Fixtures shared by the test-suite."""

from __future__ import annotations

from pathlib import Path

import pytest
from support import write_jsonl


@pytest.fixture
def comments(tmp_path: Path) -> Path:
    """Sixty short comments, some of them spam/abuse by the simulator's keyword rule."""
    texts = [
        "great photo, thanks for sharing", "buy now and click here for free money",
        "you people are vermin", "see you at the meetup on friday", "limited offer, free gift card",
    ]
    rows = [{"id": f"r{i:03d}", "text": f"{texts[i % len(texts)]} #{i}"} for i in range(60)]
    return write_jsonl(tmp_path / "comments.jsonl", rows)
