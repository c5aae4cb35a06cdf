"""What is wrong with a deployment, from two scrapes of its ``/metrics`` (``flowyard doctor``).

Pure: samples in, findings out. A :class:`Scrape` is one process's metrics at one instant;
:func:`diagnose` compares two rounds of scrapes of the same processes taken ``interval_s``
apart (rates need two) and names the likely causes of the usual complaints: work that waits,
steps that run twice, a connection pool too small (docs/operations.md, "Diagnosing").
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from prometheus_client.parser import text_string_to_metric_families

__all__ = ["Finding", "Scrape", "diagnose", "parse_scrape"]

#: Work that has been due this long and is not claimed is "waiting".
WAITING_S = 5.0
#: Mean time to get a connection above which the pool is the bottleneck.
POOL_WAIT_S = 0.010
#: CPU cores a process uses (one Python process runs on at most about one).
BUSY_CORES = 0.85
#: Share of attempts that fail with one error type before it is worth naming.
RETRY_SHARE = 0.2


@dataclass(frozen=True, slots=True)
class Scrape:
    """One process's samples: (sample name, sorted labels) -> value."""

    source: str
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float] = field(default_factory=dict)

    def total(self, name: str, **labels: str) -> float:
        """Sum of the samples named ``name`` whose labels include ``labels``."""
        wanted = set(labels.items())
        return sum(v for (n, ls), v in self.samples.items() if n == name and wanted <= set(ls))

    def has(self, name: str) -> bool:
        return any(n == name for n, _ in self.samples)

    def by_label(self, name: str, label: str) -> dict[str, float]:
        """``name``'s samples summed by the value of ``label``."""
        out: dict[str, float] = {}
        for (n, ls), v in self.samples.items():
            if n == name:
                key = dict(ls).get(label, "")
                out[key] = out.get(key, 0.0) + v
        return out


def parse_scrape(source: str, text: str) -> Scrape:
    """A scrape from the Prometheus text format; ValueError when it is not that format."""
    scrape = Scrape(source)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            key = (sample.name, tuple(sorted(sample.labels.items())))
            scrape.samples[key] = float(sample.value)
    if not any(name.startswith("flowyard_") for name, _ in scrape.samples):
        raise ValueError(f"{source} serves no flowyard metrics")
    return scrape


@dataclass(frozen=True, slots=True)
class Finding:
    """A likely cause: what was seen (numbers), why, and what to do."""

    title: str
    seen: str
    likely: str
    fix: str


class _Rates:
    """Counters' increase per second between two rounds, summed over the processes."""

    def __init__(self, before: Sequence[Scrape], after: Sequence[Scrape], interval_s: float):
        self.before = {s.source: s for s in before}
        self.after = list(after)
        self.interval_s = max(interval_s, 1e-9)

    def delta(self, name: str, **labels: str) -> float:
        return sum(_grew(now, self.before.get(now.source), name, labels) for now in self.after)

    def rate(self, name: str, **labels: str) -> float:
        return self.delta(name, **labels) / self.interval_s

    def delta_by(self, name: str, label: str) -> dict[str, float]:
        keys = {key for now in self.after for key in now.by_label(name, label)}
        return {key: self.delta(name, **{label: key}) for key in keys}

    def gauge_max(self, name: str, **labels: str) -> float:
        return max((s.total(name, **labels) for s in self.after if s.has(name)), default=0.0)


