from __future__ import annotations

import re
import time

import pytest

import pipeline.plan as plan_module
from pipeline.plan import PolicyPlan, make_plan, new_run_id
from pipeline.records import Policy
from pipeline.tokens import MESSAGE_OVERHEAD

POLICY = Policy("spam", "# Spam\nSP1: scams.\n{{OUTPUT_FORMAT}}\n")


def plan(*, context_tokens: int = 131072, system_tokens: int = 450, max_tokens: int = 8192) -> PolicyPlan:
    return make_plan(2, POLICY, system="rendered", key=b"k" * 16, system_tokens=system_tokens,
                     context_tokens=context_tokens, max_tokens=max_tokens)


def test_text_budget_is_context_minus_system_output_and_template_overhead() -> None:
    assert MESSAGE_OVERHEAD == 8
    assert plan().text_budget == 131072 - 450 - 8192 - 32
    assert plan(context_tokens=10_000, system_tokens=1_000, max_tokens=4_000).text_budget == 4_968


def test_text_budget_one_token_over_the_edge_and_never_negative() -> None:
    assert plan(context_tokens=1_033, system_tokens=1_000, max_tokens=0).text_budget == 1
    assert plan(context_tokens=1_032, system_tokens=1_000, max_tokens=0).text_budget == 0
    assert plan(context_tokens=1_000, system_tokens=900, max_tokens=8192).text_budget == 0


def test_make_plan_keeps_what_it_was_given() -> None:
    p = plan()
    assert (p.index, p.policy, p.system, p.key, p.system_tokens) == (2, POLICY, "rendered", b"k" * 16, 450)


def test_plan_version_is_the_policy_version() -> None:
    p = plan()
    assert p.version == POLICY.version
    assert re.fullmatch(r"[0-9a-f]{12}", p.version)
    edited = make_plan(0, Policy("spam", POLICY.text + "SP2: ads.\n"), system="s", key=b"", system_tokens=1,
                       context_tokens=100, max_tokens=10)
    assert edited.version != p.version


def test_explicit_version_is_kept() -> None:
    p = PolicyPlan(0, POLICY, "s", b"", 1, 10, version="given")
    assert p.version == "given"


def test_run_ids_are_unique() -> None:
    # 32 random bits per id: 20 ids in one second collide with a chance of about 5e-8
    ids = [new_run_id() for _ in range(20)]
    assert len(set(ids)) == 20
    assert all(re.fullmatch(r"\d{8}T\d{6}Z-[0-9a-f]{8}", i) for i in ids)


def test_run_id_starts_with_the_current_time() -> None:
    before = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    run_id = new_run_id()
    after = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    assert before <= run_id.split("-")[0] <= after


def test_run_ids_sort_by_time(monkeypatch: pytest.MonkeyPatch) -> None:
    instants = iter([1_700_000_000, 1_700_000_001, 1_700_000_059, 1_700_003_600, 1_800_000_000])
    real_strftime = time.strftime

    def fake_strftime(fmt: str, t: time.struct_time | None = None) -> str:
        return real_strftime(fmt, time.gmtime(next(instants)))

    monkeypatch.setattr(plan_module.time, "strftime", fake_strftime)
    ids = [new_run_id() for _ in range(5)]
    assert ids[0].startswith("20231114T221320Z-")
    assert sorted(ids) == ids
