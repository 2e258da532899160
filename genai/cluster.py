"""Where work runs: an embedded local Ray (the default) or an existing cluster.

Also the Ray Jobs API client behind ``genai submit`` / ``genai jobs``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
from collections.abc import Iterator
from pathlib import Path

import ray

from genai import timeline

# Running Serve user code and the router on the replica's main loop saves a thread hop
# per request (bench/serve_throughput.py measures it). Set before Ray starts so the raylet's
# workers inherit them; a user's own setting wins.
_RAY_ENV = {
    "RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD": "0",
    "RAY_SERVE_RUN_ROUTER_IN_SEPARATE_LOOP": "0",
    "RAY_TRAIN_ENABLE_V2_MIGRATION_WARNINGS": "0",
    "TOKENIZERS_PARALLELISM": "false",
    # Ray Train V2 tees print() to stdout *and* its logger, so every line shows twice
    "RAY_TRAIN_ENABLE_PRINT_PATCH": "0",
}


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (for a local server or a ``ray start`` node)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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
        _token_auth()
        # inside a submitted job, the job's runtime env and this driver's both set
        # variables; without this Ray refuses any key the two share, even with equal values
        os.environ.setdefault("RAY_OVERRIDE_JOB_RUNTIME_ENV", "1")
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


def _token_auth() -> None:
    """Send Ray's auth token, as a Ray 2.60 cluster (`ray start --head`) requires: without
    it a driver fails with AuthenticationError after a long wait. Ray caches the mode
    when it is imported, so setting RAY_AUTH_MODE now must refresh its config, which is what
    Ray's own helper does. An explicit RAY_AUTH_MODE wins."""
    if "RAY_AUTH_MODE" in os.environ:
        return
    try:
        from ray._private.authentication.authentication_token_setup import (
            maybe_enable_token_auth_if_token_available,
        )
    except ImportError:  # another Ray version: the environment variable alone
        os.environ["RAY_AUTH_MODE"] = "token"
        return
    # with no token anywhere this leaves auth off, and the cluster's refusal says what to set;
    # its "token authentication is enabled" warning would print on every command
    setup_log = logging.getLogger(maybe_enable_token_auth_if_token_available.__module__)
    level = setup_log.level
    setup_log.setLevel(logging.ERROR)
    try:
        maybe_enable_token_auth_if_token_available(warn_if_disabled=False)
    finally:
        setup_log.setLevel(level)


def _runtime_env() -> dict:
    # Ray Train's own settings (RAY_TRAIN_*) are read by its controller and workers, which
    # run in the job's runtime env, not the driver's: pass on what the user set
    train = {k: v for k, v in os.environ.items() if k.startswith("RAY_TRAIN_") or k == timeline.ENV}
    return {"env_vars": {**{k: os.environ[k] for k in _RAY_ENV}, **train}}


def submit(
    entrypoint: str, address: str, working_dir: str | Path = ".", job_id: str | None = None
) -> str:
    """Ship the working dir through the Ray Jobs API and start ``entrypoint`` on the cluster."""
    return jobs_client(address).submit_job(
        entrypoint=entrypoint,
        submission_id=job_id,
        runtime_env={
            "working_dir": str(working_dir),
            "excludes": [".venv", "runs", ".genai_cache", ".git", "*.safetensors", ".whl"],
            # the entrypoint (a driver) sets genai's own itself (connect)
            "env_vars": {
                k: v
                for k, v in os.environ.items()
                if k.startswith("RAY_TRAIN_") and k not in _RAY_ENV
            },
        },
    )


class ClusterAuthError(ConnectionError):
    """The cluster refused this client's Ray auth token (or there was none)."""


def jobs_client(address: str):
    """A Jobs API client; token auth on, as every Ray 2.60 cluster has it by default."""
    from ray.exceptions import AuthenticationError
    from ray.job_submission import JobSubmissionClient

    _token_auth()
    try:
        return JobSubmissionClient(address)
    except AuthenticationError as exc:
        first = str(exc).strip().splitlines()[0]
        raise ClusterAuthError(
            f"{address} refused the Ray auth token ({first.split(': ', 1)[-1]}): set "
            "RAY_AUTH_TOKEN_PATH to the cluster's token file or RAY_AUTH_TOKEN to the token "
            "(cluster/local.sh up prints them; `ray get-auth-token` on the head shows it)"
        ) from None
