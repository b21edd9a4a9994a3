"""`l2bt serve` over real HTTP: a uvicorn server on 127.0.0.1 (a free port) and an httpx
client. The answers equal `L2BT.predict`'s; bad input is a one-line 4xx and the server
keeps serving; requests of one size are batched; a full queue is 503; a predictor that
raises is a one-line 500 and the worker goes on. No test depends on timing: the worker is
held on an event while requests queue up, and every network call has a timeout only
so that a broken server cannot hang the suite."""

from __future__ import annotations

import base64
import copy
import io
import json
import struct
import subprocess
import sys
import zlib
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx")


import dataclasses  # noqa: E402
import re  # noqa: E402

import tifffile  # noqa: E402
from PIL import (  # noqa: E402
    Image,
)

from helpers import (  # noqa: E402
    EPS,
    FORMATS_LINE,
    TINY_TEACHER,
    DecodeSpy,
    encode,
    save16,
    textured_image,
    thin_png,
    write_mvtec_tree,
)
from l2bt.cli import main  # noqa: E402
from l2bt.data import image_io  # noqa: E402
from l2bt.data.image_io import (  # noqa: E402
    to_rgb_array,
)
from l2bt.model import L2BT  # noqa: E402
from l2bt.preprocess import WorkLimit  # noqa: E402
from l2bt.serve import ServeSettings, create_app  # noqa: E402
from runs import sample_images  # noqa: E402
from serving import (  # noqa: E402
    TIMEOUT,
    HeldPredictor,
    live_server,
    live_version,
    one_line_error,
    post_image,
    wait_until,
)

KEYS = {"score", "verdict", "threshold", "width", "height", "regions", "seconds", "model"}
KEYS |= {"version", "p_value"}  # SPEC §13


# ---- the model and the server -------------------------------------------------------------


def description(model: L2BT, run: str = "run") -> dict:
    return {**model.describe(), "run": run}


@pytest.fixture(scope="module")
def served(model):
    """A server for the thresholded model, with small limits for the bad-input tests."""
    with live_server(model, max_pixels=4000, max_body_bytes=30_000) as s:
        yield s


def b64_image(text: str) -> np.ndarray:
    data = base64.b64decode(text)
    if data.startswith(b"\x89PNG"):
        return np.asarray(Image.open(io.BytesIO(data)))
    return tifffile.imread(io.BytesIO(data))


def assert_good_request_succeeds(client: httpx.Client) -> None:
    response = post_image(client, encode(sample_images()[0]))
    assert response.status_code == 200, response.text
    assert set(response.json()) >= KEYS


# ---- good requests ------------------------------------------------------------------------


def sixteen_bit_gray(image: np.ndarray) -> Image.Image:
    return Image.fromarray(image[:, :, 0].astype(np.uint16) * 257)


def rgba(image: np.ndarray) -> Image.Image:
    alpha = np.full((*image.shape[:2], 1), 200, np.uint8)
    return Image.fromarray(np.concatenate([image, alpha], axis=2))


@pytest.mark.parametrize("kind", ["multipart", "raw", "raw 16-bit gray", "raw RGBA"])
def test_a_good_image_gives_the_documented_json_and_predicts_score(served, model, kind):
    client, _ = served
    image = sample_images()[0]
    picture = {"raw 16-bit gray": sixteen_bit_gray, "raw RGBA": rgba}.get(kind, Image.fromarray)
    sent = picture(image)
    response = post_image(client, encode(sent), multipart=kind == "multipart")
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == KEYS  # no map or mask unless asked for
    expected = model.predict(to_rgb_array(sent))
    assert body["score"] == expected.score
    assert (body["height"], body["width"]) == image.shape[:2]
    assert body["threshold"] == model.thresholds.image
    assert body["verdict"] == ("defective" if expected.score > model.thresholds.image else "good")
    assert body["regions"] == [asdict(r) for r in expected.regions]
    assert body["model"] == f"dinov2_vits14/{model.teacher.weights_id}/run"
    assert isinstance(body["seconds"], float) and body["seconds"] > 0


