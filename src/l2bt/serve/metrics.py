"""The service's metrics in Prometheus' text format (`GET /metrics`, `prometheus_client`).

Counted as requests end: requests by model and status code, the seconds of each stage of
a prediction (body, decode, queue, predict, encode), batch sizes, parts called
defective, the parts' conformal p-values. Read from the repository when scraped: each
model's queue depth, requests in flight, whether a version is loaded, and its calibration
watch (the martingale's log value, the flag, the parts watched). Everything is labelled
by model name, so counters go on across a swap of versions. One registry per app.
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from l2bt.serve.batching import BatchObserver
from l2bt.serve.version import ModelVersion

STAGES = ("body", "decode", "queue", "predict", "encode")
SECONDS = (0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0)
BATCHES = (1, 2, 4, 8, 16, 32)
P_VALUES = (0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 0.75, 1.0)


class ServeMetrics:
    """The app's metrics (see the module docstring)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("l2bt_requests", "Requests answered", ["model", "code"], registry=r)
        self.stage = Histogram(
            "l2bt_stage_seconds",
            "Seconds of a stage",
            ["model", "stage"],
            buckets=SECONDS,
            registry=r,
        )
        self.batch = Histogram(
            "l2bt_batch_size", "Images per predict batch", ["model"], buckets=BATCHES, registry=r
        )
        self.defective = Counter("l2bt_defective", "Parts called defective", ["model"], registry=r)
        self.p_value = Histogram(
            "l2bt_p_value", "Parts' conformal p-values", ["model"], buckets=P_VALUES, registry=r
        )
        self.queue = Gauge("l2bt_queue_depth", "Images waiting", ["model"], registry=r)
        self.in_flight = Gauge("l2bt_in_flight", "Requests in progress", ["model"], registry=r)
        self.loaded = Gauge("l2bt_loaded", "1 when a version is loaded", ["model"], registry=r)
        self.log_martingale = Gauge(
            "l2bt_calibration_log_martingale",
            "Log of the watch's martingale",
            ["model"],
            registry=r,
        )
        self.drifted = Gauge(
            "l2bt_calibration_drifted", "1 once the watch raised its flag", ["model"], registry=r
        )
        self.watched = Gauge(
            "l2bt_calibration_watched_parts", "Parts that fed the watch", ["model"], registry=r
        )

    def batch_observer(self, model: str) -> BatchObserver:
        """The worker's `on_batch` for `model`: batch size, queue and predict seconds."""

        def observe(size: int, waited: list[float], seconds: float) -> None:
            self.batch.labels(model).observe(size)
            for wait in waited:
                self.stage.labels(model, "queue").observe(wait)
                self.stage.labels(model, "predict").observe(seconds)

        return observe

    def text(self, models: Iterable[tuple[str, ModelVersion | None, int]]) -> bytes:
        """The exposition, the gauges read from (name, live version, in flight) first."""
        for name, version, in_flight in models:
            self.in_flight.labels(name).set(in_flight)
            self.loaded.labels(name).set(version is not None)
            self.queue.labels(name).set(0 if version is None else version.worker.waiting())
            state = None if version is None else version.watch_state
            if state is not None:
                self.log_martingale.labels(name).set(state.log_martingale)
                self.drifted.labels(name).set(state.drifted)
                self.watched.labels(name).set(state.parts_watched)
        return generate_latest(self.registry)
