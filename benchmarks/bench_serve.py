"""Load test of `l2bt serve`: throughput and latency with several concurrent clients.

Starts `l2bt serve` in its own process on 127.0.0.1 (a free port) for a run folder
(`--model RUN`, or a small random-weight `dinov2_vits14` run fitted here on synthetic
images in a temporary folder, with thresholds), once per batch size asked for. Each time
it sends two warm-up requests, then `--clients` threads (one httpx client each) send
PNG images of one size (four different textures) as fast as answers come back, until
`--requests` have been sent or `--seconds` have passed, whichever is first. Reported per
batch size: throughput (answered requests per second of the measured phase), client-side
latency p50/p95/p99, the server's own `seconds` (p50), and the errors by status. The
server is stopped with Ctrl-C (SIGINT) and the script exits by itself.

Single-request latency (`--single N`, default 8 requests): one client, no queue, the same
PNG each time, against the batch-1 server; and, in this process on the same run and
image, the median time of each part of one request: decoding the PNG (the service's own
decoder), the teacher, everything else of the prediction (preprocessing, students,
upsampling, smoothing, crop, score, mask and regions) and encoding the JSON answer.

    .venv/bin/python benchmarks/bench_serve.py --quick      # seconds: a smoke run
    .venv/bin/python benchmarks/bench_serve.py              # 1000x1500 images, batch 1 vs 4
    .venv/bin/python benchmarks/bench_serve.py --model RUN --device cuda --clients 16
"""

from __future__ import annotations

import argparse
import io
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

REQUEST_TIMEOUT_S = 300.0  # one request; only so that a stuck server cannot hang the run
START_TIMEOUT_S = 300.0


@dataclass(frozen=True)
class Result:
    batch_size: int
    clients: int
    image: str
    requests: int
    answered: int
    errors: dict[str, int]
    seconds: float
    throughput_rps: float
    latency_p50_s: float
    latency_p95_s: float
    latency_p99_s: float
    server_seconds_p50: float


