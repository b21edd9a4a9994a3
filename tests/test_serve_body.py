"""serve/body.py over real HTTP (issue 19): bodies that stop arriving are answered 408 and
hold no predict slot; bodies over the budget are 503; shutdown drops them at once and lets
what is being predicted finish. Real uvicorn servers on 127.0.0.1 and raw sockets for the
stalled clients; every wait is bounded (TIMEOUT) so that a broken server fails a test
instead of hanging it."""

from __future__ import annotations

import select
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx")


from helpers import encode  # noqa: E402
from l2bt.model import L2BT  # noqa: E402
from l2bt.serve import ServeSettings, create_app  # noqa: E402
from runs import fit_tiny_run, sample_images  # noqa: E402
from serving import (  # noqa: E402
    TIMEOUT,
    HeldPredictor,
    live_server,
    live_version,
    nothing_received,
    one_line_error,
    post_image,
    read_answer,
    start_server,
    start_upload,
    wait_until,
)

FORMATS_LINE = "not a supported image format (PNG, JPEG, TIFF, BMP, WebP)"


@pytest.fixture(scope="module")
def fitted(tmp_path_factory) -> tuple[Path, L2BT]:
    return fit_tiny_run(tmp_path_factory.mktemp("hardening"))


@pytest.fixture(scope="module")
def run_dir(fitted) -> Path:
    return fitted[0]


@pytest.fixture(scope="module")
def model(fitted) -> L2BT:
    return fitted[1]


# ---- formats: only PNG, JPEG, TIFF, BMP, WebP; Ghostscript never starts -------------------


# ---- work: what the prediction's arrays will hold, from the header ------------------------


# ---- bodies that stop arriving ------------------------------------------------------------


def test_16_stalled_uploads_do_not_stop_a_17th_request_and_each_gets_408(model):
    body = encode(sample_images()[0])
    half = len(body) // 2
    with live_server(model, queue_size=16, body_timeout=6.0) as (
        client,
        service,
    ):
        port = client.base_url.port
        stalled = [start_upload(port, body, half) for _ in range(16)]
        wait_until(lambda: service.uploads.held == 16 * half, "16 half bodies to arrive")
        response = post_image(client, body)
        assert response.status_code == 200, response.text
        assert all(nothing_received(sock) for sock in stalled)  # still stalled, no answer yet
        answers = [read_answer(sock) for sock in stalled]
        assert [status for status, _ in answers] == [408] * 16
        assert all("--body-timeout" in answer["error"] for _, answer in answers)
        wait_until(
            lambda: service.uploads.held == 0 and live_version(service).in_flight == 0,
            "the stalled uploads' bytes to be given back",
        )
        assert post_image(client, body).status_code == 200


def test_a_stalled_chunked_upload_gets_408(model):
    body = encode(sample_images()[0])
    with live_server(model, body_timeout=1.0) as (client, service):
        sock = start_upload(client.base_url.port, body, 100, chunked=True)
        status, answer = read_answer(sock)
        assert status == 408 and "--min-body-rate" in answer["error"]
        assert service.uploads.held == 0


def test_a_trickling_upload_is_408_by_the_minimum_rate(model):
    """Ten bytes every 0.1 s never pause for --body-timeout, but 3,000 bytes at 1,000
    bytes/s must be in within 1 + 3 s: the upload is refused long before it ends."""
    body = bytes(3000)
    with live_server(model, body_timeout=1.0, min_body_rate=1000.0) as (
        client,
        _,
    ):
        sock = start_upload(client.base_url.port, body, 10)
        stop, sent = threading.Event(), [10]

        def trickle() -> None:  # until the answer starts to arrive (never send after it)
            while not stop.is_set() and sent[0] < len(body):
                if select.select([sock], [], [], 0.1)[0]:
                    return
                try:
                    sock.sendall(body[sent[0] : sent[0] + 10])
                except OSError:
                    return
                sent[0] += 10

        thread = threading.Thread(target=trickle, daemon=True)
        thread.start()
        try:
            status, answer = read_answer(sock)
        finally:
            stop.set()
            thread.join(TIMEOUT)
        assert status == 408, answer
        assert sent[0] < len(body)


def test_bodies_over_the_budget_are_503_until_the_stalled_one_is_dropped(model):
    good = encode(sample_images()[0])
    with live_server(model, queue_size=1, max_body_bytes=30_000, body_timeout=2.0) as (
        client,
        service,
    ):
        sock = start_upload(client.base_url.port, bytes(29_000), 28_000)
        wait_until(lambda: service.uploads.held == 28_000, "the stalled body to arrive")
        busy = post_image(client, good)
        assert busy.status_code == 503, busy.text
        assert "--queue-size x --max-body-mb" in one_line_error(busy)
        assert read_answer(sock)[0] == 408
        assert post_image(client, good).status_code == 200


# ---- shutdown -----------------------------------------------------------------------------


def test_shutdown_drops_a_stalled_upload_at_once_and_finishes_the_prediction(model):
    image = encode(sample_images()[0])
    predictor = HeldPredictor(model)
    settings = ServeSettings(body_timeout=60.0, shutdown_timeout=30.0)
    app = create_app(predictor, "run", settings)
    service = app.state.service
    server, thread, port = start_server(app)
    try:
        with (
            httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=TIMEOUT) as client,
            ThreadPoolExecutor(1) as pool,
        ):
            predicting = pool.submit(post_image, client, image)
            wait_until(lambda: predictor.batches == [1], "the request to reach the worker")
            sock = start_upload(port, image, 50)
            wait_until(
                lambda: service.uploads.held == len(image) + 50, "the stalled body to arrive"
            )
            server.should_exit = True  # what SIGTERM and Ctrl-C do
            status, answer = read_answer(sock)  # while the prediction is still held
            assert status == 503 and "shutting down" in answer["error"]
            assert not predicting.done()
            predictor.gate.set()
            assert predicting.result(TIMEOUT).status_code == 200
        thread.join(TIMEOUT)
        assert not thread.is_alive()
    finally:
        predictor.gate.set()
        server.should_exit = True
        thread.join(TIMEOUT)
