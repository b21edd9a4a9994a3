"""`l2bt.serve.linger`: a body over --max-body-mb is answered 413 and the client reads the
answer, even one that sends its whole body before reading (raw or multipart)."""

import socket

import numpy as np
import pytest

from helpers import encode

pytest.importorskip("fastapi")

BODY_BYTES = 40 << 20  # far more than the sockets' buffers hold


@pytest.fixture(scope="module")
def model():
    """An untrained tiny model: what is answered does not matter here, only that it is."""
    from l2bt.config import L2BTConfig, TeacherConfig
    from l2bt.model import L2BT
    from l2bt.students import Student
    from l2bt.teacher import load_teacher

    config = L2BTConfig(TeacherConfig("dinov2_vits14", "random", 56))
    teacher = load_teacher("dinov2_vits14", "random")
    return L2BT.from_parts(config, teacher, Student(384), Student(384), device="cpu")


def send_then_read(port: int, content_type: str, body: bytes) -> bytes:
    """Headers and the whole body first, then the answer: as a plain client does, which
    gives up (no status line for it) when the server resets the connection under it."""
    head = (
        f"POST /v1/predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        try:
            sock.sendall(head + body)
        except OSError as e:  # reset while sending: the answer is lost to this client
            return f"no answer ({e})".encode()
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return answer


@pytest.mark.parametrize("multipart", [False, True])
def test_a_body_over_the_limit_gets_its_413_before_the_connection_closes(model, multipart):
    from serving import live_server

    image = encode(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8))
    payload = image + bytes(BODY_BYTES)
    if multipart:
        body = (
            b'--xyz\r\nContent-Disposition: form-data; name="image"; filename="a.png"\r\n'
            b"Content-Type: image/png\r\n\r\n" + payload + b"\r\n--xyz--\r\n"
        )
        kind = "multipart/form-data; boundary=xyz"
    else:
        body, kind = payload, "application/octet-stream"
    with live_server(model, max_body_bytes=1 << 20) as (client, _):
        for _ in range(3):
            answer = send_then_read(client.base_url.port, kind, body)
            assert answer.startswith(b"HTTP/1.1 413 "), answer[:200]
            assert b"--max-body-mb" in answer
        assert client.get("/v1/health").status_code == 200  # and the server goes on
