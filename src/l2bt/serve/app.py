"""The HTTP app (SPEC §8): `POST /v1/predict`, `GET /v1/health`, `GET /v1/model`.

A request to predict goes: body (`body.py`: counted while it arrives, 413 past
`max_body_bytes`; 408 when it stops arriving; multipart field `image`, or the raw bytes
with any other content type) -> admission (at most `queue_size` requests past their body
at once, one more is answered 503) -> decoding in a thread (`decode.py`: 413 when the
header's size needs arrays over `max_pixels`, 415 not a supported image, 400 empty or
truncated) -> the one predict worker (`batching.py`) -> the JSON, encoded in a thread.
The body is read before admission so that a client that stalls holds no slot, only the
bytes it sent: bodies together hold at most `queue_size` × `max_body_bytes` (503 past
that) and each is dropped (408, connection closed) by its deadlines. Memory held for
requests is therefore bounded by that budget plus `queue_size` × (decoded image + map
and its encodings); the predictor holds one batch (`batch_size` images of one size).

Shutdown (`server.py`): bodies still arriving are answered 503 at once, requests past
their body finish within `shutdown_timeout`. Every error is `{"error": "<one plain
line>"}`: 4xx for what the client sent (also a bad query value, an unknown path or
method), 503 when busy or shutting down, 500 when the predictor raised on a good image
(logged; the worker goes on). One log line per request goes to the `l2bt.serve` logger.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from html import escape
from typing import Annotated, Any

import numpy as np
from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from l2bt import __version__
from l2bt.engines import Engine
from l2bt.errors import InputError
from l2bt.prediction import Prediction
from l2bt.preprocess import header_limit
from l2bt.run import RunDescription
from l2bt.serve.batching import BatchWorker, WorkerStopped
from l2bt.serve.body import Uploads, read_image_body
from l2bt.serve.decode import decode_image
from l2bt.serve.encode import prediction_response
from l2bt.serve.errors import RequestError, describe_exception, one_line
from l2bt.serve.linger import LingerOn413
from l2bt.serve.schemas import (
    ErrorResponse,
    HealthResponse,
    MapFormat,
    MaskFormat,
    PredictResponse,
)
from l2bt.serve.settings import ServeSettings

LOG = logging.getLogger("l2bt.serve")

IMAGE_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["image"],
                    "properties": {"image": {"type": "string", "format": "binary"}},
                }
            },
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
        },
    }
}
ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorResponse, "description": meaning}
    for status, meaning in {
        400: "empty, truncated or undecodable image, or one the model cannot take; bad "
        "query; mask=png for a run without thresholds",
        408: "the body stopped arriving (--body-timeout, --min-body-rate)",
        413: "body over --max-body-mb, or an image whose arrays would pass --max-pixels",
        415: "not an image in a supported format (PNG, JPEG, TIFF, BMP, WebP)",
        500: "the predictor failed on this image",
        503: "busy (--queue-size requests past their body, or the bodies' budget) or shutting down",
    }.items()
}


def model_id(record: RunDescription, name: str) -> str:
    """A short name for the model in every answer: teacher/weights id/run name."""
    variant = None if record.teacher is None else record.teacher.variant
    parts = (variant, record.weights_id, name)
    return "/".join(str(p) for p in parts if p) or "unknown"


class Service:
    """What the routes share: the settings, the served model's record and the worker."""

    def __init__(self, predictor: Engine, name: str, settings: ServeSettings) -> None:
        self.settings = settings
        self.record = predictor.record
        self.description = {**predictor.describe(), "run": name}
        self.model = model_id(self.record, name)
        thresholds = self.record.thresholds
        self.image_threshold = None if thresholds is None else thresholds.image
        self.header_check = header_limit(self.record.teacher, settings.max_pixels)
        self.worker = BatchWorker(predictor, settings.batch_size)
        self.uploads = Uploads(settings.queue_size * settings.max_body_bytes)
        self.admitted = 0  # requests past their body; changed on the event loop's thread only
        self.stop_by: float | None = None  # time.monotonic() the shutdown must end by

    async def answer(
        self, request: Request, map_format: MapFormat, mask_format: MaskFormat
    ) -> Response:
        started = time.perf_counter()
        if mask_format == "png" and self.image_threshold is None:
            raise RequestError(
                400,
                "mask=png needs thresholds and this run has none (add them with `l2bt calibrate`)",
            )
        with self.uploads.ticket() as ticket:
            body = await read_image_body(request, self.settings, self.uploads, ticket)
            with self.admission():
                image = await run_in_threadpool(
                    decode_image, body, self.header_check, self.record.bit_depth
                )
                del body
                prediction = await self.predict(image)
                del image
                return await run_in_threadpool(
                    self.render, prediction, started, map_format, mask_format
                )

    def begin_shutdown(self) -> None:
        """Drop the bodies still arriving; what is past its body has `shutdown_timeout`."""
        self.stop_by = time.monotonic() + self.settings.shutdown_timeout
        self.uploads.close()

    def stop_worker(self) -> None:
        """Stop the predict worker, waiting for its batch until the shutdown's end."""
        left = (
            self.settings.shutdown_timeout
            if self.stop_by is None
            else self.stop_by - time.monotonic()
        )
        self.worker.stop(max(left, 0.0))

    def render(
        self, prediction: Prediction, started: float, map_format: MapFormat, mask_format: MaskFormat
    ) -> Response:
        """The JSON bytes, made here (in a thread) rather than by FastAPI on the event
        loop: a map's base64 text can be tens of megabytes."""
        body = prediction_response(
            prediction,
            self.image_threshold,
            self.model,
            started,
            map_format,
            mask_format,
            self.record.colour_range,
        )
        return Response(body.model_dump_json(exclude_unset=True), media_type="application/json")

    @contextmanager
    def admission(self) -> Iterator[None]:
        if self.admitted >= self.settings.queue_size:
            raise RequestError(
                503,
                f"server busy: {self.admitted} requests in progress (--queue-size); retry later",
            )
        self.admitted += 1
        try:
            yield
        finally:
            self.admitted -= 1

    async def predict(self, image: np.ndarray) -> Prediction:
        try:
            return await asyncio.wrap_future(self.worker.submit(image))
        except WorkerStopped as e:
            raise RequestError(503, str(e)) from e
        except InputError as e:
            raise RequestError(400, f"cannot predict this image: {e}") from e
        except Exception as e:  # the predictor's own failure: this request only
            raise RequestError(500, f"prediction failed ({describe_exception(e)})") from e


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


