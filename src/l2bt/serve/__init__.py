"""`l2bt serve`: an HTTP service for a line's models (SPEC §8, §13), on FastAPI and uvicorn.

    app = create_app(predictor, "bottle", ServeSettings(batch_size=4))   # one model
    metrics = ServeMetrics()                                              # or a folder
    repository = Repository(discover(folder), loader, settings, metrics, folder)
    run_server(repository_app(repository, metrics), "127.0.0.1", 8000)

`app.py` holds the routes, `service.py` a prediction's road (body, admission, decoding,
the predict worker, the JSON), `repository.py` the models by name (loading, polling,
swaps, unloading), `version.py` one loaded version (its worker, its calibration watch,
`watch.py`), `batching.py` the worker thread that owns a predictor, `body.py` request
bodies within their deadlines, `linger.py` a 413 the client can read, `decode.py` image
bytes to arrays within the limits, `encode.py` predictions to JSON, `metrics.py`
Prometheus, `handlers.py` errors and the request log, `server.py` uvicorn and shutdown,
`settings.py` the limits. Only this package imports fastapi, uvicorn and
prometheus_client (the `serve` extra); the rest of l2bt imports without them.
"""

from l2bt.serve.app import create_app, repository_app
from l2bt.serve.metrics import ServeMetrics
from l2bt.serve.repository import ModelSource, Repository, discover
from l2bt.serve.server import Server, run_server
from l2bt.serve.settings import ServeSettings

__all__ = [
    "ModelSource",
    "Repository",
    "ServeMetrics",
    "ServeSettings",
    "Server",
    "create_app",
    "discover",
    "repository_app",
    "run_server",
]
