"""``flowyard doctor``'s rules (observability/diagnosis.py): real metrics registries, rendered
and parsed as a scrape would read them, before and after what a deployment did."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from flowyard.observability import Metrics, PoolStats, QueueHealth
from flowyard.observability.diagnosis import Finding, Scrape, diagnose, parse_scrape

INTERVAL_S = 10.0


def scrape(metrics: Metrics, source: str = "api") -> Scrape:
    return parse_scrape(source, metrics.render().decode())


def findings_after(
    change: Callable[[Metrics], None], *, setup: Callable[[Metrics], None] | None = None
) -> list[Finding]:
    metrics = Metrics()
    if setup:
        setup(metrics)
    before = scrape(metrics)
    change(metrics)
    return diagnose([before], [scrape(metrics)], INTERVAL_S)


def claims(metrics: Metrics, batch: int, count: int) -> None:
    for _ in range(count):
        metrics.claim_batch.observe(batch)


def steps(metrics: Metrics, count: int, seconds: float) -> None:
    for _ in range(count):
        metrics.step_duration.labels("http").observe(seconds)
        metrics.steps_finished.labels("http", "succeeded").inc()


def titles(found: list[Finding]) -> list[str]:
    return [f.title for f in found]


def test_a_busy_healthy_deployment_has_no_findings() -> None:
    def work(m: Metrics) -> None:
        m.set_queue_depth(QueueHealth({"scheduled": 40, "running": 32}, 0.2, 0))
        claims(m, 16, 50)
        steps(m, 800, 0.01)

    assert findings_after(work) == []


def test_due_work_and_no_claim_means_no_worker() -> None:
    found = findings_after(
        lambda m: m.set_queue_depth(QueueHealth({"scheduled": 5000}, oldest_due_s=120.0))
    )
    assert titles(found) == ["Steps are due and no worker claims them"]
    assert "5000 steps due, the oldest for 120 s" in found[0].seen


def test_slow_steps_and_full_claims_mean_too_few_slots() -> None:
    """The seed's scenario: 5,000 jobs queued, 20 workers doing only 300 jobs a minute."""

    def work(m: Metrics) -> None:
        m.set_queue_depth(QueueHealth({"scheduled": 5000, "running": 40}, oldest_due_s=90.0))
        claims(m, 2, 25)
        steps(m, 50, 8.0)  # 5 steps/s = 300 a minute, 8 s each

    found = findings_after(work)
    assert titles(found) == ["Work waits for free worker slots"]
    assert "5.0 steps/s finished; http steps take 8.00 s each" in found[0].seen
    assert "40.0 steps in flight on average" in found[0].seen
    assert "FLOWYARD_CONCURRENCY" in found[0].fix


def test_empty_claims_while_work_is_due_point_at_what_holds_it() -> None:
    def work(m: Metrics) -> None:
        m.set_queue_depth(QueueHealth({"scheduled": 300}, oldest_due_s=45.0))
        claims(m, 0, 40)

    assert titles(findings_after(work)) == ["Work waits while claims come back empty"]


def test_expired_leases_and_discarded_results_are_duplicates() -> None:
    def work(m: Metrics) -> None:
        m.lease_recoveries.inc(4)
        m.steps_discarded.inc(2)

    found = findings_after(work)
    assert titles(found) == ["Steps ran twice: leases expired before their steps finished"]
    assert "4 steps re-queued" in found[0].seen and "2 results discarded" in found[0].seen
    assert "FLOWYARD_LEASE_S" in found[0].fix


def test_a_pool_that_makes_transactions_wait_is_named_with_its_numbers() -> None:
    usage = {"wait_s": 0.0, "checkouts": 0}

    def setup(m: Metrics) -> None:
        m.watch_pools(
            lambda: [PoolStats("write", 10, 10, usage["wait_s"], int(usage["checkouts"]))]
        )

    def work(m: Metrics) -> None:
        usage.update(wait_s=12.0, checkouts=400)  # 30 ms each

    found = findings_after(work, setup=setup)
    assert titles(found) == ["The connection pool is too small for the work"]
    assert "waited 30 ms on average" in found[0].seen and "pool of 10: 10 in use" in found[0].seen


def test_a_quick_pool_is_fine() -> None:
    usage = {"wait_s": 0.0, "checkouts": 0}

    def setup(m: Metrics) -> None:
        m.watch_pools(lambda: [PoolStats("write", 2, 10, usage["wait_s"], usage["checkouts"])])

    def work(m: Metrics) -> None:
        usage.update(wait_s=0.4, checkouts=400)  # 1 ms each

    assert findings_after(work, setup=setup) == []


def test_quotas_and_dominant_retries_are_named() -> None:
    def work(m: Metrics) -> None:
        m.steps_deferred.labels("salesforce").inc(30)
        m.steps_finished.labels("http", "retrying").inc(60)
        m.steps_finished.labels("http", "succeeded").inc(40)
        m.retries.labels("http.503").inc(60)
        m.retries.labels("timeout").inc(5)  # 5 %: not worth naming

    assert titles(findings_after(work)) == [
        "A provider quota paces the steps",
        "Steps fail and retry with http.503",
    ]


def test_lock_waits_are_named() -> None:
    found = findings_after(lambda m: m.set_queue_depth(QueueHealth({}, None, lock_waits=6)))
    assert titles(found) == ["Database sessions wait for locks"]


def test_counters_of_several_processes_add_up_and_a_restart_counts_from_zero() -> None:
    api, worker = Metrics(), Metrics()
    worker.lease_recoveries.inc(100)
    before = [scrape(api, "api"), scrape(worker, "worker")]
    restarted = Metrics()  # the worker restarted: its counters began again
    restarted.lease_recoveries.inc(3)
    found = diagnose(before, [scrape(api, "api"), scrape(restarted, "worker")], INTERVAL_S)
    assert "3 steps re-queued" in found[0].seen


def test_a_page_without_flowyard_metrics_is_refused() -> None:
    with pytest.raises(ValueError, match="serves no flowyard metrics"):
        parse_scrape("http://x/metrics", "# TYPE up gauge\nup 1\n")


def test_a_process_using_a_whole_core_is_cpu_bound_not_short_of_slots() -> None:
    def cpu(seconds: float) -> Scrape:
        metrics = Metrics()
        metrics.set_queue_depth(QueueHealth({"scheduled": 9000}, oldest_due_s=30.0))
        page = scrape(metrics, "worker")
        page.samples[("process_cpu_seconds_total", ())] = seconds
        return page

    before, after = cpu(100.0), cpu(109.5)  # 0.95 of a core over 10 s
    after.samples[("flowyard_claim_batch_size_count", ())] = 50.0
    after.samples[("flowyard_claim_batch_size_sum", ())] = 4000.0
    after.samples[("flowyard_step_duration_seconds_sum", (("node_type", "http"),))] = 500.0
    after.samples[("flowyard_step_duration_seconds_count", (("node_type", "http"),))] = 1000.0
    found = diagnose([before], [after], INTERVAL_S)
    assert titles(found) == ["A process is CPU-bound"]
    assert "0.95 CPU cores" in found[0].seen and "more worker processes" in found[0].fix
