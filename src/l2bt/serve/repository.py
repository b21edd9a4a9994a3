"""Served models by name: loaded in the background, replaced without a dropped request.

The models are the run folders (a `config.json` inside) and `.onnx` files of a folder,
each named after its entry (`--models DIR`), or one run or file (`--model RUN`). Every
`poll_seconds` the files are looked at (size, modification time, inode): a model whose
files changed is loaded again on a loading thread and warmed up beside the live version,
then swapped in at once on the event loop, which owns all of this state. A request takes
the live version when it is admitted and keeps it to its answer, so requests admitted
before a swap are answered by the old version and later ones by the new; the old one's
worker stops when its last request has ended. A replacement that fails to load leaves the
live version serving, its reason shown. A model loads again only when no earlier version
of it is still answering, so at most two versions of a model are in memory. Past
`max_loaded` models the least recently used one without requests in flight is unloaded;
its next request loads it again (and waits for it). Nothing in the folder is written.
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from l2bt.config import content_digest
from l2bt.engines import Engine
from l2bt.errors import InputError
from l2bt.run import CONFIG_FILE
from l2bt.serve.errors import RequestError, describe_exception, one_line
from l2bt.serve.metrics import ServeMetrics
from l2bt.serve.settings import ServeSettings
from l2bt.serve.version import Loader, ModelVersion, signature

LOG = logging.getLogger("l2bt.serve")
LOADING_THREADS = 2


@dataclass(frozen=True)
class ModelSource:
    """A model's name and the run folder or exported file it is loaded from."""

    name: str
    path: Path | None  # None: a predictor given in memory, never loaded again


def discover(folder: Path) -> list[ModelSource]:
    """The run folders and `.onnx` files in `folder`, by name (hidden entries, such as
    l2bt's own temporaries, are skipped)."""
    found = []
    for path in sorted(folder.iterdir()):
        if path.name.startswith("."):
            continue
        if (path.is_dir() and (path / CONFIG_FILE).is_file()) or path.suffix == ".onnx":
            found.append(ModelSource(path.stem if path.is_file() else path.name, path))
    return found


class ModelEntry:
    """One model by name: its live version, those retiring, the load in progress."""

    def __init__(self, source: ModelSource) -> None:
        self.source = source
        self.live: ModelVersion | None = None
        self.retiring: list[ModelVersion] = []
        self.loading: asyncio.Future[ModelVersion | None] | None = None
        self.failure: str | None = None  # why the last load failed, until one succeeds
        self.signature: object = None  # of the files last loaded or tried
        self.unloaded = False
        self.ever_loaded = False
        self.last_used = 0.0

    @property
    def status(self) -> str:
        if self.live is not None:
            return "ready"
        if self.loading is not None:
            return "loading"
        return "unloaded" if self.unloaded else "failed"

    @property
    def versions(self) -> list[ModelVersion]:
        """The live version and those retiring."""
        return ([self.live] if self.live else []) + self.retiring

    @property
    def in_flight(self) -> int:
        return sum(v.in_flight for v in self.versions)


