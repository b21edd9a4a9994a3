"""Hardening of the decoder and the service (issue 19): only PNG, JPEG, TIFF, BMP and WebP
are ever decoded (a stand-in `gs` first on PATH proves Ghostscript never starts); an image
whose arrays would pass --max-pixels (a thin one in pad mode) is refused from its header;
bodies that stop arriving are answered 408 and hold no predict slot; shutdown drops them
at once and lets what is being predicted finish. Real uvicorn servers on 127.0.0.1 and raw
sockets for the stalled clients; every wait is bounded (TIMEOUT) so that a broken server
fails a test instead of hanging it."""

from __future__ import annotations

import io
import json
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx")

from PIL import EpsImagePlugin, Image  # noqa: E402

from helpers import textured_image  # noqa: E402
from l2bt.cli import main  # noqa: E402
from l2bt.data import image_io  # noqa: E402
from l2bt.data.image_io import image_size, read_image, read_mask, to_rgb_array  # noqa: E402
from l2bt.errors import InputError  # noqa: E402
from l2bt.model import L2BT  # noqa: E402
from l2bt.preprocess import InputGeometry, WorkLimit  # noqa: E402
from l2bt.serve import ServeSettings, create_app  # noqa: E402
from serving import (  # noqa: E402
    TIMEOUT,
    HeldPredictor,
    answers_health,
    encode,
    fit_tiny_run,
    free_port,
    live_server,
    live_version,
    one_line_error,
    post_image,
    sample_images,
    start_server,
    wait_until,
)

EPS = (
    b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 20 20\n"
    b"newpath 0 0 moveto 20 20 lineto stroke\nshowpage\n%%EOF\n"
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


@pytest.fixture
def stand_in_gs(tmp_path, monkeypatch) -> Path:
    """A `gs` first on PATH that leaves a marker file whenever it is started; Pillow made
    to look for Ghostscript again. Returns the marker's path (absent: never started)."""
    bin_dir, marker = tmp_path / "bin", tmp_path / "gs-was-started"
    bin_dir.mkdir()
    (bin_dir / "gs").write_text(f"#!/bin/sh\necho \"$@\" >> '{marker}'\nexit 1\n")
    (bin_dir / "gs").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setattr(EpsImagePlugin, "gs_binary", None)
    return marker


def test_the_stand_in_gs_is_what_an_unrestricted_pillow_starts(stand_in_gs):
    """The control: without an allow-list, Pillow takes the EPS body and starts `gs`."""
    with pytest.raises(Exception), Image.open(io.BytesIO(EPS)) as image:  # noqa: B017
        assert image.format == "EPS"
        image.load()
    assert stand_in_gs.exists()


@pytest.mark.parametrize("multipart", [False, True])
def test_an_eps_body_is_415_and_gs_never_runs(stand_in_gs, model, multipart):
    with live_server(model) as (client, _):
        response = post_image(client, EPS, multipart=multipart)
        assert response.status_code == 415
        assert FORMATS_LINE in one_line_error(response)
        assert post_image(client, encode(sample_images()[0])).status_code == 200
    assert not stand_in_gs.exists()


@pytest.mark.parametrize("reader", [read_image, image_size, read_mask])
def test_eps_bytes_named_jpg_are_one_input_error_and_gs_never_runs(stand_in_gs, tmp_path, reader):
    path = tmp_path / "part.jpg"
    path.write_bytes(EPS)
    with pytest.raises(InputError) as error:
        reader(path)
    assert str(error.value) == f"{path}: {FORMATS_LINE}"
    assert not stand_in_gs.exists()


def test_predict_on_eps_bytes_named_jpg_is_one_line_exit_2(stand_in_gs, run_dir, tmp_path, capsys):
    path = tmp_path / "part.jpg"
    path.write_bytes(EPS)
    assert (
        main(
            [
                "predict",
                "--model",
                str(run_dir),
                "--device",
                "cpu",
                "--out",
                str(tmp_path / "out"),
                str(path),
            ]
        )
        == 2
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"{path}: {FORMATS_LINE}" in err[0], err
    assert not stand_in_gs.exists()


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "TIFF", "BMP", "WEBP"])
def test_every_allowed_format_is_read(tmp_path, fmt):
    image = textured_image(23, 31, 5)
    path = tmp_path / f"part.{fmt.lower()}"
    Image.fromarray(image).save(path, fmt, **({"lossless": True} if fmt == "WEBP" else {}))
    expected = to_rgb_array(Image.open(path))
    assert image_size(path) == (23, 31)
    assert np.array_equal(read_image(path), expected)
    if fmt != "JPEG":  # lossless: the pixels themselves
        assert np.array_equal(read_image(path), image)


