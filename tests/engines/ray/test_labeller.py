"""ShardLabeller without Ray: one shard with the local Run, leasing from a SharedLimiter in-process."""

from __future__ import annotations

import time
from pathlib import Path

import polars as pl
import pytest
from support import SimulatorProcess, make_config, write_jsonl

from pipeline.engines.job import open_job
from pipeline.engines.ray.labeller import ShardLabeller, ShardSpec
from pipeline.engines.ray.leases import Grant, LeaseRequest, SharedLimiter
from pipeline.engines.ray.ledger import ClusterLedger, shard_store_path


@pytest.mark.slow
def test_a_shard_is_labelled_once_and_then_served_from_its_store(tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "in.jsonl", [{"id": f"r{i}", "text": f"buy now {i}"} for i in range(130)])
    limiter = SharedLimiter(rpm=None, tpm=None, now=time.monotonic())

    async def lease(request: LeaseRequest) -> Grant:
        return limiter.lease(request, now=time.monotonic())

    with SimulatorProcess() as sim:
        config = make_config(tmp_path, [data], base_url=sim.base_url, policies=["spam"], shard_rows=50)
        job = open_job(config)
        first = ShardLabeller(ShardSpec(job, "out1", "run1", 50), lease)
        try:
            summary = first.label(1)
        finally:
            first.close()
        billed = sim.stats()["billed"]
        again = ShardLabeller(ShardSpec(job, "out1", "run2", 50), lease)
        try:
            repeat = again.label(1)
            last = again.label(2)  # the input's last, shorter shard
        finally:
            again.close()
        billed_after = sim.stats()["billed"]

    assert (summary.index, summary.rows_read, summary.labels, summary.sent) == (1, 50, 50, 50)
    assert summary.shard is not None and summary.shard["file"] == "labels/part-00001.parquet"
    assert billed == 50
    assert (repeat.sent, repeat.store_hits) == (0, 50)
    assert (last.rows_read, last.sent) == (30, 30) and billed_after == 80
    labels = pl.read_parquet(tmp_path / "out" / "labels" / "part-00001.parquet")
    assert labels["row_number"].to_list() == list(range(50, 100))
    assert labels["id"].to_list() == [f"r{i}" for i in range(50, 100)]
    assert set(labels["source"]) == {"store"}
    assert shard_store_path(config.out, 1).exists() and not (tmp_path / "out" / "manifest.json").exists()
    assert limiter.calls >= 1 and limiter.granted - limiter.returned == 80
    assert sum(b["requests"] for b in ClusterLedger(config.out).billing("out1")) == 80


def test_an_input_gone_before_its_shard_is_read_is_a_one_line_error(tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "in.jsonl", [{"id": f"r{i}", "text": f"buy now {i}"} for i in range(30)])
    config = make_config(tmp_path, [data], base_url="http://127.0.0.1:9/v1", policies=["spam"], shard_rows=10)
    job = open_job(config)
    data.unlink()  # after the driver checked it, before an actor reads it
    labeller = ShardLabeller(ShardSpec(job, "out1", "run1", 10), None)
    try:
        summary = labeller.label(2)
    finally:
        labeller.close()
    assert summary.shard is None and summary.sent == 0
    assert summary.error is not None and str(data) in summary.error and "\n" not in summary.error


def test_a_shard_is_not_begun_once_another_stopped_the_run(tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "in.jsonl", [{"id": f"r{i}", "text": f"buy now {i}"} for i in range(30)])
    config = make_config(tmp_path, [data], base_url="http://127.0.0.1:9/v1", policies=["spam"], shard_rows=10)
    labeller = ShardLabeller(ShardSpec(open_job(config), "out1", "run1", 10), None,
                             halted=lambda: "HTTP 401: bad key")
    try:
        summary = labeller.label(1)
    finally:
        labeller.close()
    assert summary.skipped and summary.shard is None and (summary.rows_read, summary.sent) == (0, 0)
    assert summary.stops_the_run is None  # it says nothing of its own
    assert not (tmp_path / "out" / "labels").exists() and not shard_store_path(config.out, 1).exists()


def test_a_shard_that_stops_the_run_says_so_to_the_others(tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "in.jsonl", [{"id": f"r{i}", "text": f"buy now {i}"} for i in range(30)])
    config = make_config(tmp_path, [data], base_url="http://127.0.0.1:9/v1", policies=["spam"], shard_rows=10)
    job = open_job(config)
    data.unlink()  # the shard meets a one-line error: no other shard should begin
    said: list[str] = []
    labeller = ShardLabeller(ShardSpec(job, "out1", "run1", 10), None, halted=lambda: None, halt=said.append)
    try:
        summary = labeller.label(0)
    finally:
        labeller.close()
    assert summary.error is not None and said == [summary.error]


@pytest.mark.slow
def test_a_shard_under_way_stops_when_the_driver_is_signalled_and_stores_every_answer_paid(tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "in.jsonl", [{"id": f"r{i}", "text": f"buy now {i}"} for i in range(400)])
    limiter = SharedLimiter(rpm=None, tpm=None, now=time.monotonic())

    async def lease(request: LeaseRequest) -> Grant:
        return limiter.lease(request, now=time.monotonic())

    with SimulatorProcess("--latency-ms", "100") as sim:
        def signalled() -> bool:  # the driver is signalled once 40 answers were paid for
            if sim.stats()["billed"] >= 40:
                limiter.interrupt()
            return limiter.interrupted

        config = make_config(tmp_path, [data], base_url=sim.base_url, policies=["spam"], shard_rows=400,
                             concurrency=16)
        labeller = ShardLabeller(ShardSpec(open_job(config), "out1", "run1", 400), lease, interrupted=signalled)
        try:
            summary = labeller.label(0)
        finally:
            labeller.close()
        billed = sim.stats()["billed"]

    assert summary.stop_status == "interrupted" and 40 <= billed < 400
    stored = sum(b["requests"] for b in ClusterLedger(config.out).billing("out1"))
    assert stored == billed  # calls in flight at the signal were waited for and stored


