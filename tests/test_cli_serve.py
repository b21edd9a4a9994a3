"""`l2bt serve` (cli/serve.py): it answers, logs each request and stops on Ctrl-C; a
SIGTERM with a stalled upload exits within the grace period; bad options are one line."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx")


from helpers import encode  # noqa: E402
from l2bt.cli import main  # noqa: E402
from l2bt.errors import InputError  # noqa: E402
from l2bt.serve import ServeSettings  # noqa: E402
from runs import sample_images  # noqa: E402
from serving import (  # noqa: E402
    TIMEOUT,
    answers_health,
    free_port,
    post_image,
    read_answer,
    start_upload,
    wait_until,
)


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


def test_l2bt_serve_answers_logs_each_request_and_stops_on_ctrl_c(run_dir, model):
    port = free_port()
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
        "--batch-size",
        "2",
    ]
    server = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=TIMEOUT) as client:
            wait_until(
                lambda: server.poll() is not None or answers_health(client),
                "`l2bt serve` to answer",
            )
            assert server.poll() is None, server.stderr.read() if server.stderr else ""
            image = sample_images()[1]
            response = post_image(client, encode(image), multipart=True)
            assert response.status_code == 200, response.text
            assert response.json()["score"] == model.predict(image).score
            assert response.json()["model"].endswith(f"/{run_dir.name}")
        server.send_signal(signal.SIGINT)
        _, err = server.communicate(timeout=TIMEOUT)
    finally:
        if server.poll() is None:
            server.kill()
            server.communicate()
    assert server.returncode == 0, err
    assert any("POST /v1/predict 200" in line and "bytes" in line for line in err.splitlines())


def test_bad_serve_options_are_one_line(run_dir, capsys):
    assert main(["serve", "--model", str(run_dir), "--queue-size", "0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["l2bt serve: error: --queue-size must be positive, got 0"]
