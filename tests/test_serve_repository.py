"""`l2bt.serve.repository` through a real server and a real client: models served by name,
swapped under load without a dropped request, a broken replacement that leaves the old
version serving, least-recently-used unloading, readiness while loading, the metrics,
and a server killed with SIGKILL that serves the same models again."""

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")

from helpers import (  # noqa: E402
    encode,
    fit_toy,
    write_mvtec_tree,
)
from l2bt.data.image_io import read_image  # noqa: E402
from l2bt.engines import load_engine  # noqa: E402
from l2bt.run import read_run, write_run  # noqa: E402
from l2bt.serve import (  # noqa: E402
    Repository,
    ServeMetrics,
    ServeSettings,
    discover,
    repository_app,
)
from l2bt.serve.version import version_digest  # noqa: E402
from serving import TIMEOUT, free_port, start_server, wait_until  # noqa: E402

SRC = str(Path(__file__).resolve().parents[1] / "src")
pytestmark = pytest.mark.usefixtures("feature_cache")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two calibrated tiny runs (`a`, and `b` of another seed) and a part to send."""
    root = tmp_path_factory.mktemp("repository")
    write_mvtec_tree(root / "data", n_train=12)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("L2BT_CACHE_DIR", str(root / "cache"))
        for name, seed in (("a", "0"), ("b", "1")):
            flags = ("--calibration", "0.25", "--false-alarm-rate", "0.3", "--seed", seed)
            assert fit_toy(root / "data", root / "runs" / name, *flags) == 0
    part = encode(read_image(next((root / "data/toy/test/good").glob("*.png"))))
    return root, part


def models_folder(runs, tmp_path, names=("a", "b")) -> Path:
    folder = tmp_path / "models"
    for name in names:
        shutil.copytree(runs[0] / "runs" / name, folder / name)
    return folder


def load(path: Path):
    return load_engine(path, "torch", device="cpu")


@contextmanager
def serving(folder: Path, loader=load, **settings):
    """A real server for the models of `folder` and a client; stopped on exit."""
    settings = ServeSettings(**{"poll_seconds": 0.0, **settings})
    metrics = ServeMetrics()
    repository = Repository(discover(folder), loader, settings, metrics, folder)
    server, thread, port = start_server(repository_app(repository, metrics))
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=TIMEOUT) as client:
            wait_until(lambda: ready(client), "the models to load")
            yield client, repository
    finally:
        server.should_exit = True
        thread.join(TIMEOUT)


def ready(client) -> bool:
    return client.get("/v2/health/ready").status_code == 200


def predict(client, name, part, **query):
    return client.post(
        f"/v1/models/{name}/predict",
        params=query,
        content=part,
        headers={"content-type": "application/octet-stream"},
    )


def listed(client) -> dict:
    return {m["name"]: m for m in client.get("/v1/models").json()["models"]}


def failed(entry: dict) -> bool:
    return entry["replacement"] is not None and entry["replacement"]["status"] == "failed"


def recalibrated(run: Path, factor: float) -> None:
    """The run's image threshold scaled, its record rewritten in place atomically (as
    `l2bt calibrate` writes it): a new version of the same model."""
    record = read_run(run)
    thresholds = record.thresholds
    assert thresholds is not None
    write_run(run, record.with_thresholds(replace(thresholds, image=thresholds.image * factor)))


def test_the_models_answer_under_their_names(runs, tmp_path):
    folder = models_folder(runs, tmp_path)
    with serving(folder) as (client, _):
        models = listed(client)
        assert set(models) == {"a", "b"}
        for name in ("a", "b"):
            answer = predict(client, name, runs[1]).json()
            assert answer["version"] == version_digest(folder / name) == models[name]["version"]
            assert models[name]["status"] == "ready" and models[name]["loaded_at"]
            thresholds = read_run(folder / name).thresholds
            assert answer["threshold"] == thresholds.image
            n = len(thresholds.image_scores)
            assert answer["p_value"] == pytest.approx(
                (1 + sum(s >= answer["score"] for s in thresholds.image_scores)) / (n + 1)
            )
        assert predict(client, "c", runs[1]).status_code == 404
        several = client.post("/v1/predict", content=runs[1])
        assert several.status_code == 400 and "2 models are served" in several.json()["error"]
        assert client.get("/v2/models/a/ready").json() == {"name": "a", "ready": True}


def test_a_swap_under_load_drops_nothing_and_every_answer_names_its_version(runs, tmp_path):
    folder = models_folder(runs, tmp_path, ("a",))
    old = version_digest(folder / "a")
    stop = threading.Event()
    answers: dict[int, list[tuple[str, float]]] = {}

    def client_loop(index, base_url):
        seen = answers.setdefault(index, [])
        with httpx.Client(base_url=base_url, timeout=TIMEOUT) as client:
            while not stop.is_set() or len(seen) < 3:
                response = predict(client, "a", runs[1])
                assert response.status_code == 200, response.text
                seen.append((response.json()["version"], response.json()["threshold"]))

    with serving(folder) as (client, _), ThreadPoolExecutor(4) as pool:
        loops = [pool.submit(client_loop, i, str(client.base_url)) for i in range(4)]
        wait_until(lambda: sum(map(len, answers.values())) >= 8, "answers of the old version")
        recalibrated(folder / "a", 2.0)
        new = version_digest(folder / "a")
        swapped = client.post("/v1/models/a/load").json()
        assert swapped["version"] == new and swapped["status"] == "ready"
        wait_until(lambda: all(any(v == new for v, _ in a) for a in answers.values()), "new")
        stop.set()
        for loop in loops:
            loop.result()  # no request failed
    threshold = {old: read_run(runs[0] / "runs/a").thresholds.image}
    threshold[new] = read_run(folder / "a").thresholds.image
    for seen in answers.values():
        versions = [v for v, _ in seen]
        assert versions == sorted(versions, key=[old, new].index)  # old ones, then new ones
        assert all(t == threshold[v] for v, t in seen)


def test_a_broken_replacement_keeps_the_old_version_serving(runs, tmp_path):
    folder = models_folder(runs, tmp_path, ("a",))
    old = version_digest(folder / "a")
    with serving(folder, poll_seconds=0.05) as (client, _):
        students = folder / "a/students.safetensors"
        good = students.read_bytes()
        students.write_bytes(good[: len(good) // 2])  # half-copied by hand
        wait_until(lambda: failed(listed(client)["a"]), "the failed load")
        entry = listed(client)["a"]
        assert entry["replacement"]["status"] == "failed" and entry["status"] == "ready"
        assert "students.safetensors" in entry["replacement"]["reason"]
        assert entry["version"] == old
        assert predict(client, "a", runs[1]).json()["version"] == old
        students.write_bytes(good)  # the copy finished: the same files as served
        recalibrated(folder / "a", 0.5)  # and then a real replacement
        new = version_digest(folder / "a")
        wait_until(lambda: listed(client)["a"]["version"] == new, "the replacement")
        assert listed(client)["a"]["replacement"] is None


def test_the_least_recently_used_model_is_unloaded_and_loads_again(runs, tmp_path):
    folder = models_folder(runs, tmp_path)
    with serving(folder, max_loaded=1) as (client, _):
        assert predict(client, "a", runs[1]).status_code == 200
        assert predict(client, "b", runs[1]).status_code == 200
        models = listed(client)
        assert (models["a"]["status"], models["b"]["status"]) == ("unloaded", "ready")
        again = predict(client, "a", runs[1])  # waits while it loads again
        assert again.status_code == 200 and again.json()["version"] == version_digest(folder / "a")
        models = listed(client)
        assert (models["a"]["status"], models["b"]["status"]) == ("ready", "unloaded")
        unloaded = client.post("/v1/models/a/unload").json()
        assert unloaded["status"] == "unloaded" and unloaded["version"] is None


def test_ready_only_once_every_model_has_loaded(runs, tmp_path):
    folder = models_folder(runs, tmp_path)
    gate = threading.Event()

    def slow_for_b(path):
        if path.name == "b":
            assert gate.wait(TIMEOUT)
        return load(path)

    settings = ServeSettings(poll_seconds=0.0)
    metrics = ServeMetrics()
    repository = Repository(discover(folder), slow_for_b, settings, metrics, folder)
    server, thread, port = start_server(repository_app(repository, metrics))
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=TIMEOUT) as client:
            assert client.get("/v2/health/live").json() == {"live": True}
            wait_until(lambda: listed(client)["a"]["status"] == "ready", "a to load")
            not_yet = client.get("/v2/health/ready")
            assert not_yet.status_code == 400 and not_yet.json() == {"ready": False}
            assert listed(client)["b"]["status"] == "loading"
            assert client.get("/v2/models/b/ready").json()["ready"] is False
            assert predict(client, "a", runs[1]).status_code == 200  # a serves meanwhile
            gate.set()
            wait_until(lambda: ready(client), "b to load")
            assert client.get("/v2/health/ready").json() == {"ready": True}
    finally:
        gate.set()
        server.should_exit = True
        thread.join(TIMEOUT)


def test_the_metrics_parse_and_add_up_to_the_requests_sent(runs, tmp_path):
    from prometheus_client.parser import text_string_to_metric_families

    folder = models_folder(runs, tmp_path)
    with serving(folder) as (client, _):
        sent = {("a", "200"): 3, ("b", "200"): 2, ("a", "415"): 1}
        for (name, code), count in sent.items():
            for _ in range(count):
                body = runs[1] if code == "200" else b"not an image"
                assert predict(client, name, body).status_code == int(code)
        text = client.get("/metrics").text
    families = {f.name: f for f in text_string_to_metric_families(text)}
    counted = {
        (s.labels["model"], s.labels["code"]): s.value
        for s in families["l2bt_requests"].samples
        if s.name == "l2bt_requests_total"
    }
    assert counted == sent
    stages = {
        (s.labels["model"], s.labels["stage"]): s.value
        for s in families["l2bt_stage_seconds"].samples
        if s.name == "l2bt_stage_seconds_count"
    }
    assert stages[("a", "predict")] == 3 and stages[("b", "encode")] == 2
    p_values = [s for s in families["l2bt_p_value"].samples if s.name.endswith("_count")]
    assert {s.labels["model"]: s.value for s in p_values} == {"a": 3, "b": 2}
    loaded = {s.labels["model"]: s.value for s in families["l2bt_loaded"].samples}
    assert loaded == {"a": 1.0, "b": 1.0}


def test_a_drifted_line_is_flagged(runs, tmp_path):
    """Calibration scores all a tenth of the served part's score, the image threshold above
    it: the parts (called good) look like no calibration image, and the watch raises its
    flag; the answers' p-values are the plain conformal ones."""
    from l2bt.model import L2BT

    folder = models_folder(runs, tmp_path, ("a",))
    record = read_run(folder / "a")
    score = L2BT.load(folder / "a", device="cpu").predict(decoded(runs[1])).score
    low = (score / 10,) * 40
    thresholds = replace(record.thresholds, image=score * 1.5, image_scores=low)
    thresholds = replace(thresholds, n_calibration=40, calibration_images=("c.png",) * 40)
    write_run(folder / "a", record.with_thresholds(thresholds))
    with serving(folder, drift_alarm=0.01) as (client, _):
        assert listed(client)["a"]["calibration"] == "holding"
        for _ in range(40):
            answer = predict(client, "a", runs[1]).json()
            assert answer["verdict"] == "good" and answer["p_value"] == 1 / 41
        entry = listed(client)["a"]
        metrics = client.get("/metrics").text
    assert entry["calibration"] == "drifted"
    assert 1 <= entry["watch"]["drifted_at"] <= 40 and entry["watch"]["parts"] == 40
    assert 'l2bt_calibration_drifted{model="a"} 1.0' in metrics


