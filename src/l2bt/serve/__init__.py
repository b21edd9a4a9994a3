"""`l2bt serve`: an HTTP service for any predictor (SPEC §8), on FastAPI and uvicorn.

    app = create_app(predictor, description, ServeSettings(batch_size=4))
    run_server(app, "127.0.0.1", 8000)

`app.py` holds the routes and the request's road (body, admission, decoding, the
predict worker, the JSON), `batching.py` the worker thread that owns the predictor,
`body.py` request bodies within their deadlines, `decode.py` image bytes to arrays
within the limits, `encode.py` predictions to JSON, `server.py` uvicorn and shutdown,
`settings.py` the limits. Only this package imports fastapi and uvicorn (the `serve`
extra); the rest of l2bt imports without them.
"""

from l2bt.serve.app import create_app
from l2bt.serve.server import Server, run_server
from l2bt.serve.settings import ServeSettings

__all__ = ["ServeSettings", "Server", "create_app", "run_server"]
