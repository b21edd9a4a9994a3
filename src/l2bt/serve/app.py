"""The HTTP app (SPEC §8, §13): the served models' routes, health and metrics.

    POST /v1/models/{name}/predict      one image -> map, score, decision, version, p-value
    POST /v1/predict                    the same, when exactly one model is served
    GET  /v1/models                     every model: version, status, calibration watch
    POST /v1/models/{name}/load|unload  load (again, if its files changed) or unload one
    GET  /v1/health, /v1/model          liveness; the one model's description
    GET  /v2/health/live|ready, /v2/models/{name}/ready    Open Inference Protocol v2
    GET  /metrics                       Prometheus text (`metrics.py`)

A prediction's road is `service.py`'s; the models and their swaps are `repository.py`'s.
Health in the v2 shape: 200 with {"live"|"ready": true}, 400 with false (the protocol's
"a 4xx status indicates false"); ready once every model has loaded a version. Every error
is `{"error": "<one plain line>"}`: 4xx for what the client sent (also a bad query value,
an unknown path, model or method), 503 when busy, loading failed or shutting down, 500
when a predictor raised on a good image (logged; the service goes on). One log line per
request goes to the `l2bt.serve` logger; shutdown: `server.py`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import FastAPI, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST

from l2bt import __version__
from l2bt.engines import Engine
from l2bt.serve.errors import RequestError
from l2bt.serve.handlers import RequestLog, add_error_handlers, docs_page
from l2bt.serve.linger import LingerOn413
from l2bt.serve.metrics import ServeMetrics
from l2bt.serve.repository import Repository
from l2bt.serve.schemas import (
    ErrorResponse,
    HealthResponse,
    MapFormat,
    MaskFormat,
    ModelOut,
    ModelsOut,
    PredictResponse,
)
from l2bt.serve.service import Service, describe_entry
from l2bt.serve.settings import ServeSettings

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
        404: "no model of that name",
        503: "busy (--queue-size requests of the model, or the bodies' budget), the model "
        "failed to load, or shutting down",
    }.items()
}


def create_app(
    predictor: Engine, name: str = "model", settings: ServeSettings | None = None
) -> FastAPI:
    """The service for one predictor already loaded (a run folder's model or an exported
    file's engine), named `name`."""
    settings, metrics = settings or ServeSettings(), ServeMetrics()
    return repository_app(Repository.of_predictor(predictor, name, settings, metrics), metrics)


def repository_app(repository: Repository, metrics: ServeMetrics) -> FastAPI:
    """The service for the models of `repository`; loading, polling and the predict
    workers run while the app does (its lifespan)."""
    service = Service(repository, repository.settings, metrics)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        repository.start()
        yield
        await repository.close(service.seconds_left())

    app = FastAPI(
        title="l2bt",
        version=__version__,
        lifespan=lifespan,
        description="Anomaly maps, scores and decisions for images (SPEC §8, §13).",
        docs_url=None,  # FastAPI's pages load their scripts from a CDN: blank offline
        redoc_url=None,
    )
    app.state.service = service
    app.add_middleware(LingerOn413, seconds=service.settings.body_timeout)
    app.add_middleware(RequestLog)
    add_error_handlers(app)
    _predict_routes(app, service)
    _model_routes(app, service)
    _health_routes(app, service)

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        return HTMLResponse(docs_page(app))

    return app


def _predict_routes(app: FastAPI, service: Service) -> None:
    @app.post(
        "/v1/models/{name}/predict",
        response_model=PredictResponse,
        responses=ERRORS,
        openapi_extra=IMAGE_BODY,
    )
    async def predict_with(
        request: Request,
        name: str,
        map_format: Annotated[MapFormat, Query(alias="map")] = "none",
        mask_format: Annotated[MaskFormat, Query(alias="mask")] = "none",
    ) -> Response:
        """One image (multipart field `image`, or the raw bytes) -> map, score, decision."""
        return await service.answer(request, name, map_format, mask_format)

    @app.post(
        "/v1/predict", response_model=PredictResponse, responses=ERRORS, openapi_extra=IMAGE_BODY
    )
    async def predict(
        request: Request,
        map_format: Annotated[MapFormat, Query(alias="map")] = "none",
        mask_format: Annotated[MaskFormat, Query(alias="mask")] = "none",
    ) -> Response:
        """The same, when exactly one model is served."""
        return await service.answer(request, only_model(service), map_format, mask_format)


def only_model(service: Service) -> str:
    names = list(service.repository.entries)
    if len(names) != 1:
        raise RequestError(
            400,
            f"{len(names)} models are served ({', '.join(names)}): "
            "POST /v1/models/{name}/predict",
        )
    return names[0]


def _model_routes(app: FastAPI, service: Service) -> None:
    repository = service.repository

    @app.get("/v1/models")
    async def models() -> ModelsOut:
        """Every served model: version, status (with its reason), calibration watch."""
        return ModelsOut.model_validate(
            {"models": [describe_entry(e) for e in repository.entries.values()]}
        )

    @app.post("/v1/models/{name}/load")
    async def load(name: str) -> ModelOut:
        """Load the model (again, when its files changed); answered once it is loaded."""
        entry = repository.entry(name)
        if entry.live is None or entry.loading is not None or repository.changed(entry):
            await repository.load(entry)
        if entry.live is None:
            raise RequestError(503, f"model {name} failed to load: {entry.failure}")
        return ModelOut.model_validate(describe_entry(entry))

    @app.post("/v1/models/{name}/unload")
    async def unload(name: str) -> ModelOut:
        """Unload the model: its requests in flight finish; its next request loads it."""
        entry = repository.entry(name)
        repository.unload(entry)
        return ModelOut.model_validate(describe_entry(entry))

    @app.get("/v1/model")
    async def model() -> dict[str, Any]:
        """The one served model's description (its record, as config.json holds it)."""
        entry = repository.entry(only_model(service))
        if entry.live is None:
            raise RequestError(503, f"model {entry.source.name} is {entry.status}")
        return {**entry.live.description, "run": entry.source.name}


def _health_routes(app: FastAPI, service: Service) -> None:
    repository = service.repository

    @app.get("/v1/health")
    async def health() -> HealthResponse:
        return HealthResponse()

    @app.get("/v2/health/live")
    async def live() -> dict[str, bool]:
        return {"live": True}

    @app.get("/v2/health/ready")
    async def ready() -> JSONResponse:
        """Ready once every model has loaded a version (200), else 400."""
        return JSONResponse({"ready": repository.ready}, 200 if repository.ready else 400)

    @app.get("/v2/models/{name}/ready")
    async def model_ready(name: str) -> JSONResponse:
        is_ready = repository.entry(name).live is not None
        return JSONResponse({"name": name, "ready": is_ready}, 200 if is_ready else 400)

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        """Prometheus text format."""
        models = [(n, e.live, e.in_flight) for n, e in repository.entries.items()]
        return Response(service.metrics.text(models), media_type=CONTENT_TYPE_LATEST)