def diagnose(before: Sequence[Scrape], after: Sequence[Scrape], interval_s: float) -> list[Finding]:
    """The likely causes of trouble, most pressing first; empty when nothing looks wrong.
    The queue gauges (depth, oldest due step) are the database's and the same in every
    process: the largest is used; counters are summed over the processes."""
    r = _Rates(before, after, interval_s)
    findings: list[Finding] = []
    oldest_due = r.gauge_max("flowyard_queue_oldest_due_seconds")
    due = r.gauge_max("flowyard_queue_depth", status="scheduled") + r.gauge_max(
        "flowyard_queue_depth", status="retrying"
    )
    claims = r.delta("flowyard_claim_batch_size_count")
    claimed = r.delta("flowyard_claim_batch_size_sum")
    empty = r.delta("flowyard_claim_batch_size_bucket", le="0.0")
    finished = r.delta("flowyard_steps_finished_total")
    step_s = r.delta("flowyard_step_duration_seconds_sum")
    waiting = oldest_due >= WAITING_S

    if waiting and claims == 0:
        findings.append(
            Finding(
                "Steps are due and no worker claims them",
                f"{due:.0f} steps due, the oldest for {oldest_due:.0f} s; no claim in "
                f"{interval_s:.0f} s from the processes scraped",
                "no worker runs against this database (or the scraped processes are not "
                "the workers: scrape each `flowyard worker --metrics-port`)",
                "start workers (`flowyard worker --db ...`, or `flowyard serve` with "
                "--workers >= 1) on the same database",
            )
        )
    pool = list(_pool(r))
    findings.extend(pool)
    busy = list(_cpu(r))
    findings.extend(busy)
    discarded = r.delta("flowyard_steps_discarded_total")
    recovered = r.delta("flowyard_lease_recoveries_total")
    if discarded or recovered:
        findings.append(
            Finding(
                "Steps ran twice: leases expired before their steps finished",
                f"{recovered:.0f} steps re-queued from expired leases and {discarded:.0f} "
                f"results discarded (another worker had taken the step) in {interval_s:.0f} s",
                "a worker stopped heartbeating while its steps ran: it died (killed, out of "
                "memory), or its event loop was blocked (CPU-bound node code) for longer than "
                "FLOWYARD_LEASE_S",
                "look for killed workers in the logs; raise FLOWYARD_LEASE_S above the longest "
                "stall; keep CPU-heavy work out of node code. Idempotency keys make the "
                "re-run safe for providers that honour them",
            )
        )
    deferred = r.delta("flowyard_steps_deferred_total")
    if deferred:
        findings.append(
            Finding(
                "A provider quota paces the steps",
                f"{deferred / r.interval_s:.1f} steps/s deferred by quotas "
                f"({r.delta('flowyard_quota_slowdowns_total'):.0f} rate-limit answers)",
                "the steps' credential or node-type quota (`flowyard quotas list`) allows "
                "less than the work asks for: this is the quota doing its job",
                "raise the quota if the provider allows it (`flowyard quotas set`), or accept "
                "the pace; spread campaigns over time",
            )
        )
    retries = r.delta_by("flowyard_step_retries_total", "error_type")
    attempts = finished or 1.0
    for error_type, count in sorted(retries.items(), key=lambda kv: -kv[1]):
        if count / attempts >= RETRY_SHARE:
            findings.append(
                Finding(
                    f"Steps fail and retry with {error_type}",
                    f"{count:.0f} of {finished:.0f} attempts in {interval_s:.0f} s will be "
                    f"retried with {error_type}",
                    "the service those steps call is failing or refusing them",
                    "check that service (its status, credentials, rate limits); the retries "
                    "back off by themselves, and a catch route can send failures elsewhere",
                )
            )
    lock_waits = r.gauge_max("flowyard_db_lock_waits")
    if lock_waits >= 2:
        findings.append(
            Finding(
                "Database sessions wait for locks",
                f"{lock_waits:.0f} sessions waiting for a lock",
                "a long transaction holds rows or tables the workers need (a manual query, a "
                "migration, a bulk update)",
                "find it: SELECT pid, state, query_start, query FROM pg_stat_activity WHERE "
                "wait_event_type = 'Lock' OR state = 'idle in transaction'",
            )
        )
    if waiting and claims and not any(f.title.startswith("Steps are due") for f in findings):
        batch = claimed / claims
        if empty / claims >= 0.5:
            findings.append(
                Finding(
                    "Work waits while claims come back empty",
                    f"{due:.0f} steps due, the oldest for {oldest_due:.0f} s; "
                    f"{empty:.0f} of {claims:.0f} claims found nothing",
                    "the due steps are not claimable by these workers: their runs are paused, "
                    "or quotas hold them, or the workers run against another database",
                    "`flowyard runs list --status paused`; `flowyard quotas list`; check "
                    "--db of every worker",
                )
            )
        elif step_s > 0 and not pool and not busy:  # a starved pool or CPU slows every step
            sums = r.delta_by("flowyard_step_duration_seconds_sum", "node_type")
            counts = r.delta_by("flowyard_step_duration_seconds_count", "node_type")
            slowest = max(sums, key=lambda k: sums[k])
            slow_mean = sums[slowest] / counts[slowest] if counts.get(slowest) else 0.0
            findings.append(
                Finding(
                    "Work waits for free worker slots",
                    f"{due:.0f} steps due, the oldest for {oldest_due:.0f} s; "
                    f"{finished / r.interval_s:.1f} steps/s finished; {slowest} steps take "
                    f"{slow_mean:.2f} s each; {step_s / r.interval_s:.1f} steps in flight on "
                    f"average; {batch:.1f} steps per claim",
                    "every worker runs at most FLOWYARD_CONCURRENCY steps at once: with slow "
                    "steps, workers x concurrency / step time is the ceiling of the "
                    "throughput, whatever the backlog",
                    "raise FLOWYARD_CONCURRENCY (steps that wait on I/O cost little each), or "
                    "start more workers; make the slow calls faster (timeouts, the service)",
                )
            )
    return findings


