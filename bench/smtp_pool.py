"""SMTP sending: messages per second through the ``email`` node's SMTP transport to a local
relay that speaks real SMTP with STARTTLS and AUTH (aiosmtpd, tests/fakes/smtp.py), with a
connection per message (the peer: how the node sent before pooling) and with the node's
connection pool, in one run.

    python bench/smtp_pool.py                  # 2,000 messages, 8 at a time
    python bench/smtp_pool.py --messages 500 --concurrency 4 --json out.json

Reported: messages/s for each, the ratio, and the connections the relay saw.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import ssl
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from fakes.smtp import FakeSmtp, make_tls  # noqa: E402
from flowyard.domain.credentials import CredentialType, ResolvedCredential  # noqa: E402
from flowyard.integrations.email import smtp  # noqa: E402
from flowyard.outbound.egress import EgressPolicy, guarded_client  # noqa: E402
from throughput import _machine  # noqa: E402

RAW = (
    b"From: bench@flowyard.test\r\nTo: someone@example.com\r\nSubject: hello\r\n"
    b"Message-ID: <x@flowyard.test>\r\n\r\n" + b"Hi there, a personalised line.\r\n" * 20
)


async def run(messages: int, concurrency: int, pooled: bool) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        tls = make_tls(Path(tmp))
        relay = await FakeSmtp(mode="starttls", tls=tls, users={"bench": "pw"}).start()
        credential = ResolvedCredential(
            name="relay",
            type=CredentialType.SMTP,
            values={
                "host": "127.0.0.1",
                "port": relay.port,
                "username": "bench",
                "password": "pw",
                "starttls": True,
            },
            allowed_origins=(f"smtp://127.0.0.1:{relay.port}",),
        )
        pool = smtp.SmtpPool() if pooled else None
        context = ssl.create_default_context(cafile=str(tls.ca))
        http = guarded_client(EgressPolicy(allow=["127.0.0.1"]))
        queue = list(range(messages))

        async def sender() -> None:
            while queue:
                queue.pop()
                await smtp.send_smtp(
                    http,
                    credential,
                    "bench@flowyard.test",
                    ["someone@example.com"],
                    RAW,
                    timeout_s=10,
                    tls=context,
                    local_hostname="bench",
                    pool=pool,
                )

        started = time.perf_counter()
        await asyncio.gather(*(sender() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
        if pool is not None:
            await pool.aclose()
        await http.aclose()
        await relay.stop()
        assert len(relay.received) == messages
        return {
            "pooled": pooled,
            "messages": messages,
            "seconds": round(elapsed, 3),
            "per_s": round(messages / elapsed, 1),
            "connections": relay.counts["connections"],
        }


def main() -> None:
    logging.getLogger("mail.log").setLevel(logging.ERROR)  # aiosmtpd's deprecation notes
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--messages", type=int, default=2000)
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    results = []
    for pooled in (False, True, False, True):
        results.append(asyncio.run(run(args.messages, args.concurrency, pooled)))
    print(f"machine: {_machine()}")
    print("| sending | messages | seconds | messages/s | relay connections |")
    print("|---|---|---|---|---|")
    for r in results:
        kind = "pooled" if r["pooled"] else "a connection per message"
        cells = [kind, f"{r['messages']:,}", r["seconds"], r["per_s"], f"{r['connections']:,}"]
        print("| " + " | ".join(str(c) for c in cells) + " |")
    best = {k: max(r["per_s"] for r in results if r["pooled"] is k) for k in (False, True)}
    print(f"pooled / per-message (best of 2 each): {best[True] / best[False]:.1f}x")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
