"""API keys with names, scopes and per-key rate limits.

Keys come from an environment variable (``name:key`` pairs, comma-separated) or a YAML
file (``name: key`` or ``name: {key: ..., requests_per_minute: ..., models: [...],
actions: [...]}``), never from the command line. A key's scope: the models it may use (ids
or globs, default every one) and the actions it may take (``generate``, ``feedback``,
``log``: read its own generations, ``admin``: add and remove adapters, read every key's
generations); without ``actions`` a key may do all but ``admin``. The application keeps only their SHA-256 digests: the keys themselves
never reach Serve's state or a replica's arguments.

Requests and tokens are counted per key **name**; a key's rate limit is a token bucket
held by each replica (with N replicas a key may get up to N times its rate: the price of
not adding a shared counter, and a network hop, to every request).
"""

from __future__ import annotations

import fnmatch
import hashlib
import math
import os
import secrets
import threading
import time
from collections.abc import Mapping
from contextvars import ContextVar
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml

# The key name of the request being handled ("" when keys are off), for metrics and logs.
current_key: ContextVar[str] = ContextVar("genai_key", default="")


ACTIONS = ("generate", "feedback", "log", "admin")
# what a key may do unless its entry says: everything but admin (adding and removing
# adapters, reading other keys' generations), which is granted by name only
DEFAULT_ACTIONS = ("generate", "feedback", "log")
# current_key's models (globs) and actions, for the model replica's check of the model
current_scope: ContextVar[tuple[str, ...]] = ContextVar("genai_key_models", default=("*",))


@dataclass(frozen=True)
class Key:
    name: str
    digest: str  # sha256 hex of the key
    requests_per_minute: float = 0.0  # 0: no limit
    models: tuple[str, ...] = ("*",)  # model ids or globs (fnmatch) it may use
    actions: tuple[str, ...] = DEFAULT_ACTIONS

    def may(self, action: str) -> bool:
        return action in self.actions

    def refusal(self, action: str) -> str:
        return (
            f"key {self.name!r} may not {_VERB[action]}: its actions are "
            f"{', '.join(self.actions) or 'none'} (the keys file's 'actions')"
        )


_VERB = {
    "generate": "generate (action 'generate')",
    "feedback": "send feedback (action 'feedback')",
    "log": "read the generation log (action 'log')",
    "admin": "administer the server (action 'admin')",
}


def allows(patterns: tuple[str, ...], model: str) -> bool:
    return any(fnmatch.fnmatchcase(model, p) for p in patterns)


def model_refusal(name: str, model: str, allowed: tuple[str, ...]) -> str:
    return (
        f"key {name!r} may not use model {model!r}: its models are {', '.join(allowed)} "
        "(the keys file's 'models')"
    )


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def _entry(
    name: str,
    key: str,
    rpm: float,
    source: str,
    models: Any = ("*",),
    actions: Any = DEFAULT_ACTIONS,
) -> Key:
    if not name or not key:
        raise ValueError(f"{source}: an API key entry needs a name and a key")
    if len(key) < 8:
        raise ValueError(f"{source}: key {name!r} is shorter than 8 characters")
    for field, value in (("models", models), ("actions", actions)):
        if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
            raise ValueError(f"{source}: key {name!r}: {field} must be a list of strings")
    unknown = sorted(set(actions) - set(ACTIONS))
    if unknown:
        raise ValueError(
            f"{source}: key {name!r}: unknown actions {unknown} (choose from {', '.join(ACTIONS)})"
        )
    return Key(
        name=name,
        digest=digest(key),
        requests_per_minute=float(rpm),
        models=tuple(models),
        actions=tuple(a for a in ACTIONS if a in actions),
    )


def load_keys(
    env_var: str,
    file: str | None,
    default_rpm: float = 0.0,
    environ: Mapping[str, str] = os.environ,
) -> list[Key]:
    """Every configured key; an empty list means the API is open."""
    keys: list[Key] = []
    for i, item in enumerate(p.strip() for p in environ.get(env_var, "").split(",")):
        if not item:
            continue
        name, sep, key = item.partition(":")
        if not sep:  # a bare key: named by a digest prefix, never by the key itself
            name, key = f"key-{digest(item)[:8]}", item
        keys.append(_entry(name.strip(), key.strip(), default_rpm, f"${env_var} entry {i + 1}"))
    if file:
        path = Path(file)
        if not path.is_file():
            raise ValueError(f"api_keys_file {file!r} does not exist")
        data = yaml.safe_load(path.read_text()) or {}
        if not isinstance(data, dict):
            raise ValueError(f"api_keys_file {file!r} must map key names to keys")
        for name, value in data.items():
            if isinstance(value, dict):
                unknown = set(value) - {"key", "requests_per_minute", "models", "actions"}
                if unknown:
                    raise ValueError(f"{file}: key {name!r} has unknown fields {sorted(unknown)}")
                rpm = value.get("requests_per_minute", default_rpm)
                scope = {k: value[k] for k in ("models", "actions") if k in value}
                keys.append(_entry(str(name), str(value.get("key", "")), rpm, file, **scope))
            else:
                keys.append(_entry(str(name), str(value or ""), default_rpm, file))
    names = [k.name for k in keys]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(f"API key names must be unique; repeated: {', '.join(dupes)}")
    return keys


def to_settings(keys: list[Key]) -> list[dict[str, Any]]:
    return [asdict(k) for k in keys]


def from_settings(entry: dict[str, Any]) -> Key:
    return Key(**{**entry, "models": tuple(entry["models"]), "actions": tuple(entry["actions"])})


class KeyRing:
    """Lookup by presented key, and a token bucket per key name (thread-safe)."""

    def __init__(self, keys: list[dict[str, Any]] | list[Key]) -> None:
        self.keys = [k if isinstance(k, Key) else from_settings(k) for k in keys]
        self.by_name = {k.name: k for k in self.keys}
        self._buckets: dict[str, tuple[float, float]] = {}  # name -> (tokens, last time)
        self._lock = threading.Lock()

    def __bool__(self) -> bool:
        return bool(self.keys)

    def identify(self, presented: str) -> Key | None:
        d = digest(presented)
        found = None
        for k in self.keys:  # compare every digest: timing says nothing about which matched
            if secrets.compare_digest(d, k.digest):
                found = k
        return found

    def retry_after(self, key: Key, now: float | None = None) -> float:
        """0 if the request may go now (and it is counted), else seconds until it may."""
        rpm = key.requests_per_minute
        if rpm <= 0:
            return 0.0
        now = time.monotonic() if now is None else now
        rate, burst = rpm / 60.0, max(1.0, rpm / 6.0)  # a tenth of a minute's worth at once
        with self._lock:
            tokens, last = self._buckets.get(key.name, (burst, now))
            tokens = min(burst, tokens + (now - last) * rate)
            if tokens >= 1.0:
                self._buckets[key.name] = (tokens - 1.0, now)
                return 0.0
            self._buckets[key.name] = (tokens, now)
            return (1.0 - tokens) / rate


def retry_after_header(seconds: float) -> str:
    return str(max(1, math.ceil(seconds)))