@pytest.mark.parametrize("index", [0, 1])
def test_map_and_mask_are_the_image_size_and_equal_predict(served, model, index):
    client, _ = served
    image = sample_images()[index]
    expected = model.predict(image)
    body = post_image(client, encode(image), map="tiff", mask="png").json()
    anomaly_map, mask = b64_image(body["anomaly_map"]), b64_image(body["mask"])
    assert anomaly_map.dtype == np.float32 and anomaly_map.shape == image.shape[:2]
    assert np.array_equal(anomaly_map, expected.anomaly_map)
    assert body["score"] == expected.score
    assert mask.dtype == np.uint8 and mask.shape == image.shape[:2]
    assert set(np.unique(mask)) <= {0, 255}
    assert np.array_equal(mask == 255, anomaly_map > model.thresholds.pixel)
    assert mask.any()  # the thresholds of `run_dir` leave something to find
    assert body["regions"] == [asdict(r) for r in expected.regions] and body["regions"]


def test_map_png_is_the_map_scaled_by_the_stated_range(served, model):
    client, _ = served
    image = sample_images()[1]
    body = post_image(client, encode(image), map="png").json()
    assert "mask" not in body
    normal = model.record.normal_scores
    low, high = body["map_range"]
    assert (low, high) == (normal.median, normal.max)
    picture = b64_image(body["anomaly_map"])
    assert picture.dtype == np.uint8 and picture.shape == image.shape[:2]
    scaled = (model.predict(image).anomaly_map.astype(np.float64) - low) / (high - low)
    assert np.array_equal(picture, np.round(np.clip(scaled, 0, 1) * 255).astype(np.uint8))


def test_health_and_model(served, model):
    client, _ = served
    health = client.get("/v1/health")
    assert health.status_code == 200 and health.json() == {"status": "ok"}
    described = client.get("/v1/model").json()
    assert described == json.loads(json.dumps(description(model)))
    assert described["thresholds"]["pixel"] == model.thresholds.pixel


def test_without_thresholds_no_verdict_and_no_mask(model):
    bare = copy.copy(model)
    bare.record = model.record.with_thresholds(None)
    with live_server(bare) as (client, _):
        image = sample_images()[0]
        body = post_image(client, encode(image), map="tiff").json()
        assert (body["verdict"], body["threshold"], body["regions"]) == (None, None, [])
        assert np.array_equal(b64_image(body["anomaly_map"]), model.predict(image).anomaly_map)
        refused = post_image(client, encode(image), mask="png")
        assert refused.status_code == 400
        assert "needs thresholds" in one_line_error(refused)


# ---- bad requests -------------------------------------------------------------------------