class _Shared:
    """The run's registry and budget as two actors would hold them, called from two threads."""

    def __init__(self, cap: float | None = None) -> None:
        import threading

        from pipeline.engines.ray.budget import ClusterBudget
        from pipeline.engines.ray.copies import CopyRegistry

        self.registry, self.budget = CopyRegistry(), ClusterBudget(cap)
        self._lock = threading.Lock()

    def exchange_now(self, request):
        with self._lock:
            return self.registry.exchange(request, now=time.monotonic())

    async def exchange(self, request):
        return self.exchange_now(request)

    async def ask(self, request):
        with self._lock:
            return self.budget.ask(request)


def _label_together(spec: ShardSpec, shared: _Shared, shards: list[int]) -> list:
    from concurrent.futures import ThreadPoolExecutor

    def one(index: int):
        labeller = ShardLabeller(spec, None, copies=shared.exchange, copies_now=shared.exchange_now,
                                 budget=shared.ask)
        try:
            return labeller.label(index)
        finally:
            labeller.close()

    with ThreadPoolExecutor(len(shards)) as pool:
        return list(pool.map(one, shards))


@pytest.mark.slow
def test_a_text_asked_by_another_shard_at_the_same_time_is_paid_once(tmp_path: Path) -> None:
    texts = [f"buy now {i}" for i in range(40)]
    data = write_jsonl(tmp_path / "in.jsonl", [{"id": f"r{i}", "text": texts[i % 40]} for i in range(80)])
    shared = _Shared()
    with SimulatorProcess("--latency-ms", "300") as sim:
        config = make_config(tmp_path, [data], base_url=sim.base_url, policies=["spam"], shard_rows=40)
        summaries = _label_together(ShardSpec(open_job(config), "out1", "run1", 40), shared, [0, 1])
        billed = sim.stats()["billed"]
    assert billed == 40
    assert sum(s.sent for s in summaries) == 40 and sum(s.copied for s in summaries) == 40
    assert all(s.labels == 40 and s.shard is not None for s in summaries)
    labels = pl.read_parquet(sorted((tmp_path / "out" / "labels").glob("*.parquet")))
    assert labels.height == 80 and set(labels["status"]) == {"ok"}
    first, second = labels.filter(pl.col("row_number") < 40), labels.filter(pl.col("row_number") >= 40)
    assert first["violation"].to_list() == second["violation"].to_list()
    # copies are kept unbilled in the copying shard's store: billing counts each text once
    assert sum(b["requests"] for b in ClusterLedger(config.out).billing("out1")) == 40
    assert shared.registry.calls < 40


@pytest.mark.slow
def test_the_cluster_budget_stops_every_shard_near_the_cap(tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "in.jsonl", [{"id": f"r{i}", "text": f"buy now {i}"} for i in range(120)])
    with SimulatorProcess("--latency-ms", "20") as sim:
        config = make_config(tmp_path, [data], base_url=sim.base_url, policies=["spam"], shard_rows=60)
        whole = _label_together(ShardSpec(open_job(config), "full", "run0", 60), _Shared(), [0, 1])
        cost = sum(s.spent_usd for s in whole)
        cap = cost / 2
        config = make_config(tmp_path, [data], base_url=sim.base_url, policies=["spam"], shard_rows=60,
                             out=str(tmp_path / "capped"), max_cost=cap)
        shared = _Shared(cap)
        capped = _label_together(ShardSpec(open_job(config), "capped", "run1", 60), shared, [0, 1])
    spent = sum(s.spent_usd for s in capped)
    assert cap * 0.8 <= spent <= cap * 1.1
    assert shared.budget.budget.spent == pytest.approx(spent)
    assert all(s.stop_status == "budget_exhausted" for s in capped)
    assert sum(s.statuses.get("budget_exhausted", 0) for s in capped) == 120 - sum(s.sent for s in capped)


@pytest.mark.slow
def test_with_faults_a_failed_text_is_never_copied_and_its_other_shard_asks_it_itself(tmp_path: Path) -> None:
    from pipeline.core.records import FINAL_STATUSES

    texts = [f"buy now {i}" for i in range(40)]
    data = write_jsonl(tmp_path / "in.jsonl", [{"id": f"r{i}", "text": texts[i % 40]} for i in range(80)])
    shared = _Shared()
    with SimulatorProcess("--latency-ms", "100", "--fault-mix", "eight-way", "--seed", "3") as sim:
        config = make_config(tmp_path, [data], base_url=sim.base_url, policies=["spam"], shard_rows=40,
                             max_attempts=1)
        summaries = _label_together(ShardSpec(open_job(config), "out1", "run1", 40), shared, [0, 1])
    labels = pl.read_parquet(sorted((tmp_path / "out" / "labels").glob("*.parquet")))
    assert labels.height == 80 and labels["row_number"].n_unique() == 80
    final = {str(s) for s in FINAL_STATUSES}
    assert set(labels.filter(pl.col("source") == "duplicate")["status"]) <= final
    failed = labels.filter(~pl.col("status").is_in(list(final)))
    assert failed.height > 0  # the mix made some fail
    # a text that failed in one shard was asked by the other one too (not given the failure)
    asked_twice = labels.filter(pl.col("source") == "api").group_by("fingerprint").len().filter(pl.col("len") == 2)
    assert asked_twice.height > 0
    assert sum(s.sent for s in summaries) == 40 + asked_twice.height