def _grew(now: Scrape, then: Scrape | None, name: str, labels: dict[str, str]) -> float:
    """How much a counter grew in one process between two scrapes (a process that
    restarted in between counts again from zero)."""
    value = now.total(name, **labels)
    was = then.total(name, **labels) if then is not None else 0.0
    return value - was if value >= was else value


def _pool(r: _Rates) -> Iterable[Finding]:
    for now in r.after:
        then = r.before.get(now.source)
        for engine in now.by_label("flowyard_db_pool_checkouts_total", "engine"):
            which = {"engine": engine}
            taken = _grew(now, then, "flowyard_db_pool_checkouts_total", which)
            if taken <= 0:
                continue
            mean = _grew(now, then, "flowyard_db_pool_wait_seconds_total", which) / taken
            if mean < POOL_WAIT_S:
                continue
            size = now.total("flowyard_db_pool_size", engine=engine)
            in_use = now.total("flowyard_db_pool_in_use", engine=engine)
            yield Finding(
                "The connection pool is too small for the work",
                f"{now.source}: transactions waited {mean * 1000:.0f} ms on average for a "
                f"connection ({engine} pool of {size:.0f}: {in_use:.0f} in use with overflow, "
                f"{taken:.0f} transactions in {r.interval_s:.0f} s)",
                "more steps commit, claim and read at once than the pool has connections "
                "(FLOWYARD_CONCURRENCY steps per worker share FLOWYARD_DB_POOL_SIZE)",
                "raise FLOWYARD_DB_POOL_SIZE within PostgreSQL's max_connections "
                "(docs/deployment.md, pool sizing), or lower FLOWYARD_CONCURRENCY; with many "
                "processes put PgBouncer in front",
            )


def _cpu(r: _Rates) -> Iterable[Finding]:
    for now in r.after:
        if not now.has("process_cpu_seconds_total"):
            continue
        cores = _grew(now, r.before.get(now.source), "process_cpu_seconds_total", {})
        cores /= r.interval_s
        if cores >= BUSY_CORES:
            yield Finding(
                "A process is CPU-bound",
                f"{now.source}: {cores:.2f} CPU cores used",
                "one Python process runs on about one core: its steps' own work (rendering, "
                "JSON, the node code) and its commits take all of it, so more concurrency "
                "only makes each step slower",
                "start more worker processes (about one per core, on more machines with "
                "PostgreSQL) rather than raising FLOWYARD_CONCURRENCY",
            )