class Repository:
    """The served models (see the module docstring); used on the event loop only."""

    def __init__(
        self,
        sources: list[ModelSource],
        loader: Loader,
        settings: ServeSettings,
        metrics: ServeMetrics,
        folder: Path | None = None,
    ) -> None:
        self.entries = {source.name: ModelEntry(source) for source in sources}
        self.loader, self.settings, self.metrics, self.folder = loader, settings, metrics, folder
        self._pool = ThreadPoolExecutor(LOADING_THREADS, thread_name_prefix="l2bt-load")
        self._poller: asyncio.Task[None] | None = None

    @classmethod
    def of_predictor(
        cls, predictor: Engine, name: str, settings: ServeSettings, metrics: ServeMetrics
    ) -> Repository:
        """A repository serving one predictor already loaded (its version: a digest of its
        description), never replaced."""
        repository = cls([ModelSource(name, None)], _no_loader, settings, metrics)
        entry = repository.entries[name]
        digest = content_digest(predictor.describe())[:16]
        entry.live = ModelVersion(predictor, digest, settings, metrics.batch_observer(name))
        entry.ever_loaded = True
        return repository

    def start(self) -> None:
        for entry in self.entries.values():
            if entry.live is not None:
                entry.live.worker.start()
            else:
                self.load(entry)
        if self.settings.poll_seconds > 0:
            self._poller = asyncio.get_running_loop().create_task(self._poll())

    def entry(self, name: str) -> ModelEntry:
        if name not in self.entries:
            known = ", ".join(self.entries) or "none"
            raise RequestError(404, f"no model named {name!r} (served: {known})")
        return self.entries[name]

    @property
    def ready(self) -> bool:
        """Every model has loaded a version at least once."""
        return all(entry.ever_loaded for entry in self.entries.values())

    def load(self, entry: ModelEntry) -> asyncio.Future[ModelVersion | None]:
        """The load in progress, or a new one of the entry's files as they are now."""
        path = entry.source.path
        if path is None:
            raise RequestError(400, f"model {entry.source.name} was given in memory: no files")
        if entry.loading is None:
            entry.signature = signature(path)
            observe = self.metrics.batch_observer(entry.source.name)
            loading = asyncio.get_running_loop().run_in_executor(
                self._pool, ModelVersion.load, path, self.loader, self.settings, observe
            )
            entry.loading = asyncio.ensure_future(self._loaded(entry, loading))
        return entry.loading

    async def _loaded(
        self, entry: ModelEntry, loading: asyncio.Future[ModelVersion]
    ) -> ModelVersion | None:
        """Swap the loaded version in (or keep the live one and say why not)."""
        try:
            version = await loading
        except Exception as e:  # whatever breaks a load, the service goes on
            entry.failure = one_line(str(e)) if isinstance(e, InputError) else describe_exception(e)
            LOG.warning(
                "model %s: loading %s failed: %s",
                entry.source.name,
                entry.source.path,
                entry.failure,
            )
            return None
        finally:
            entry.loading = None
        old, entry.live = entry.live, version
        entry.failure, entry.unloaded, entry.ever_loaded = None, False, True
        was = f" (was {old.digest})" if old is not None else ""
        LOG.info("model %s: version %s ready%s", entry.source.name, version.digest, was)
        if old is not None:
            self._retire(entry, old)
        self._keep_within_limit(entry)
        return version

    def _retire(self, entry: ModelEntry, version: ModelVersion) -> None:
        version.retired = True
        entry.retiring.append(version)
        if version.in_flight == 0:
            self._stop(entry, version)

    def _stop(self, entry: ModelEntry, version: ModelVersion) -> None:
        entry.retiring.remove(version)
        asyncio.get_running_loop().run_in_executor(
            None, version.stop, self.settings.shutdown_timeout
        )

    def unload(self, entry: ModelEntry) -> None:
        if entry.live is not None:
            live, entry.live = entry.live, None
            entry.unloaded = True
            LOG.info("model %s: unloaded", entry.source.name)
            self._retire(entry, live)

    def _keep_within_limit(self, loaded: ModelEntry) -> None:
        """Unload the least recently used idle models past `max_loaded`."""
        limit = self.settings.max_loaded
        live = [e for e in self.entries.values() if e.live is not None]
        idle = sorted((e for e in live if e is not loaded and e.in_flight == 0), key=_last_used)
        while limit is not None and len(live) > limit and idle:
            victim = idle.pop(0)
            self.unload(victim)
            live.remove(victim)

    async def acquire(self, entry: ModelEntry) -> ModelVersion:
        """The live version for a request (loading an unloaded model first), counted in
        flight until `release`; 503 past `queue_size` requests or when it cannot load."""
        if entry.in_flight >= self.settings.queue_size:
            raise RequestError(
                503,
                f"model {entry.source.name} busy: {entry.in_flight} requests in progress "
                "(--queue-size); retry later",
            )
        if entry.live is None:
            if entry.loading is None and not entry.unloaded:
                raise RequestError(
                    503, f"model {entry.source.name} failed to load: {entry.failure}"
                )
            await self.load(entry)
        version = entry.live
        if version is None:
            raise RequestError(503, f"model {entry.source.name} failed to load: {entry.failure}")
        entry.last_used = time.monotonic()
        version.in_flight += 1
        return version

    def release(self, entry: ModelEntry, version: ModelVersion) -> None:
        version.in_flight -= 1
        if version.retired and version.in_flight == 0 and version in entry.retiring:
            self._stop(entry, version)

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self.settings.poll_seconds)
            self.refresh()

    def changed(self, entry: ModelEntry) -> bool:
        """Whether the entry's files differ from those last loaded or tried."""
        path = entry.source.path
        return path is not None and signature(path) not in (None, entry.signature)

    def refresh(self) -> None:
        """Load what changed: models new in the folder, files replaced."""
        if self.folder is not None:
            for source in discover(self.folder):
                if source.name not in self.entries:
                    self.entries[source.name] = ModelEntry(source)
        for entry in self.entries.values():
            busy = entry.loading is not None or entry.retiring or entry.unloaded
            if not busy and self.changed(entry):  # at most two versions in memory; an
                self.load(entry)  # unloaded model loads (its files as they are) on use

    async def close(self, timeout: float) -> None:
        """Stop polling, then every version's worker (its batch first, up to `timeout`)."""
        if self._poller is not None:
            self._poller.cancel()
        versions = [
            v for e in self.entries.values() for v in ([e.live] if e.live else []) + e.retiring
        ]
        loop = asyncio.get_running_loop()
        await asyncio.gather(*(loop.run_in_executor(None, v.stop, timeout) for v in versions))
        self._pool.shutdown(wait=False, cancel_futures=True)


def _last_used(entry: ModelEntry) -> float:
    return entry.last_used


def _no_loader(path: Path) -> Engine:
    raise InputError(f"no loader for {path}")
