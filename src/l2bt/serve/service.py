"""The road of one prediction request, and what the routes share.

body (`body.py`: counted while it arrives, 413 past `max_body_bytes`, 408 when it stops
arriving; multipart field `image`, or the raw bytes) -> admission (the model's live
version, at most `queue_size` requests of a model at once: one more is 503) -> decoding in
a thread (`decode.py`: 413 when the header's size needs arrays over `max_pixels`, 415 not
a supported image, 400 empty, truncated or damaged) -> the version's predict worker
(`batching.py`) -> the p-value and the calibration watch -> the JSON, encoded in a thread.
The body is read before admission so that a client that stalls holds no slot, only the
bytes it sent: bodies together hold at most `queue_size` × `max_body_bytes` (503 past
that). Memory held for requests is therefore bounded by that budget plus, per model,
`queue_size` × (decoded image + map and its encodings). Every stage is timed and every
answer counted by model and status code (`metrics.py`).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from fastapi import Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from l2bt.decisions.decide import DEFECTIVE
from l2bt.errors import InputError
from l2bt.prediction import Prediction
from l2bt.run import RunDescription
from l2bt.serve.batching import WorkerStopped
from l2bt.serve.body import Uploads, read_image_body
from l2bt.serve.decode import decode_image
from l2bt.serve.encode import Made, prediction_response
from l2bt.serve.errors import RequestError, describe_exception
from l2bt.serve.metrics import ServeMetrics
from l2bt.serve.repository import ModelEntry, Repository
from l2bt.serve.schemas import MapFormat, MaskFormat, ModelOut
from l2bt.serve.settings import ServeSettings
from l2bt.serve.version import Answer, ModelVersion
from l2bt.serve.watch import WatchState


def model_id(record: RunDescription, name: str) -> str:
    """A short name for the model in every answer: teacher/weights id/name."""
    variant = None if record.teacher is None else record.teacher.variant
    parts = (variant, record.weights_id, name)
    return "/".join(str(p) for p in parts if p) or "unknown"


class Service:
    """The repository, the bodies' budget, the metrics and the settings."""

    def __init__(
        self, repository: Repository, settings: ServeSettings, metrics: ServeMetrics
    ) -> None:
        self.repository, self.settings, self.metrics = repository, settings, metrics
        self.uploads = Uploads(settings.queue_size * settings.max_body_bytes)
        self.stop_by: float | None = None  # time.monotonic() the shutdown must end by

    async def answer(
        self, request: Request, name: str, map_format: MapFormat, mask_format: MaskFormat
    ) -> Response:
        """One prediction request, counted by model and status code."""
        label, code = (name if name in self.repository.entries else "unknown"), 500
        try:
            response = await self._answer(request, name, map_format, mask_format)
            code = 200
            return response
        except RequestError as e:
            code = e.status
            raise
        finally:
            self.metrics.requests.labels(label, str(code)).inc()

    async def _answer(
        self, request: Request, name: str, map_format: MapFormat, mask_format: MaskFormat
    ) -> Response:
        started = time.perf_counter()
        entry = self.repository.entry(name)
        with self.uploads.ticket() as ticket:
            body = await read_image_body(request, self.settings, self.uploads, ticket)
            self._timed(name, "body", started)
            version = await self.repository.acquire(entry)
            try:
                if mask_format == "png" and version.record.thresholds is None:
                    raise RequestError(
                        400,
                        "mask=png needs thresholds and this run has none (add them with "
                        "`l2bt calibrate`)",
                    )
                answer = await self._predict(version, body, name)
                del body
                encoding = time.perf_counter()
                response = await run_in_threadpool(
                    self._render, entry, version, answer, started, (map_format, mask_format)
                )
                self._timed(name, "encode", encoding)
                return response
            finally:
                self.repository.release(entry, version)

    async def _predict(self, version: ModelVersion, body: bytes, name: str) -> Answer:
        decoding = time.perf_counter()
        image = await run_in_threadpool(
            decode_image, body, version.header_check, version.record.bit_depth
        )
        self._timed(name, "decode", decoding)
        answer = version.answered(await self._prediction(version, image))
        if answer.prediction.verdict == DEFECTIVE:
            self.metrics.defective.labels(name).inc()
        if answer.p_value is not None:
            self.metrics.p_value.labels(name).observe(answer.p_value)
        return answer

    async def _prediction(self, version: ModelVersion, image: np.ndarray) -> Prediction:
        try:
            return await version.predict(image)
        except WorkerStopped as e:
            raise RequestError(503, str(e)) from e
        except InputError as e:
            raise RequestError(400, f"cannot predict this image: {e}") from e
        except Exception as e:  # the predictor's own failure: this request only
            raise RequestError(500, f"prediction failed ({describe_exception(e)})") from e

    def _timed(self, name: str, stage: str, since: float) -> None:
        self.metrics.stage.labels(name, stage).observe(time.perf_counter() - since)

    def _render(
        self,
        entry: ModelEntry,
        version: ModelVersion,
        answer: Answer,
        started: float,
        formats: tuple[MapFormat, MaskFormat],
    ) -> Response:
        """The JSON bytes, made here (in a thread) rather than by FastAPI on the event
        loop: a map's base64 text can be tens of megabytes."""
        thresholds = version.record.thresholds
        body = prediction_response(
            answer.prediction,
            None if thresholds is None else thresholds.image,
            Made(model_id(version.record, entry.source.name), version.digest, answer.p_value),
            started,
            *formats,
            version.record.colour_range,
        )
        return Response(body.model_dump_json(exclude_unset=True), media_type="application/json")

    def begin_shutdown(self) -> None:
        """Drop the bodies still arriving; what is past its body has `shutdown_timeout`."""
        self.stop_by = time.monotonic() + self.settings.shutdown_timeout
        self.uploads.close()

    def seconds_left(self) -> float:
        if self.stop_by is None:
            return self.settings.shutdown_timeout
        return max(self.stop_by - time.monotonic(), 0.0)


def describe_entry(entry: ModelEntry) -> dict[str, Any]:
    """One model as `GET /v1/models` lists it (`schemas.ModelOut`)."""
    live = entry.live
    state = None if live is None else live.watch_state
    replacement = None
    if live is not None and entry.loading is not None:
        replacement = {"status": "loading", "reason": None}
    elif live is not None and entry.failure is not None:
        replacement = {"status": "failed", "reason": entry.failure}
    described = {
        "name": entry.source.name,
        "source": str(entry.source.path),
        "status": entry.status,
        "reason": entry.failure if live is None else None,
        "version": None if live is None else live.digest,
        "loaded_at": None if live is None else live.loaded_at,
        "in_flight": entry.in_flight,
        "calibration": "off" if state is None else ("drifted" if state.drifted else "holding"),
        "watch": None if state is None else _watch(state),
        "watch_off": None if live is None else live.watch_off,
        "replacement": replacement,
    }
    return ModelOut.model_validate(described).model_dump()


def _watch(state: WatchState) -> dict[str, Any]:
    return {
        "parts": state.parts_seen,
        "watched": state.parts_watched,
        "log_martingale": state.log_martingale,
        "alarm_at": 1.0 / state.delta,
        "drifted_at": state.drifted_at,
    }