@pytest.mark.parametrize("fmt", ["GIF", "PPM", "ICO", "PDF", "EPS"])
def test_other_formats_are_refused_whatever_their_name(tmp_path, fmt):
    path = tmp_path / "part.png"
    if fmt == "EPS":
        path.write_bytes(EPS)
    else:
        Image.fromarray(textured_image(16, 16, 1)).save(path, fmt)
    with pytest.raises(InputError) as error:
        read_image(path)
    assert str(error.value) == f"{path}: {FORMATS_LINE}"


# ---- work: what the prediction's arrays will hold, from the header ------------------------


def plain_work(mode: str, height: int, width: int, size: int) -> int:
    """The largest array's pixels, from SPEC §9 directly: the image (and its map), the
    teacher input, and the frame the map is upsampled to."""
    if mode == "pad":
        return max(height * width, size * size, max(height, width) ** 2)
    long_side, short_side = max(height, width), min(height, width)
    short_input = max(14, round(size * short_side / long_side / 14 + 1e-9) * 14)
    return max(height * width, size * short_input)


def test_work_pixels_equal_a_plain_reference_on_random_sizes():
    rng = np.random.default_rng(0)
    sizes = [
        (1, 1),
        (1, 40000),
        (40000, 1),
        (518, 518),
        (10, 10000),
        *rng.integers(1, 3000, (40, 2)),
    ]
    for height, width in sizes:
        for mode in ("pad", "aspect"):
            for size in (56, 518, 1036):
                geometry = InputGeometry.for_mode(mode, int(height), int(width), size)
                assert geometry.work_pixels == plain_work(mode, int(height), int(width), size)


def test_work_limit_refuses_a_thin_image_in_pad_mode_only():
    WorkLimit("aspect", 1036, 50_000_000)(10, 10000)  # 1036 x 14 input, 100,000 pixels
    WorkLimit("pad", 1036, 100_000_000)(10, 10000)  # exactly the limit: accepted
    with pytest.raises(InputError) as error:
        WorkLimit("pad", 1036, 50_000_000)(10, 10000)
    assert "100,000,000 pixels" in str(error.value)
    assert "over the limit of 50,000,000 pixels (--max-pixels)" in str(error.value)


def thin_png(height: int, width: int) -> bytes:
    image = np.zeros((height, width, 3), np.uint8)
    image[:, ::7] = 200
    return encode(image)


class DecodeSpy:
    """`load_image` that counts its calls (decoding any pixel goes through it)."""

    def __init__(self) -> None:
        self.calls = 0
        self.load_image = image_io.load_image

    def __call__(self, image, path=None):
        self.calls += 1
        return self.load_image(image, path)


def test_a_thin_image_is_413_from_its_header_without_decoding(model, monkeypatch):
    spy = DecodeSpy()
    monkeypatch.setattr(image_io, "load_image", spy)  # the one decode path
    data = thin_png(10, 40000)  # 400,000 pixels; framed in pad mode: 1.6e9
    with live_server(model, max_pixels=50_000_000) as (client, _):
        refused = post_image(client, data)
        assert refused.status_code == 413, refused.text
        error = one_line_error(refused)
        assert "1,600,000,000 pixels in pad mode" in error and "--max-pixels" in error
        assert spy.calls == 0
        assert post_image(client, encode(sample_images()[0])).status_code == 200
        assert spy.calls == 1  # the spy does see decoding


