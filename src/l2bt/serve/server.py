"""Running the app with uvicorn: our own request log lines on stderr instead of uvicorn's
access log. Ctrl-C (or SIGTERM) stops taking connections, answers 503 to the bodies still
arriving (stalled uploads included), lets the requests past their body finish for up to
`--shutdown-timeout` seconds (then cancels them), then stops the predict worker; after
Ctrl-C `l2bt serve` exits 0 (after SIGTERM uvicorn lets the signal end the process, as a
service manager expects)."""

from __future__ import annotations

import contextlib
import logging
import socket
import sys

import uvicorn
from fastapi import FastAPI

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class Server(uvicorn.Server):
    """uvicorn's server for an app made by `create_app` (port 0 picks a free port): its
    shutdown first drops the bodies still arriving (`Service.begin_shutdown`)."""

    def __init__(self, app: FastAPI, host: str, port: int) -> None:
        self.service = app.state.service
        super().__init__(
            uvicorn.Config(
                app,
                host=host,
                port=port,
                log_config=None,
                access_log=False,
                lifespan="on",
                timeout_graceful_shutdown=self.service.settings.shutdown_timeout,
            )
        )

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        self.service.begin_shutdown()
        await super().shutdown(sockets)


def run_server(app: FastAPI, host: str = "127.0.0.1", port: int = 8000) -> None:
    """Serve `app` until Ctrl-C, logging to stderr; returns once it has shut down."""
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT, stream=sys.stderr)
    with contextlib.suppress(KeyboardInterrupt):  # uvicorn re-raises the Ctrl-C it shut
        Server(app, host, port).run()  # down for: a clean stop
