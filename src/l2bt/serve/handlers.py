"""What every route shares: errors as one-line JSON, one log line per request, the offline
`/docs` page."""

from __future__ import annotations

import logging
import time
from html import escape

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from l2bt.serve.errors import RequestError, describe_exception, one_line

LOG = logging.getLogger("l2bt.serve")


class RequestLog:
    """One log line per HTTP request: method, path, status, bytes sent, seconds."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status, sent = 500, 0

        async def counting_send(message: Message) -> None:
            nonlocal status, sent
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body":
                sent += len(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, receive, counting_send)
        finally:
            LOG.info(
                "%s %s %d %d bytes %.3f s",
                scope["method"],
                scope["path"],
                status,
                sent,
                time.perf_counter() - started,
            )


def error_response(status: int, message: str, close_connection: bool = False) -> JSONResponse:
    headers = {"Retry-After": "1"} if status == 503 else {}
    if close_connection:  # the body was not read to its end: drop what is left of it
        headers["Connection"] = "close"
    return JSONResponse({"error": one_line(message)}, status_code=status, headers=headers)


def add_error_handlers(app: FastAPI) -> None:
    async def request_error(_: Request, error: Exception) -> JSONResponse:
        assert isinstance(error, RequestError)
        return error_response(error.status, error.message, error.close_connection)

    async def invalid_request(_: Request, error: Exception) -> JSONResponse:
        assert isinstance(error, RequestValidationError)
        first = error.errors()[0]
        where = " ".join(str(part) for part in first.get("loc", ()))
        return error_response(400, f"{where}: {first.get('msg', 'invalid value')}")

    async def http_error(_: Request, error: Exception) -> JSONResponse:
        assert isinstance(error, HTTPException)
        return error_response(error.status_code, str(error.detail))

    async def unexpected(_: Request, error: Exception) -> JSONResponse:  # uvicorn logs it
        return error_response(500, f"internal error ({describe_exception(error)})")

    app.add_exception_handler(RequestError, request_error)
    app.add_exception_handler(RequestValidationError, invalid_request)
    app.add_exception_handler(HTTPException, http_error)
    app.add_exception_handler(Exception, unexpected)


def docs_page(app: FastAPI) -> str:
    """An offline page (no script, no stylesheet, nothing fetched) listing the endpoints,
    their query parameters and descriptions, and linking the OpenAPI schema."""
    rows = []
    for path, operations in app.openapi()["paths"].items():
        for method, operation in operations.items():
            names = [p["name"] for p in operation.get("parameters", [])]
            query = f"?{'&'.join(f'{n}=…' for n in names)}" if names else ""
            about = operation.get("description") or operation.get("summary", "")
            rows.append(
                f"<tr><td><code>{method.upper()} {escape(path + query)}</code></td>"
                f"<td>{escape(about)}</td></tr>"
            )
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{escape(app.title)} API"
        f"</title></head><body><h1>{escape(app.title)} {escape(app.version)} API</h1>"
        f"<p>{escape(app.description)}</p><table border='1' cellpadding='4'>"
        f"<tr><th>endpoint</th><th>what it does</th></tr>{''.join(rows)}</table>"
        "<p>The full schema: <a href='/openapi.json'>/openapi.json</a>.</p></body></html>"
    )