def create_app(
    predictor: Engine, name: str = "model", settings: ServeSettings | None = None
) -> FastAPI:
    """The service for `predictor` (a run folder's model or an exported file's engine),
    named `name` in its answers; its predict worker runs while the app does."""
    service = Service(predictor, name, settings or ServeSettings())

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        service.worker.start()
        yield
        await run_in_threadpool(service.stop_worker)

    app = FastAPI(
        title="l2bt",
        version=__version__,
        lifespan=lifespan,
        description="Anomaly maps, scores and decisions for images (SPEC §8).",
        docs_url=None,  # FastAPI's pages load their scripts from a CDN: blank offline
        redoc_url=None,
    )
    app.state.service = service
    app.add_middleware(LingerOn413, seconds=service.settings.body_timeout)
    app.add_middleware(RequestLog)
    add_error_handlers(app)

    @app.post(
        "/v1/predict", response_model=PredictResponse, responses=ERRORS, openapi_extra=IMAGE_BODY
    )
    async def predict(
        request: Request,
        map_format: Annotated[MapFormat, Query(alias="map")] = "none",
        mask_format: Annotated[MaskFormat, Query(alias="mask")] = "none",
    ) -> Response:
        """One image (multipart field `image`, or the raw bytes) -> map, score, decision."""
        return await service.answer(request, map_format, mask_format)

    @app.get("/v1/health")
    async def health() -> HealthResponse:
        return HealthResponse()

    @app.get("/v1/model")
    async def model() -> dict[str, Any]:
        """The run's description (its record, as config.json holds it, and the engine)."""
        return service.description

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        return HTMLResponse(docs_page(app))

    return app


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
