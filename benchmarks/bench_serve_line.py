"""Load test of `l2bt serve --models DIR` as a line uses it: several models, many clients,
one model replaced again and again while they send.

One small random-weight ViT-S/14 run is fitted here (`bench_serve.fit_small_run`) and
copied into a models folder as `m1` … `mN` (each recalibrated once, so each is its own
version). Two phases, in one run, each a fresh `l2bt serve` process on 127.0.0.1:
1. single: one model, `--clients` clients for `--seconds`;
2. line: `--models` models, the same clients spread over them, and every `--swap-every`
   seconds `m1`'s record rewritten atomically (its image threshold scaled, as `l2bt
   calibrate` writes it; the server polls every second and swaps).
Reported per phase and model: answered requests, failures by kind, throughput, client
latency p50/p99, the versions seen; for the line also the swaps seen and the server's
peak resident memory (VmHWM), which holds two versions of `m1` at each swap.

    .venv/bin/python benchmarks/bench_serve_line.py --quick
    .venv/bin/python benchmarks/bench_serve_line.py --models 3 --clients 16 --seconds 60
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, replace
from pathlib import Path

import httpx

from bench_serve import REQUEST_TIMEOUT_S, START_TIMEOUT_S, fit_small_run, free_port, textured_png


def models_folder(run: Path, root: Path, count: int) -> Path:
    """`count` copies of the run, each with its own image threshold (its own version)."""
    folder = root / "models"
    for index in range(1, count + 1):
        shutil.copytree(run, folder / f"m{index}")
        scale_threshold(folder / f"m{index}", 1.0 + index / 100)
    return folder


def scale_threshold(run: Path, factor: float) -> None:
    from l2bt.run import read_run, write_run

    record = read_run(run)
    assert record.thresholds is not None
    thresholds = replace(record.thresholds, image=record.thresholds.image * factor)
    write_run(run, record.with_thresholds(thresholds))


def start(folder: Path, args: argparse.Namespace, log: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    command = [sys.executable, "-m", "l2bt", "serve", "--models", str(folder), "--poll", "1"]
    command += ["--port", str(port), "--batch-size", "4", "--queue-size", str(2 * args.clients)]
    with log.open("wb") as out:
        server = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + START_TIMEOUT_S
    with httpx.Client(base_url=url, timeout=5.0) as client:
        while time.monotonic() < deadline and server.poll() is None:
            try:
                if client.get("/v2/health/ready").status_code == 200:
                    return server, url
            except httpx.TransportError:
                pass
            time.sleep(0.2)
    server.kill()
    raise SystemExit(f"`l2bt serve` did not become ready; its log:\n{log.read_text()[-3000:]}")


class Clients:
    """Clients sending until a deadline, each to one model in turn; what each got."""

    def __init__(self, url: str, names: list[str], body: bytes, seconds: float) -> None:
        self.url, self.names, self.body = url, names, body
        self.deadline = time.monotonic() + seconds
        self.lock = threading.Lock()
        self.latencies: dict[str, list[float]] = defaultdict(list)
        self.failures: Counter[str] = Counter()
        self.versions: dict[str, set[str]] = defaultdict(set)

    def run(self, index: int) -> None:
        name = self.names[index % len(self.names)]
        with httpx.Client(base_url=self.url, timeout=REQUEST_TIMEOUT_S) as client:
            while time.monotonic() < self.deadline:
                started = time.perf_counter()
                try:
                    response = client.post(
                        f"/v1/models/{name}/predict",
                        content=self.body,
                        headers={"content-type": "image/png"},
                    )
                except httpx.HTTPError as e:
                    self.fail(f"{name}: {type(e).__name__}")
                    continue
                if response.status_code != 200:
                    self.fail(f"{name}: {response.status_code}")
                    continue
                with self.lock:
                    self.latencies[name].append(time.perf_counter() - started)
                    self.versions[name].add(response.json()["version"])

    def fail(self, what: str) -> None:
        with self.lock:
            self.failures[what] += 1


@dataclass(frozen=True)
class Phase:
    clients: Clients
    seconds: float
    swaps: int
    peak_mib: float


def phase(folder: Path, args: argparse.Namespace, body: bytes, swap: bool) -> Phase:
    server, url = start(folder, args, folder.parent / f"serve-{swap}.log")
    names = sorted(p.name for p in folder.iterdir())
    clients = Clients(url, names, body, args.seconds)
    threads = [threading.Thread(target=clients.run, args=(i,)) for i in range(args.clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    swaps = 0
    while swap and time.perf_counter() - started + args.swap_every < args.seconds:
        time.sleep(args.swap_every)
        scale_threshold(folder / "m1", 1.01)
        swaps += 1
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    peak = peak_rss_mib(server.pid)
    server.terminate()
    server.wait(60)
    return Phase(clients, elapsed, swaps, peak)


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def report(title: str, result: Phase) -> None:
    clients, seconds = result.clients, result.seconds
    print(f"\n{title}: {seconds:.1f} s, swaps {result.swaps}, peak RSS {result.peak_mib:.0f} MiB")
    print(f"  failures: {dict(clients.failures) or 'none'}")
    for name in sorted(clients.latencies):
        latencies = sorted(clients.latencies[name])
        p99 = latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))]
        print(
            f"  {name}: {len(latencies)} answers, {len(latencies) / seconds:.2f} req/s, "
            f"p50 {statistics.median(latencies):.3f} s, p99 {p99:.3f} s, "
            f"{len(clients.versions[name])} version(s) seen"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", type=int, default=3)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--swap-every", type=float, default=10.0)
    parser.add_argument("--image", default="600x800", help="HxW of the PNG sent")
    parser.add_argument("--image-size", type=int, default=224, help="the run's input size")
    parser.add_argument("--quick", action="store_true", help="2 models, 4 clients, 12 s")
    args = parser.parse_args()
    if args.quick:
        args.models, args.clients, args.seconds, args.swap_every = 2, 4, 12.0, 4.0
    height, width = (int(v) for v in args.image.split("x"))
    body = textured_png(height, width, 99)
    with tempfile.TemporaryDirectory(prefix="l2bt-bench-line-") as scratch:
        root = Path(scratch)
        run = fit_small_run(root / "fit", args.image_size, "cpu")
        single = phase(models_folder(run, root / "single", 1), args, body, swap=False)
        line = phase(models_folder(run, root / "line", args.models), args, body, swap=True)
    print(
        f"l2bt serve --models: {args.clients} clients, {args.image} PNG, ViT-S/14 random "
        f"at {args.image_size} px, CPU"
    )
    report("single model", single)
    report(f"{args.models} models, m1 replaced every {args.swap_every:g} s", line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
