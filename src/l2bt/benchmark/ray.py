"""The benchmark on a Ray cluster: every (method, category) not yet done is a Ray task.

Each task runs `jobs.run_job` (what the local runner calls) on some node, with one GPU
when the cluster has GPUs, else one CPU. Tasks write models and maps under the output
folder; the driver writes each result JSON, the summary and the plots as tasks finish,
exactly as the local runner does, so the output folder is the same whichever executor
made it and a re-run, with or without `--ray`, resumes it. The output folder and the
feature cache (OUT/cache unless `--cache-dir`) must be on a filesystem every node sees:
one probe task per node checks that, and the l2bt version, before any work. A failed
task is one line naming its (method, category); the others go on. Ctrl-C cancels what is
outstanding and keeps what finished; files are atomic, so a killed driver leaves only
temporaries the next run removes. Without an address a local Ray instance is started and
shut down at the end; an already initialised Ray is used as it is.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from l2bt import __version__
from l2bt.benchmark.jobs import BenchmarkConfig, Job, run_job
from l2bt.benchmark.runner import BenchmarkRun, Executor, record_failure, record_result
from l2bt.errors import InputError
from l2bt.utils.progress import progress_bar, set_progress

PROBE_MARKER = ".l2bt-storage-probe"


def ray_executor(address: str | None) -> Executor:
    """An executor for `run_benchmark` that runs its jobs as Ray tasks."""

    def execute(run: BenchmarkRun, jobs: Sequence[Job], log: Callable[[str], None]) -> None:
        if not jobs:
            return
        ray = _import_ray()
        started = not ray.is_initialized()
        if started:
            ray.init(address=address or "local", include_dashboard=False, log_to_driver=False)
        try:
            run_on_cluster(ray, run, jobs, log)
        finally:
            if started:
                ray.shutdown()

    return execute


def run_on_cluster(
    ray: Any, run: BenchmarkRun, jobs: Sequence[Job], log: Callable[[str], None]
) -> None:
    """Submit every job, record each as it finishes; cancel the rest on Ctrl-C."""
    check_storage(ray, run)
    gpus = ray.cluster_resources().get("GPU", 0)
    resources = {"num_gpus": 1, "num_cpus": 1} if gpus else {"num_cpus": 1}
    slots = int(gpus or ray.cluster_resources().get("CPU", 1))
    task = ray.remote(max_retries=0, **resources)(run_job_quietly)
    pending = {task.remote(run.config, job, run.out): job for job in jobs}
    log(f"submitted {len(pending)} job(s) to Ray ({int(gpus)} GPU(s), {slots} task slot(s))")
    bar = progress_bar(total=len(pending), desc="benchmark jobs", unit="job")
    try:
        with bar:
            bar.set_postfix(running=min(slots, len(pending)), finished=0)
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=1)
                job = pending.pop(ready[0])
                try:
                    result = ray.get(ready[0])
                except ray.exceptions.RayTaskError as e:
                    record_failure(run, job, e.cause or e, log)
                except ray.exceptions.RayError as e:  # a worker or node died
                    record_failure(run, job, e, log)
                else:
                    record_result(run, job, result, log)
                bar.update(1)
                bar.set_postfix(running=min(slots, len(pending)), finished=bar.n)
    except KeyboardInterrupt:
        for ref in pending:
            ray.cancel(ref, force=True)
        log(f"cancelled {len(pending)} job(s) not finished; finished results are kept")
        raise


def run_job_quietly(config: BenchmarkConfig, job: Job, out: Path) -> dict[str, Any]:
    """`run_job` in a Ray worker, whose output nobody reads: without progress."""
    set_progress(False)
    return run_job(config, job, out)


def check_storage(ray: Any, run: BenchmarkRun) -> None:
    """Every node sees the output folder, can write in it, and runs this l2bt version."""
    marker = run.out / f"{PROBE_MARKER}-{uuid.uuid4().hex[:12]}"
    marker.write_text(__version__)
    try:
        scheduling = ray.util.scheduling_strategies.NodeAffinitySchedulingStrategy
        probe = ray.remote(num_cpus=0)(_probe_storage)
        nodes = [n for n in ray.nodes() if n.get("Alive")]
        answers = ray.get(
            [
                probe.options(scheduling_strategy=scheduling(n["NodeID"], soft=False)).remote(
                    str(marker)
                )
                for n in nodes
            ]
        )
    finally:
        marker.unlink(missing_ok=True)
    for node, (sees, writes, version) in zip(nodes, answers, strict=True):
        where = node.get("NodeManagerAddress", node["NodeID"])
        if not sees:
            raise InputError(
                f"the output folder is not visible from Ray node {where}: put "
                "--out (and --cache-dir) on storage every node sees",
                run.out,
            )
        if not writes:
            raise InputError(f"Ray node {where} cannot write in the output folder", run.out)
        if version != __version__:
            raise InputError(
                f"Ray node {where} runs l2bt {version}, this driver {__version__}:"
                " install the same version on every node"
            )


def _probe_storage(marker: str) -> tuple[bool, bool, str]:
    """On one node: (sees the driver's marker, can write beside it, its l2bt version)."""
    import os

    from l2bt import __version__ as version

    path = Path(marker)
    sees = path.is_file()
    probe = path.with_name(f"{path.name}-{os.getpid()}")
    try:
        probe.write_text("ok")
        probe.unlink()
        writes = True
    except OSError:
        writes = False
    return sees, writes, version


def _import_ray() -> Any:
    try:
        import ray
        import ray.util.scheduling_strategies
    except ImportError as e:
        raise InputError("--ray needs the ray package: pip install 'l2bt[ray]'") from e
    return ray