def png_header(width: int, height: int) -> bytes:
    """A PNG that claims width x height pixels but holds almost none (a decompression
    bomb's header): decoding it would fail as truncated, so 413 means it was not decoded."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )


def truncated_jpeg() -> bytes:
    """A JPEG whose header is whole and whose scan data stops at three quarters."""
    noise = np.random.default_rng(0).integers(0, 256, (60, 60, 3), dtype=np.uint8)
    data = encode(noise, "JPEG")
    return data[: len(data) * 3 // 4]


def chunked(data: bytes) -> Iterator[bytes]:
    """A body with no Content-Length (chunked transfer encoding)."""
    for start in range(0, len(data), 4096):
        yield data[start : start + 4096]


BAD_REQUESTS = {  # name: (send, expected status, words in the error)
    "not an image": (
        lambda c: post_image(c, b"these bytes are not an image"),
        415,
        "not a supported image format (PNG, JPEG, TIFF, BMP, WebP)",
    ),
    "truncated JPEG": (lambda c: post_image(c, truncated_jpeg()), 400, "truncated"),
    "truncated JPEG, multipart": (
        lambda c: post_image(c, truncated_jpeg(), multipart=True),
        400,
        "truncated",
    ),
    "too many pixels": (
        lambda c: post_image(c, encode(textured_image(80, 80, 0))),
        413,
        "--max-pixels",
    ),
    "a bomb's header": (lambda c: post_image(c, png_header(5000, 5000)), 413, "--max-pixels"),
    "a bomb over PIL's own limit": (
        lambda c: post_image(c, png_header(40000, 40000)),
        413,
        "too large",
    ),
    "body too large": (lambda c: post_image(c, bytes(40_000)), 413, "--max-body-mb"),
    "body too large, chunked": (
        lambda c: c.post("/v1/predict", content=chunked(bytes(40_000))),
        413,
        "--max-body-mb",
    ),
    "empty body": (lambda c: c.post("/v1/predict"), 400, "empty body"),
    "empty multipart file": (lambda c: post_image(c, b"", multipart=True), 400, "empty body"),
    "no image field": (
        lambda c: c.post("/v1/predict", files={"picture": ("a.png", b"x")}),
        400,
        "no field 'image'",
    ),
    "image field is text": (
        lambda c: c.post("/v1/predict", files={"image": (None, b"x")}),
        400,
        "text, not a file",
    ),
    "bad map value": (
        lambda c: post_image(c, encode(sample_images()[0]), map="jpeg"),
        400,
        "query map",
    ),
    "unknown path": (lambda c: c.get("/v1/nothing"), 404, "Not Found"),
    "wrong method": (lambda c: c.get("/v1/predict"), 405, "Method Not Allowed"),
}


@pytest.mark.parametrize("name", list(BAD_REQUESTS))
def test_bad_input_is_a_one_line_4xx_and_the_server_keeps_serving(served, name):
    client, _ = served
    send, status, words = BAD_REQUESTS[name]
    response = send(client)
    assert response.status_code == status, response.text
    assert words.lower() in one_line_error(response).lower()
    assert_good_request_succeeds(client)


# ---- the worker: batching, a full queue, a failing predictor ----------------------------


@contextmanager
def held_server(model: L2BT, **settings):
    predictor = HeldPredictor(model)
    with (
        live_server(predictor, **settings) as (client, service),
        ThreadPoolExecutor(8) as pool,
    ):
        try:
            yield client, service, predictor, pool
        finally:
            predictor.gate.set()


def send_later(pool: ThreadPoolExecutor, client: httpx.Client, image: np.ndarray) -> Future:
    return pool.submit(post_image, client, encode(image))


def test_concurrent_requests_of_one_size_are_batched(model):
    same = [textured_image(40, 60, seed) for seed in range(4)]
    other = textured_image(56, 42, 9)
    with held_server(model, batch_size=3, queue_size=8) as (client, service, predictor, pool):
        first = send_later(pool, client, same[0])
        wait_until(lambda: predictor.batches == [1], "the first request to reach the worker")
        rest = [send_later(pool, client, image) for image in [*same[1:], other]]
        wait_until(lambda: live_version(service).worker.waiting() == 4, "four requests to queue up")
        predictor.gate.set()
        responses = [f.result(TIMEOUT) for f in [first, *rest]]
    assert predictor.batches[0] == 1 and sorted(predictor.batches[1:]) == [1, 3]
    for image, response in zip([*same, other], responses, strict=True):
        assert response.status_code == 200, response.text
        assert response.json()["score"] == pytest.approx(model.predict(image).score, rel=1e-5)
        assert (response.json()["height"], response.json()["width"]) == image.shape[:2]


def test_a_full_queue_answers_503(model):
    image = sample_images()[0]
    with held_server(model, batch_size=2, queue_size=2) as (client, service, predictor, pool):
        first = send_later(pool, client, image)
        wait_until(lambda: predictor.batches == [1], "the first request to reach the worker")
        second = send_later(pool, client, image)
        wait_until(
            lambda: live_version(service).worker.waiting() == 1, "the second request to queue up"
        )
        refused = post_image(client, encode(image))
        assert refused.status_code == 503
        assert "--queue-size" in one_line_error(refused)
        assert refused.headers["retry-after"] == "1"
        predictor.gate.set()
        assert [f.result(TIMEOUT).status_code for f in (first, second)] == [200, 200]
        assert_good_request_succeeds(client)


def test_a_predictor_that_raises_is_a_500_line_and_the_worker_goes_on(model):
    good, black = sample_images()[0], np.zeros((40, 60, 3), np.uint8)
    with held_server(model, batch_size=4) as (client, service, predictor, pool):
        predictor.gate.set()
        failed = post_image(client, encode(black))
        assert failed.status_code == 500
        assert one_line_error(failed) == "prediction failed (RuntimeError: black image second line)"
        assert_good_request_succeeds(client)
        # in a batch, the image that breaks the predictor fails alone
        predictor.gate.clear()
        held = send_later(pool, client, good)
        wait_until(lambda: len(predictor.batches) == 3, "the held request to reach the worker")
        pair = [send_later(pool, client, image) for image in (good, black)]
        wait_until(lambda: live_version(service).worker.waiting() == 2, "two requests to queue up")
        predictor.gate.set()
        statuses = [f.result(TIMEOUT).status_code for f in (held, *pair)]
    assert statuses == [200, 200, 500]
    assert predictor.batches[3:] == [2, 1, 1]  # the pair, then each alone


# ---- the command --------------------------------------------------------------------------


def test_the_library_imports_without_fastapi_or_uvicorn():
    code = (
        "import sys, l2bt, l2bt.model, l2bt.maps.predict, l2bt.cli; l2bt.cli.build_parser(); "
        "print(sorted({m.split('.')[0] for m in sys.modules} & "
        "{'fastapi', 'uvicorn', 'starlette', 'httpx'}))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=TIMEOUT
    ).stdout
    assert out.strip() == "[]"


@pytest.mark.parametrize("multipart", [False, True])
def test_an_eps_body_is_415_and_gs_never_runs(stand_in_gs, model, multipart):
    with live_server(model) as (client, _):
        response = post_image(client, EPS, multipart=multipart)
        assert response.status_code == 415
        assert FORMATS_LINE in one_line_error(response)
        assert post_image(client, encode(sample_images()[0])).status_code == 200
    assert not stand_in_gs.exists()


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


def test_the_app_reads_mode_and_size_from_the_run(model):
    app = create_app(model, "run", ServeSettings(max_pixels=1234))
    check = live_version(app.state.service).header_check
    teacher = model.config.teacher
    assert check == WorkLimit(teacher.input_mode, teacher.image_size, 1234)


def test_docs_is_an_offline_page_listing_the_endpoints():
    from fastapi.testclient import TestClient

    from l2bt.run import RunDescription
    from l2bt.serve import create_app

    class Nothing:
        record = RunDescription("nothing", teacher=None, weights_id=None, embed_dim=None)

        def predict_maps(self, images):
            raise AssertionError("not called")

        def describe(self):
            return self.record.to_dict()

    client = TestClient(create_app(Nothing(), "x"))
    page = client.get("/docs")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert not re.search(r"https?://", page.text)  # nothing loaded from elsewhere
    for endpoint in ("POST /v1/predict?map=…&amp;mask=…", "GET /v1/health", "GET /v1/model"):
        assert endpoint in page.text
    assert "href='/openapi.json'" in page.text
    assert client.get("/openapi.json").status_code == 200
    assert client.get("/redoc").status_code == 404


@pytest.mark.usefixtures("feature_cache")
def test_the_service_and_predict_read_a_12_bit_image_alike(tmp_path):
    """The run's bit depth travels with the model: `l2bt serve` (through `create_app`)
    and `l2bt predict` read a 12-bit image in a 16-bit PNG on the same scale, so the
    same part gets the same map and score."""
    pytest.importorskip("fastapi")
    import base64
    import io

    import tifffile

    from l2bt.maps.layout import read_map
    from l2bt.maps.tables import read_score_table
    from l2bt.model import L2BT
    from serving import live_server, post_image

    write_mvtec_tree(tmp_path / "data")
    run = tmp_path / "run"
    fit = ["fit", "--data", str(tmp_path / "data"), "--category", "toy", "--out", str(run)]
    assert main([*fit, *TINY_TEACHER, "--epochs", "1", "--bit-depth", "12"]) == 0
    rng = np.random.default_rng(3)
    part = save16(tmp_path / "part.png", rng.integers(0, 4096, size=(40, 52)))
    assert main(["predict", "--model", str(run), "--out", str(tmp_path / "maps"), str(part)]) == 0
    expected_map = read_map(tmp_path / "maps/part.tiff")
    expected_score = read_score_table(tmp_path / "maps/scores.csv").scores["part"]
    with live_server(L2BT.load(run, device="cpu")) as (client, _):
        answer = post_image(client, part.read_bytes(), map="tiff").json()
    served_map = tifffile.imread(io.BytesIO(base64.b64decode(answer["anomaly_map"])))
    np.testing.assert_array_equal(served_map, expected_map)
    assert answer["score"] == expected_score
    # the file's own 16-bit depth would read it darker: a different map
    sixteen = L2BT.load(run, device="cpu")
    sixteen.record = dataclasses.replace(sixteen.record, bit_depth=None)
    assert not np.array_equal(sixteen.predict(part).anomaly_map, expected_map)
