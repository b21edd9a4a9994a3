"""The HTTP app (SPEC §8): `POST /v1/predict`, `GET /v1/health`, `GET /v1/model`.

A request to predict goes: admission (at most `queue_size` requests at once, one more
is answered 503 before its body is read) -> body, counted while it arrives (413 past
`max_body_bytes`; multipart field `image`, or the raw bytes with any other content
type) -> decoding in a thread (`decode.py`: 413 past `max_pixels` from the header, 415
not an image, 400 empty or truncated) -> the one predict worker (`batching.py`) -> the
JSON, encoded in a thread. Memory held for requests is therefore bounded by
`queue_size` × (body + decoded image + map and its encodings); the predictor holds one
batch (`batch_size` images of one size) at a time.

Every error is `{"error": "<one plain line>"}`: 4xx for what the client sent (also a
bad query value, an unknown path or method), 503 when busy or shutting down, 500 when
the predictor raised on a good image (logged with its traceback; the worker goes on).
One log line per request (method, path, status, bytes sent, seconds) goes to the
`l2bt.serve` logger.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Annotated, Any

import numpy as np
from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers, UploadFile
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from l2bt import __version__
from l2bt.errors import InputError
from l2bt.prediction import Prediction, Predictor
from l2bt.serve.batching import BatchWorker, WorkerStopped
from l2bt.serve.decode import decode_image
from l2bt.serve.encode import prediction_response
from l2bt.serve.errors import RequestError, describe_exception, one_line
from l2bt.serve.schemas import (
    ErrorResponse,
    HealthResponse,
    MapFormat,
    MaskFormat,
    PredictResponse,
)
from l2bt.serve.settings import ServeSettings

LOG = logging.getLogger("l2bt.serve")

IMAGE_BODY = {"requestBody": {"required": True, "content": {
    "multipart/form-data": {"schema": {"type": "object", "required": ["image"], "properties": {
        "image": {"type": "string", "format": "binary"}}}},
    "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
}}}
ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorResponse, "description": meaning} for status, meaning in {
        400: "empty, truncated or undecodable image, or one the model cannot take; bad "
             "query; mask=png for a run without thresholds",
        413: "body over --max-body-mb, or image over --max-pixels",
        415: "not an image",
        500: "the predictor failed on this image",
        503: "busy (--queue-size requests in progress) or shutting down",
    }.items()
}


def model_id(description: dict[str, Any]) -> str:
    """A short name for the model in every answer: teacher/weights id/run name."""
    parts = (description.get("config", {}).get("teacher", {}).get("variant"),
             description.get("teacher", {}).get("weights_id"), description.get("run"))
    return "/".join(str(p) for p in parts if p) or "unknown"


class Service:
    """What the routes share: the settings, the run's description and the worker."""

    def __init__(self, predictor: Predictor, description: dict[str, Any],
                 settings: ServeSettings) -> None:
        self.settings = settings
        self.description = description
        self.model = model_id(description)
        thresholds = description.get("thresholds")
        self.image_threshold = None if thresholds is None else float(thresholds["image"])
        self.normal_scores = description.get("normal_patch_scores")
        self.worker = BatchWorker(predictor, settings.batch_size)
        self.admitted = 0  # requests in progress; changed on the event loop's thread only

    async def answer(self, request: Request, map_format: MapFormat,
                     mask_format: MaskFormat) -> Response:
        started = time.perf_counter()
        if mask_format == "png" and self.image_threshold is None:
            raise RequestError(400, "mask=png needs thresholds and this run has none "
                               "(add them with `l2bt calibrate`)")
        with self.admission():
            body = await read_image_body(request, self.settings.max_body_bytes)
            image = await run_in_threadpool(decode_image, body, self.settings.max_pixels)
            del body
            prediction = await self.predict(image)
            del image
            return await run_in_threadpool(self.render, prediction, started, map_format,
                                           mask_format)

    def render(self, prediction: Prediction, started: float, map_format: MapFormat,
               mask_format: MaskFormat) -> Response:
        """The JSON bytes, made here (in a thread) rather than by FastAPI on the event
        loop: a map's base64 text can be tens of megabytes."""
        body = prediction_response(prediction, self.image_threshold, self.model, started,
                                   map_format, mask_format, self.normal_scores)
        return Response(body.model_dump_json(exclude_unset=True), media_type="application/json")

    @contextmanager
    def admission(self) -> Iterator[None]:
        if self.admitted >= self.settings.queue_size:
            raise RequestError(503, f"server busy: {self.admitted} requests in progress "
                               "(--queue-size); retry later")
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


