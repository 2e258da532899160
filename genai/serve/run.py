"""``genai serve``: run the Serve application in the foreground until Ctrl-C or SIGTERM."""

from __future__ import annotations

import signal
import threading
from pathlib import Path

from ray import serve

from genai import cluster
from genai.serve.app import build_app
from genai.serve.spec import ServeSpec

APP_NAME = "genai"


def start(spec: ServeSpec, checkpoints: list[str | Path], config_file: str | None = None) -> str:
    """Deploy on the connected Ray; returns the base URL once every replica is up."""
    application = build_app(spec, checkpoints, config_file)
    serve.start(http_options={"host": spec.host, "port": spec.port})
    serve.run(application, name=APP_NAME, route_prefix="/", blocking=False)
    host = "127.0.0.1" if spec.host in ("0.0.0.0", "::") else spec.host
    return f"http://{host}:{spec.port}"


def serve_forever(
    spec: ServeSpec,
    checkpoints: list[str | Path],
    address: str | None = None,
    log=print,
    config_file: str | None = None,
) -> None:
    stop = threading.Event()
    with cluster.connect(address):
        # after ray.init, which installs its own fatal-signal handler (SIGTERM -> abort):
        # SIGTERM (docker stop, kill) shuts down as cleanly as Ctrl-C
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
        try:
            url = start(spec, checkpoints, config_file)
            log(
                f"serving at {url}  (POST /v1/completions, GET /v1/models, GET /healthz; Ctrl-C to stop)"
            )
            if spec.watch:
                log(f"watching the checkpoints every {spec.watch_interval_s:g} s for a new one")
            while not stop.wait(0.5):
                pass
            log("shutting down")
        finally:
            serve.shutdown()
