"""A stand-in for the CRM, notification and approval services of the examples (stdlib only).

    python3 examples/fake_crm.py &          # http://127.0.0.1:9900; stops by itself after
                                            # 15 minutes, or: kill %1

Answers what ``lead_routing.json`` and ``approval.json`` call:

- ``POST /crm/accounts`` -> 201 ``{"id": "001...", "email": ...}`` (``--refuse``: 400)
- ``POST /crm/pool``     -> 200 ``{"queued": true}``
- ``POST /notify``       -> 200 ``{"ok": true}``
- ``POST /approvals``    -> 200 ``{"approved": amount <= 1000}``

Every request is printed on stderr with ``--verbose``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

_ids = itertools.count(1)


def answer(path: str, body: Any, refuse: bool) -> tuple[int, Any]:
    """The status and JSON body for a POST to ``path``."""
    data = body if isinstance(body, dict) else {}
    if path == "/crm/accounts":
        if refuse:
            return 400, {"error": "duplicate account", "email": data.get("email")}
        return 201, {"id": f"001{next(_ids):012d}", "email": data.get("email")}
    if path == "/crm/pool":
        return 200, {"queued": True, "email": data.get("email")}
    if path == "/notify":
        return 200, {"ok": True}
    if path == "/approvals":
        try:
            amount = float(data.get("amount", 0))
        except (TypeError, ValueError):
            return 400, {"error": "amount must be a number"}
        return 200, {"approved": amount <= 1000}
    return 404, {"error": f"no such endpoint: {path}"}


class Handler(BaseHTTPRequestHandler):
    """Answers POSTs with JSON; everything else is 405."""

    server: FakeCrm

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            self._send(400, {"error": "the body is not JSON"})
            return
        status, reply = answer(self.path, body, self.server.refuse)
        self._send(status, reply)

    def do_GET(self) -> None:
        self._send(405, {"error": "POST only"})

    def _send(self, status: int, body: Any) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        if self.server.verbose:
            sys.stderr.write(f"fake CRM: {format % args}\n")


class FakeCrm(ThreadingHTTPServer):
    """The server, with its options."""

    daemon_threads = True
    refuse = False
    verbose = False


def main() -> None:
    """Serve until ``--seconds`` have passed or the process is stopped."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9900)
    parser.add_argument("--seconds", type=float, default=900, help="stop after this long")
    parser.add_argument("--refuse", action="store_true", help="answer 400 to new accounts")
    parser.add_argument("--verbose", action="store_true", help="print every request")
    args = parser.parse_args()
    server = FakeCrm((args.host, args.port), Handler)
    server.refuse, server.verbose = args.refuse, args.verbose
    timer = threading.Timer(args.seconds, server.shutdown)
    timer.daemon = True
    timer.start()
    host, port = server.server_address[:2]
    sys.stderr.write(
        f"fake CRM on http://{host}:{port} (stops in {args.seconds:g} s, or kill it)\n"
    )
    sys.stderr.flush()
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
