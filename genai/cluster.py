"""Where work runs: an embedded local Ray (the default) or an existing cluster.

Also the Ray Jobs API client behind ``genai submit`` / ``genai jobs``.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from pathlib import Path

import ray

# Measured here (FACTS.md): running Serve user code and the router on the replica's
# main loop saves a thread hop per request. Set before Ray starts so the raylet's
# workers inherit them; a user's own setting wins.
_RAY_ENV = {
    "RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD": "0",
    "RAY_SERVE_RUN_ROUTER_IN_SEPARATE_LOOP": "0",
    "RAY_TRAIN_ENABLE_V2_MIGRATION_WARNINGS": "0",
    "TOKENIZERS_PARALLELISM": "false",
    # Ray Train V2 tees print() to stdout *and* its logger, so every line shows twice
    "RAY_TRAIN_ENABLE_PRINT_PATCH": "0",
}


@contextlib.contextmanager
def connect(address: str | None = None, *, num_cpus: int | None = None) -> Iterator[None]:
    """Connect to Ray for the duration of the block.

    ``address=None`` starts an embedded local instance (token authentication on,
    dashboard off, nothing bound beyond 127.0.0.1) and stops it afterwards.
    ``address="auto"`` or ``"HOST:6379"`` joins a running cluster and leaves it up.
    If Ray is already initialised in this process (tests, ``genai demo``) it is reused.
    """
    for key, value in _RAY_ENV.items():
        os.environ.setdefault(key, value)
    if ray.is_initialized():
        yield
        return
    if address:
        # a cluster started with `ray start --head` has token auth on; without this the
        # driver fails with AuthenticationError after ~20 s (FACTS.md)
        os.environ.setdefault("RAY_AUTH_MODE", "token")
        ray.init(address=address, logging_level=logging.WARNING, runtime_env=_runtime_env())
    else:
        ray.init(
            num_cpus=num_cpus,
            # the dashboard serves the state API (Train's placement-group cleaner polls it)
            # and the Jobs API; bound to loopback only
            include_dashboard=True,
            dashboard_host="127.0.0.1",
            logging_level=logging.WARNING,
            runtime_env=_runtime_env(),
        )
    try:
        yield
    finally:
        ray.shutdown()


def _runtime_env() -> dict:
    return {"env_vars": {k: os.environ[k] for k in _RAY_ENV}}


def submit(
    entrypoint: str, address: str, working_dir: str | Path = ".", job_id: str | None = None
) -> str:
    """Ship the working dir through the Ray Jobs API and start ``entrypoint`` on the cluster."""
    from ray.job_submission import JobSubmissionClient

    client = JobSubmissionClient(address)
    return client.submit_job(
        entrypoint=entrypoint,
        submission_id=job_id,
        runtime_env={
            "working_dir": str(working_dir),
            "excludes": [".venv", "runs", ".genai_cache", ".git", "*.safetensors"],
        },
    )


def jobs_client(address: str):
    from ray.job_submission import JobSubmissionClient

    return JobSubmissionClient(address)