def textured_png(height: int, width: int, seed: int) -> bytes:
    """A smooth random texture with noise, as PNG bytes."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    gray = 128 + 60 * np.sin(xx / 5.0 + rng.random() * 6) * np.cos(yy / 7.0)
    gray = np.clip(gray + rng.normal(0, 8, (height, width)), 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(np.repeat(gray[:, :, None], 3, axis=2)).save(buffer, "PNG")
    return buffer.getvalue()


def fit_small_run(folder: Path, image_size: int, device: str) -> Path:
    """A random-weight ViT-S/14 run, one epoch on 12 synthetic images, calibrated on 8."""
    from l2bt.config import L2BTConfig, TeacherConfig, TrainConfig
    from l2bt.decisions.calibrate import CalibrationSettings
    from l2bt.model import L2BT

    images = []
    for seed in range(20):
        path = folder / "images" / f"{seed:02d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(textured_png(96, 128, seed))
        images.append(path)
    config = L2BTConfig(TeacherConfig("dinov2_vits14", "random", image_size), TrainConfig(1))
    model = L2BT.fit(images[:12], config, device=device, cache_dir=folder / "cache")
    model.calibrate(images[12:], CalibrationSettings(false_alarm_rate=0.2))
    return model.save(folder / "run")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def start_server(
    run: Path, batch_size: int, args: argparse.Namespace, log: Path
) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "l2bt",
        "serve",
        "--model",
        str(run),
        "--port",
        str(port),
        "--batch-size",
        str(batch_size),
        "--queue-size",
        str(max(16, 2 * args.clients)),
        "--device",
        args.device,
    ]
    with log.open("wb") as out:
        server = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + START_TIMEOUT_S
    with httpx.Client(base_url=url, timeout=5.0) as client:
        while time.monotonic() < deadline and server.poll() is None:
            try:
                if client.get("/v1/health").status_code == 200:
                    return server, url
            except httpx.TransportError:
                time.sleep(0.2)
    stop_server(server)
    raise SystemExit(f"`l2bt serve` did not start; its log:\n{log.read_text()[-3000:]}")


def stop_server(server: subprocess.Popen[bytes]) -> None:
    if server.poll() is None:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(60)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


class Load:
    """Clients that share a request budget and a deadline; each records what it got."""

    def __init__(self, url: str, bodies: list[bytes], requests: int, seconds: float) -> None:
        self.url, self.bodies = url, bodies
        self.left, self.deadline = requests, time.monotonic() + seconds
        self.lock = threading.Lock()
        self.latencies: list[float] = []
        self.server_seconds: list[float] = []
        self.statuses: Counter[str] = Counter()

    def take(self) -> int | None:
        """A request number to send, or None when the budget or the time is spent."""
        with self.lock:
            if self.left <= 0 or time.monotonic() >= self.deadline:
                return None
            self.left -= 1
            return self.left

    def client(self) -> None:
        with httpx.Client(base_url=self.url, timeout=REQUEST_TIMEOUT_S) as client:
            while (number := self.take()) is not None:
                body = self.bodies[number % len(self.bodies)]
                started = time.perf_counter()
                try:
                    response = client.post(
                        "/v1/predict", content=body, headers={"content-type": "image/png"}
                    )
                except httpx.HTTPError as e:
                    self.record(type(e).__name__, time.perf_counter() - started, None)
                    continue
                seconds = response.json().get("seconds") if response.status_code == 200 else None
                self.record(str(response.status_code), time.perf_counter() - started, seconds)

    def record(self, status: str, latency: float, server_seconds: float | None) -> None:
        with self.lock:
            self.statuses[status] += 1
            if server_seconds is not None:
                self.latencies.append(latency)
                self.server_seconds.append(server_seconds)


def measure(
    url: str, bodies: list[bytes], batch_size: int, image: str, args: argparse.Namespace
) -> Result:
    with httpx.Client(base_url=url, timeout=REQUEST_TIMEOUT_S) as client:
        for body in bodies[:2]:  # warm-up: first-call set-up stays out of the figures
            client.post("/v1/predict", content=body).raise_for_status()
    load = Load(url, bodies, args.requests, args.seconds)
    threads = [threading.Thread(target=load.client) for _ in range(args.clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    latencies = np.array(load.latencies or [np.nan])
    p50, p95, p99 = np.percentile(latencies, [50, 95, 99])
    return Result(
        batch_size=batch_size,
        clients=args.clients,
        image=image,
        requests=sum(load.statuses.values()),
        answered=len(load.latencies),
        errors={k: v for k, v in load.statuses.items() if k != "200"},
        seconds=round(elapsed, 3),
        throughput_rps=len(load.latencies) / elapsed,
        latency_p50_s=float(p50),
        latency_p95_s=float(p95),
        latency_p99_s=float(p99),
        server_seconds_p50=float(np.median(load.server_seconds or [np.nan])),
    )


def request_parts(run: Path, png: bytes, repeats: int) -> dict[str, float]:
    """Median seconds of each part of one request, in this process (see the docstring)."""
    from common import median_seconds
    from l2bt.model import L2BT
    from l2bt.preprocess import InputGeometry, header_limit, teacher_inputs
    from l2bt.serve.decode import decode_image
    from l2bt.serve.encode import Made, prediction_response

    model = L2BT.load(run, device="cpu")
    config = model.config.teacher
    check = header_limit(model.record.teacher, 50_000_000)
    image = decode_image(png, check, model.record.bit_depth)
    x = teacher_inputs(image, InputGeometry.of(config, *image.shape[:2]))  # (n, 3, h, w)
    prediction = model.predict(image)
    threshold = None if model.thresholds is None else model.thresholds.image
    parts = {
        "decode": median_seconds(lambda: decode_image(png, check, None), repeats),
        "teacher": median_seconds(
            lambda: model.teacher.features(x, config.layers, model.precision), repeats
        ),
        "whole prediction": median_seconds(lambda: model.predict(image), repeats),
        "encode": median_seconds(
            lambda: prediction_response(
                prediction,
                threshold,
                Made("bench", "0", None),
                time.perf_counter(),
                "none",
                "none",
                None,
            ),
            repeats,
        ),
    }
    parts["rest of the prediction"] = parts["whole prediction"] - parts["teacher"]
    return parts


def print_table(results: list[Result]) -> None:
    print(
        f"{'batch':>5} {'clients':>7} {'image':>10} {'sent':>5} {'ok':>5} {'errors':>8} "
        f"{'req/s':>7} {'p50 s':>7} {'p95 s':>7} {'p99 s':>7} {'server p50':>10}"
    )
    for r in results:
        errors = sum(r.errors.values())
        print(
            f"{r.batch_size:>5} {r.clients:>7} {r.image:>10} {r.requests:>5} {r.answered:>5} "
            f"{errors:>8} {r.throughput_rps:>7.2f} {r.latency_p50_s:>7.3f} "
            f"{r.latency_p95_s:>7.3f} {r.latency_p99_s:>7.3f} {r.server_seconds_p50:>10.3f}"
        )
        if r.errors:
            print(f"      errors by status: {r.errors}")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model",
        type=Path,
        default=None,
        help="run folder (default: fit a small random-weight run here)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a seconds-long smoke run: 64x96 images, 56 px model, 4 clients, 40 requests, batch 4",
    )
    parser.add_argument("--image", default="1000x1500", help="request image, HxW")
    parser.add_argument(
        "--image-size", type=int, default=448, help="the fitted run's input side (without --model)"
    )
    parser.add_argument("--batch-sizes", default="1,4", help="one server run per batch size")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--requests", type=int, default=400, help="most requests sent")
    parser.add_argument("--seconds", type=float, default=120.0, help="most seconds sending")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument(
        "--single", type=int, default=8, help="requests of the one-client latency (0: none)"
    )
    parser.add_argument("--out", type=Path, default=None, help="also write the results as JSON")
    args = parser.parse_args()
    if args.quick:
        args.image, args.image_size, args.batch_sizes = "64x96", 56, "4"
        args.clients, args.requests, args.seconds = 4, 40, 30.0
    return args


def main() -> int:
    args = parse_args()
    height, width = (int(side) for side in args.image.lower().split("x"))
    bodies = [textured_png(height, width, 1000 + seed) for seed in range(4)]
    results = []
    with tempfile.TemporaryDirectory(prefix="bench_serve_") as tmp:
        folder = Path(tmp)
        os.environ.setdefault("L2BT_CACHE_DIR", str(folder / "cache"))
        run = args.model or fit_small_run(folder, args.image_size, args.device)
        single = None
        if args.single:
            one = argparse.Namespace(**{**vars(args), "clients": 1, "requests": args.single})
            server, url = start_server(run, 1, args, folder / "server.log")
            try:
                single = measure(url, bodies[:1] * 4, 1, args.image, one)
            finally:
                stop_server(server)
            parts = request_parts(run, bodies[0], max(3, args.single // 2))
        for batch_size in (int(b) for b in args.batch_sizes.split(",")):
            server, url = start_server(run, batch_size, args, folder / "server.log")
            try:
                results.append(measure(url, bodies, batch_size, args.image, args))
            finally:
                stop_server(server)
    model = args.model or f"random-weight dinov2_vits14, input {args.image_size} px"
    print(
        f"l2bt serve: model {model}, device {args.device}, PNG requests of {args.image} "
        f"(one size); each client waits for its answer before sending the next"
    )
    print_table(results)
    if single is not None:
        print(
            f"\none client, no queue ({single.answered} requests): latency p50 "
            f"{single.latency_p50_s:.3f} s, server's own p50 {single.server_seconds_p50:.3f} s; "
            "parts, medians in one process:"
        )
        for name, seconds in parts.items():
            print(f"  {name:<24} {seconds:8.4f} s")
    if args.out:
        args.out.write_text(json.dumps([asdict(r) for r in results], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
