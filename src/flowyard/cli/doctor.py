"""``flowyard doctor``: scrape the ``/metrics`` of a deployment's processes twice and name the
likely causes of trouble (observability/diagnosis.py; docs/operations.md, "Diagnosing")."""

from __future__ import annotations

import time
from typing import Annotated

import httpx
import typer

from flowyard.cli.common import err, fail, out
from flowyard.observability.diagnosis import Scrape, diagnose, parse_scrape

#: The largest metrics page read (a process with thousands of workflows' label sets).
MAX_METRICS_BYTES = 16 * 1024 * 1024


def _scrape(client: httpx.Client, url: str) -> Scrape:
    try:
        with client.stream("GET", url) as answer:
            if answer.status_code != 200:
                hint = " (a viewer token: --token)" if answer.status_code in (401, 403) else ""
                fail(f"{url} answered {answer.status_code}{hint}")
            body = b""
            for chunk in answer.iter_bytes():
                body += chunk
                if len(body) > MAX_METRICS_BYTES:
                    fail(f"{url} sent more than {MAX_METRICS_BYTES} bytes of metrics")
    except httpx.HTTPError as exc:
        fail(f"cannot read {url}: {exc}")
    try:
        return parse_scrape(url, body.decode("utf-8", errors="replace"))
    except ValueError as exc:
        fail(f"{url} is not a Prometheus metrics page: {exc}")


def doctor(
    urls: Annotated[
        list[str],
        typer.Argument(
            help="Metrics URLs of the processes: the API's http://host:8000/metrics and each "
            "`flowyard worker --metrics-port N`'s http://host:N/metrics",
            show_default=False,
        ),
    ],
    interval: Annotated[
        float, typer.Option(min=1.0, max=600.0, help="Seconds between the two scrapes")
    ] = 10.0,
    token: Annotated[
        str | None,
        typer.Option(
            envvar="FLOWYARD_TOKEN", help="A viewer's token, for metrics not read from loopback"
        ),
    ] = None,
) -> None:
    """Read the deployment's metrics twice and say what looks wrong: work that waits (and
    why), steps that ran twice, a pool too small, quotas, retries, lock waits. Exit 0 when
    nothing does, 1 with findings."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    with httpx.Client(timeout=10.0, headers=headers, follow_redirects=False) as client:
        before = [_scrape(client, url) for url in urls]
        err.print(f"flowyard doctor: {len(urls)} process(es), next scrape in {interval:g} s")
        started = time.monotonic()
        time.sleep(interval)
        after = [_scrape(client, url) for url in urls]
        elapsed = time.monotonic() - started
    findings = diagnose(before, after, elapsed)
    if not findings:
        out.print("No problem found.", highlight=False)
        return
    for finding in findings:
        out.print(f"[bold]- {finding.title}[/]", highlight=False)
        lines = (("seen", finding.seen), ("likely", finding.likely), ("fix", finding.fix))
        for label, text in lines:
            out.print(f"  {label}: {text}", highlight=False, markup=False, soft_wrap=True)
    raise typer.Exit(1)