async def read_image_body(request: Request, limit: int) -> bytes:
    """The image file's bytes: multipart field `image`, or the whole raw body."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise body_too_large(limit)
    chunks = limited_chunks(request.stream(), limit)
    if request.headers.get("content-type", "").lower().startswith("multipart/form-data"):
        return await multipart_image(request.headers, chunks)
    return b"".join([chunk async for chunk in chunks])


def body_too_large(limit: int) -> RequestError:
    return RequestError(413, f"request body over the limit of {limit:,} bytes (--max-body-mb)")


async def limited_chunks(stream: AsyncIterator[bytes], limit: int
                         ) -> AsyncGenerator[bytes, None]:
    """The body's chunks as they arrive; 413 as soon as they pass `limit` bytes."""
    size = 0
    try:
        async for chunk in stream:
            size += len(chunk)
            if size > limit:
                raise body_too_large(limit)
            yield chunk
    except ClientDisconnect as e:
        raise RequestError(400, "the client closed the connection before the body ended") from e


async def multipart_image(headers: Headers, chunks: AsyncGenerator[bytes, None]) -> bytes:
    """Field `image` of a multipart body (the file spooled to disk past 1 MiB)."""
    try:
        form = await MultiPartParser(headers, chunks, max_files=1, max_fields=16).parse()
    except MultiPartException as e:
        raise RequestError(400, f"malformed multipart body ({e.message})") from e
    try:
        part = form.get("image")
        if part is None:
            raise RequestError(400, "the multipart body has no field 'image' "
                               "(send the file as image=@FILE)")
        if not isinstance(part, UploadFile):
            raise RequestError(400, "multipart field 'image' is text, not a file")
        return await part.read()
    finally:
        await form.close()


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
            LOG.info("%s %s %d %d bytes %.3f s", scope["method"], scope["path"], status, sent,
                     time.perf_counter() - started)


def error_response(status: int, message: str) -> JSONResponse:
    headers = {"Retry-After": "1"} if status == 503 else None
    return JSONResponse({"error": one_line(message)}, status_code=status, headers=headers)


def add_error_handlers(app: FastAPI) -> None:
    async def request_error(_: Request, error: Exception) -> JSONResponse:
        assert isinstance(error, RequestError)
        return error_response(error.status, error.message)

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


def create_app(predictor: Predictor, description: dict[str, Any],
               settings: ServeSettings | None = None) -> FastAPI:
    """The service for `predictor`, described by `description` (a run's config.json,
    plus "run": its name); the predict worker runs while the app does (its lifespan)."""
    service = Service(predictor, description, settings or ServeSettings())

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        service.worker.start()
        yield
        await run_in_threadpool(service.worker.stop)

    app = FastAPI(title="l2bt", version=__version__, lifespan=lifespan,
                  description="Anomaly maps, scores and decisions for images (SPEC §8).")
    app.state.service = service
    app.add_middleware(RequestLog)
    add_error_handlers(app)

    @app.post("/v1/predict", response_model=PredictResponse, responses=ERRORS,
              openapi_extra=IMAGE_BODY)
    async def predict(request: Request,
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
        """The run's description (its config.json)."""
        return service.description

    return app
