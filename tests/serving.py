"""Shared by the service's tests (never a test file itself): a tiny fitted run, a real
uvicorn server on 127.0.0.1 (a free port), a held predictor, and the client side: encoded
images posted with a timeout only so that a broken server cannot hang the suite."""

from __future__ import annotations

import io
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx")

from PIL import Image  # noqa: E402

from helpers import textured_image  # noqa: E402
from l2bt.config import L2BTConfig, TeacherConfig, TrainConfig  # noqa: E402
from l2bt.decisions.thresholds import Thresholds  # noqa: E402
from l2bt.model import L2BT  # noqa: E402
from l2bt.serve import Server, ServeSettings, create_app  # noqa: E402

TIMEOUT = 60.0  # seconds: only so that a broken server fails the test instead of hanging it
KEYS = {"score", "verdict", "threshold", "width", "height", "regions", "seconds", "model"}
KEYS |= {"version", "p_value"}  # SPEC §13


# ---- the model and the server -------------------------------------------------------------


TIMEOUT = 60.0  # seconds: only so that a broken server fails the test instead of hanging it


def fit_tiny_run(root: Path) -> tuple[Path, L2BT]:
    """A tiny random-teacher run (one epoch on 4 images) and its folder, with thresholds
    set inside the maps' range (a random teacher separates nothing, so calibrated ones
    would give empty masks): pixel at the lower of the sample maps' 90th percentiles,
    image at the median sample score."""
    train = []
    for seed in range(4):
        train.append(root / f"train/{seed}.png")
        train[-1].parent.mkdir(exist_ok=True)
        Image.fromarray(textured_image(40 + 4 * seed, 50, seed)).save(train[-1])
    config = L2BTConfig(TeacherConfig("dinov2_vits14", "random", 56), TrainConfig(epochs=1))
    model = L2BT.fit(train, config, device="cpu", cache_dir=root / "cache")
    predictions = [model.predict(image) for image in sample_images()]
    model.thresholds = Thresholds(
        image=float(np.median([p.score for p in predictions])),
        pixel=min(float(np.quantile(p.anomaly_map, 0.9)) for p in predictions),
        false_alarm_rate=0.2,
        guaranteed_rate=0.2,
        n_calibration=2,
        calibration_images=("a.png", "b.png"),
    )
    return model.save(root / "run"), model


def sample_images() -> list[np.ndarray]:
    return [textured_image(h, w, 100 + i) for i, (h, w) in enumerate(((40, 60), (56, 42)))]


def live_version(service):
    """The live version of the one model a test serves."""
    (entry,) = service.repository.entries.values()
    return entry.live


@contextmanager
def live_server(predictor, name: str = "run", **settings) -> Iterator[tuple[httpx.Client, object]]:
    """A real uvicorn server in a thread on a free port, an httpx client for it, and the
    app's service (to see how many requests wait); shut down on exit."""
    app = create_app(predictor, name, ServeSettings(**settings))
    server, thread, port = start_server(app)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=TIMEOUT) as client:
            yield client, app.state.service
    finally:
        server.should_exit = True
        thread.join(TIMEOUT)
    assert not thread.is_alive(), "the server did not stop"


def start_server(app) -> tuple[Server, threading.Thread, int]:
    """`app` served by uvicorn in a thread on a free port: (server, thread, port)."""
    server = Server(app, "127.0.0.1", 0)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_until(lambda: server.started or not thread.is_alive(), "the server to start")
    assert server.started, "the server did not start"
    return server, thread, server.servers[0].sockets[0].getsockname()[1]


def wait_until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + TIMEOUT
    while not condition():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.005)


def encode(image: np.ndarray | Image.Image, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    (image if isinstance(image, Image.Image) else Image.fromarray(image)).save(buffer, fmt)
    return buffer.getvalue()


def post_image(client: httpx.Client, data: bytes, multipart: bool = False, **query):
    if multipart:
        return client.post("/v1/predict", params=query, files={"image": ("part.png", data)})
    return client.post(
        "/v1/predict",
        params=query,
        content=data,
        headers={"content-type": "application/octet-stream"},
    )


def one_line_error(response: httpx.Response) -> str:
    body = response.json()
    assert list(body) == ["error"], body
    assert isinstance(body["error"], str) and body["error"]
    assert "\n" not in body["error"] and "Traceback" not in body["error"]
    return body["error"]


class HeldPredictor:
    """The model behind a gate: records each batch's size and waits for `gate` before
    predicting; raises on an all-black image, with a message of two lines."""

    def __init__(self, model: L2BT) -> None:
        self.model = model
        self.batches: list[int] = []
        self.gate = threading.Event()

    @property
    def record(self):
        return self.model.record

    def describe(self):
        return self.model.describe()

    def predict_maps(self, images):
        self.batches.append(len(images))
        assert self.gate.wait(TIMEOUT)
        if any(not image.any() for image in images):
            raise RuntimeError("black image\nsecond line")
        return self.model.predict_maps(images)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def answers_health(client: httpx.Client) -> bool:
    try:
        return client.get("/v1/health", timeout=2.0).status_code == 200
    except httpx.TransportError:
        return False