def test_read_image_runs_the_header_check_before_decoding(tmp_path, monkeypatch):
    spy = DecodeSpy()
    monkeypatch.setattr(image_io, "load_image", spy)
    path = tmp_path / "thin.png"
    path.write_bytes(thin_png(10, 40000))
    with pytest.raises(InputError) as error:
        read_image(path, header_check=WorkLimit("pad", 56, 50_000_000))
    assert str(error.value).startswith(f"{path}: ") and "--max-pixels" in str(error.value)
    assert spy.calls == 0
    assert read_image(path, header_check=WorkLimit("aspect", 56, 50_000_000)).shape == (
        10,
        40000,
        3,
    )
    assert spy.calls == 1


# ---- bodies that stop arriving ------------------------------------------------------------


def start_upload(port: int, body: bytes, sent: int, chunked: bool = False) -> socket.socket:
    """A raw POST that sends its headers and the first `sent` bytes of `body`, then idles."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
    length = "Transfer-Encoding: chunked" if chunked else f"Content-Length: {len(body)}"
    head = (
        f"POST /v1/predict HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Content-Type: application/octet-stream\r\n{length}\r\n\r\n"
    ).encode()
    part = body[:sent]
    sock.sendall(head + (f"{len(part):x}\r\n".encode() + part + b"\r\n" if chunked else part))
    return sock


def read_answer(sock: socket.socket) -> tuple[int, dict]:
    """(status, JSON body) of the response; the server must then close the connection."""
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    sock.close()
    head, _, body = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    assert b"connection: close" in head.lower()
    return status, json.loads(body)


def nothing_received(sock: socket.socket) -> bool:
    """Neither an answer nor a close has come on `sock` yet."""
    sock.setblocking(False)
    try:
        sock.recv(1)  # data, or b"" for a closed connection
    except BlockingIOError:
        return True
    else:
        return False
    finally:
        sock.setblocking(True)
        sock.settimeout(TIMEOUT)


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


def test_sigterm_with_a_stalled_upload_exits_within_the_grace_period(run_dir):
    port, grace = free_port(), 8.0
    command = [
        sys.executable,
        "-m",
        "l2bt",
        "serve",
        "--model",
        str(run_dir),
        "--port",
        str(port),
        "--device",
        "cpu",
        "--body-timeout",
        "60",
        "--shutdown-timeout",
        str(grace),
    ]
    server = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    sock = None
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=TIMEOUT) as client:
            wait_until(
                lambda: server.poll() is not None or answers_health(client),
                "`l2bt serve` to answer",
            )
            assert server.poll() is None, server.stderr.read() if server.stderr else ""
            sock = start_upload(port, encode(sample_images()[0]), 100)
            assert answers_health(client)  # the stalled request has reached the app
        signalled = time.monotonic()
        server.send_signal(signal.SIGTERM)
        status, answer = read_answer(sock)
        _, err = server.communicate(timeout=TIMEOUT)
        stopped_after = time.monotonic() - signalled
    finally:
        if sock is not None:
            sock.close()
        if server.poll() is None:
            server.kill()
            server.communicate()
    assert (status, answer) == (503, {"error": "the server is shutting down; retry later"})
    assert server.returncode == -signal.SIGTERM, err
    assert stopped_after < grace, err  # it did not wait out the grace period


def test_new_serve_options_are_checked(run_dir, capsys):
    for flag in ("--body-timeout", "--min-body-rate", "--shutdown-timeout"):
        assert main(["serve", "--model", str(run_dir), flag, "0"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert err == [f"l2bt serve: error: {flag} must be positive, got 0.0"]
    with pytest.raises(InputError):
        ServeSettings(body_timeout=float("nan"))


def test_the_app_reads_mode_and_size_from_the_run(model):
    app = create_app(model, "run", ServeSettings(max_pixels=1234))
    check = live_version(app.state.service).header_check
    teacher = model.config.teacher
    assert check == WorkLimit(teacher.input_mode, teacher.image_size, 1234)
