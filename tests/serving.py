"""Shared by the service's tests (never a test file itself): a tiny fitted run, a real
uvicorn server on 127.0.0.1 (a free port), a held predictor, and the client side: encoded
images posted with a timeout only so that a broken server cannot hang the suite."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx")


from l2bt.model import L2BT  # noqa: E402
from l2bt.serve import Server, ServeSettings, create_app  # noqa: E402

TIMEOUT = 60.0  # seconds: only so that a broken server fails the test instead of hanging it
KEYS = {"score", "verdict", "threshold", "width", "height", "regions", "seconds", "model"}
KEYS |= {"version", "p_value"}  # SPEC §13


# ---- the model and the server -------------------------------------------------------------


TIMEOUT = 60.0  # seconds: only so that a broken server fails the test instead of hanging it


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
