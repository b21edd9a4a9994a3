"""Running the app with uvicorn: our own request log lines on stderr instead of uvicorn's
access log. Ctrl-C (or SIGTERM) stops taking requests, lets those in progress finish,
then stops the predict worker; after Ctrl-C `l2bt serve` exits 0 (after SIGTERM uvicorn
lets the signal end the process, as a service manager expects)."""

from __future__ import annotations

import contextlib
import logging
import sys

import uvicorn
from fastapi import FastAPI

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def server_config(app: FastAPI, host: str, port: int) -> uvicorn.Config:
    """uvicorn's settings for the app; port 0 picks a free port."""
    return uvicorn.Config(app, host=host, port=port, log_config=None, access_log=False,
                          lifespan="on")


def run_server(app: FastAPI, host: str = "127.0.0.1", port: int = 8000) -> None:
    """Serve `app` until Ctrl-C, logging to stderr; returns once it has shut down."""
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT, stream=sys.stderr)
    with contextlib.suppress(KeyboardInterrupt):  # uvicorn re-raises the Ctrl-C it shut
        uvicorn.Server(server_config(app, host, port)).run()  # down for: a clean stop
