"""Running the app with uvicorn: our own request log lines on stderr instead of uvicorn's
access log; Ctrl-C (or SIGTERM) stops taking requests, lets those in progress finish,
then stops the predict worker."""

from __future__ import annotations

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
    """Serve `app` until interrupted, logging to stderr."""
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT, stream=sys.stderr)
    uvicorn.Server(server_config(app, host, port)).run()
