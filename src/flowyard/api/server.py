"""``flowyard serve``: the app under uvicorn, stopping within ``shutdown_grace_s``.

On SIGTERM (or Ctrl+C) the server stops accepting connections and, at the same moment, the
in-process workers stop claiming and start draining their steps; open streams are closed
by uvicorn with 1012 (Service Restart: a client reconnects with ``?after=<last id>``), and
HTTP requests still running get the rest of the grace period. Connections and steps share
that one period instead of running one grace after the other, so the process ends within
``shutdown_grace_s`` plus the time to commit finished steps, release interrupted ones and
exit (about 0.1 s). A graceful stop exits 0.

The server sends no ``Server`` header: it names the implementation for nobody's benefit.
"""

from __future__ import annotations

import contextlib
import gc
import math
import signal
import socket
import threading
from collections.abc import Iterator

import uvicorn
from fastapi import FastAPI

from flowyard.api.app import begin_shutdown, create_app
from flowyard.nodes.registry import NodeRegistry
from flowyard.settings import Settings

#: uvicorn's exit code for an app that failed to start.
STARTUP_FAILURE = 3


class Server(uvicorn.Server):
    """uvicorn's server that starts stopping the app's workers when it starts shutting
    down, and exits normally (0) after a graceful stop on a signal."""

    def __init__(self, config: uvicorn.Config, app: FastAPI) -> None:
        super().__init__(config)
        self.app = app

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        """Stop the in-process workers now, then shut the connections down (bounded by
        ``timeout_graceful_shutdown``) and run the app's lifespan shutdown."""
        begin_shutdown(self.app)
        await super().shutdown(sockets=sockets)

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        """SIGINT and SIGTERM start a graceful shutdown, like uvicorn's own handlers (a second
        Ctrl+C forces it), but the signal is not raised again once the server stopped:
        uvicorn does, so a process that stopped cleanly would die of SIGTERM (exit 143)."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        signals = (signal.SIGINT, signal.SIGTERM)
        previous = {sig: signal.signal(sig, self.handle_exit) for sig in signals}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def serve(settings: Settings, *, registry: NodeRegistry | None = None) -> int:
    """Serve the API until SIGTERM or SIGINT; the exit code (0, or 3 when the app could not
    start). ``registry``: the node types to serve (default: loaded from ``settings``)."""
    app = create_app(settings, registry=registry)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level.lower(),
        server_header=False,
        timeout_graceful_shutdown=math.ceil(settings.shutdown_grace_s),
    )
    server = Server(config, app)
    server.run()
    # Everything is closed. The interpreter's last garbage collection would walk the whole
    # heap (1-2 s measured on a busy 2-core machine, past the grace period); frozen objects
    # are skipped, and nothing left needs a finalizer to run.
    gc.freeze()
    return 0 if server.started else STARTUP_FAILURE
