"""`l2bt predict` end to end (decoding, model, writing) for two versions of the code, in one run.

Makes a synthetic category (`l2bt make-synthetic`, `--size` px long side), fits one run
with random weights on it, then runs `l2bt predict` on its test images in fresh processes,
alternately with `--baseline-src` and with this checkout's `src` on PYTHONPATH, and
reports the median wall time of each, their ratio, and whether the two wrote the same
scores.csv. Use it for changes to the predict road outside the model (reading, writing,
pipelining); pass `--device cuda` on a GPU machine, where that part dominates.

    git worktree add /tmp/base HEAD~1
    .venv/bin/python benchmarks/bench_predict_cli.py --baseline-src /tmp/base/src
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def l2bt(args: list[str], src: Path, env: dict[str, str]) -> float:
    """Seconds of one `python -m l2bt ...` with `src` first on PYTHONPATH."""
    tic = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "l2bt", *args],
        check=True,
        env={**env, "PYTHONPATH": str(src)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return time.perf_counter() - tic


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline-src", type=Path, required=True)
    parser.add_argument("--size", type=int, default=1536)
    parser.add_argument("--n-test", type=int, default=16, help="defective test images (+4 good)")
    parser.add_argument("--teacher", default="dinov2_vits14")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    current = ROOT / "src"
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        env = {**os.environ, "L2BT_CACHE_DIR": str(work / "cache")}
        synthetic = ["--size", str(args.size), "--n-train", "4", "--n-test-good", "4"]
        synthetic += ["--n-test-defective", str(args.n_test)]
        l2bt(["make-synthetic", "--out", str(work / "data"), *synthetic], current, env)
        fit = ["fit", "--data", str(work / "data"), "--category", "synthetic"]
        fit += ["--out", str(work / "run"), "--teacher", args.teacher, "--weights", "random"]
        fit += ["--image-size", str(args.image_size), "--epochs", "1", "--calibration", "0"]
        l2bt([*fit, "--device", args.device], current, env)
        seconds: dict[str, list[float]] = {"baseline": [], "current": []}
        for round_index in range(args.repeats):
            order = ["baseline", "current"] if round_index % 2 == 0 else ["current", "baseline"]
            for name in order:
                src = args.baseline_src if name == "baseline" else current
                predict = ["predict", "--model", str(work / "run"), "--out", str(work / name)]
                predict += ["--batch-size", str(args.batch_size), "--device", args.device]
                predict.append(str(work / "data/synthetic/test"))
                shutil.rmtree(work / name, ignore_errors=True)  # each run into a new folder
                seconds[name].append(l2bt(predict, src, env))
        same = (work / "baseline/scores.csv").read_bytes() == (
            work / "current/scores.csv"
        ).read_bytes()
    n_images = args.n_test + 4
    medians = {name: statistics.median(values) for name, values in seconds.items()}
    for name, value in medians.items():
        print(
            f"{name}: {value:.2f} s median ({n_images / value:.2f} images/s), runs {seconds[name]}"
        )
    print(
        f"baseline / current: {medians['baseline'] / medians['current']:.2f}; "
        f"same scores.csv: {same}"
    )


if __name__ == "__main__":
    main()