def decoded(data: bytes):
    from l2bt.data.image_io import decode_image

    return decode_image(data)


def checksums(folder: Path) -> dict:
    return {
        p: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_a_server_killed_by_sigkill_serves_the_same_models_after_a_restart(runs, tmp_path):
    folder = models_folder(runs, tmp_path)
    before = checksums(folder)

    def start():
        port = free_port()
        command = [sys.executable, "-m", "l2bt", "serve", "--models", str(folder)]
        env = {**os.environ, "PYTHONPATH": SRC}
        process = subprocess.Popen(
            [*command, "--port", str(port), "--poll", "0.2"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=TIMEOUT)

        def answers() -> bool:
            try:
                return ready(client)
            except httpx.TransportError:
                return process.poll() is not None

        wait_until(answers, "the server to be ready")
        assert process.poll() is None
        return process, client

    process, client = start()
    first = {name: m["version"] for name, m in listed(client).items()}
    assert predict(client, "a", runs[1]).status_code == 200
    process.send_signal(signal.SIGKILL)
    process.wait(TIMEOUT)
    client.close()
    process, client = start()
    try:
        assert {name: m["version"] for name, m in listed(client).items()} == first
        assert predict(client, "b", runs[1]).status_code == 200
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(TIMEOUT)
        client.close()
    assert checksums(folder) == before  # nothing in the folder written
