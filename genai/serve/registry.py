"""The models one gateway replica serves, and how a new checkpoint replaces one in place.

A *source* is a checkpoint path as configured: a step dir, a ``latest`` link or a
checkpoints root. Each served model remembers its source and the directory it resolved to.
A new checkpoint arrives two ways:

- **watching** (``watch: true``): a thread re-resolves every source each
  ``watch_interval_s``; a ``latest`` link moved by training is picked up. With a serve
  config file, a changed ``checkpoints`` list in it is picked up too;
- **reconfiguring**: Serve's ``user_config`` holds the sources, so ``serve deploy`` of a
  config whose ``user_config.checkpoints`` changed updates the replicas in place
  (``reconfigure``) instead of replacing them.

Either way the new checkpoint loads beside the old one (requests keep being served), is
checked to be the same model (name and family), and replaces it in one assignment.
Requests already running finish on the old model, which is closed once idle. A checkpoint
that fails to load or check (corrupt safetensors, another family) is *refused*: logged,
counted, shown on ``/healthz``, and the old one keeps serving.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any

from genai.checkpoint import is_adapter, read_meta, resolve
from genai.families import get_family
from genai.serve import metrics
from genai.serve.api import count

log = logging.getLogger("ray.serve")

# after a swap, requests that picked the old model a moment before still submit to it
RETIRE_GRACE_S = 2.0
RETIRE_MAX_WAIT_S = 600.0


@dataclasses.dataclass(frozen=True)
class Served:
    source: str
    directory: Path
    family: str
    spec_hash: str
    server: Any
    card: dict[str, Any]
    named: bool = False
    """served under a name of its own (``adapters: {name: path}``), not its meta.json name"""


def entries(
    checkpoints: list[str], adapters: dict[str, str] | None = None
) -> list[tuple[str | None, str]]:
    """(name or None for meta.json's, source) of everything to serve: base models before
    the LoRA adapters that attach to them."""
    listed = [(None, str(c)) for c in checkpoints] + [
        (n, str(p)) for n, p in (adapters or {}).items()
    ]

    def adapter_last(entry: tuple[str | None, str]) -> bool:
        try:
            return is_adapter(resolve(entry[1]))
        except Exception:
            return False

    return sorted(listed, key=adapter_last)  # stable: the listed order otherwise


class Registry:
    """Served models by name. ``servers`` and ``cards`` are replaced whole on every change,
    so a request reads one consistent dict without a lock."""

    def __init__(self, spec: Any) -> None:
        self.spec = spec
        self.served: dict[str, Served] = {}
        self.servers: dict[str, Any] = {}
        self.cards: dict[str, dict[str, Any]] = {}
        self.refused: dict[str, str] = {}  # directory -> why (not retried until it changes)
        self.events: deque[dict[str, Any]] = deque(maxlen=20)
        self._lock = threading.Lock()  # one change at a time: watcher vs reconfigure
        self._stop = threading.Event()
        self._config_file: Path | None = None
        self._config_mtime = 0.0
        self.configured: list[tuple[str | None, str]] = []  # from the config / user_config
        self.added: dict[str, str] = {}  # adapters added over HTTP (genai/serve/book.py)

    @property
    def closed(self) -> bool:
        return self._stop.is_set()

    def wait(self, seconds: float) -> None:
        self._stop.wait(seconds)

    # ------------------------------------------------------------------ loading

    def load_all(self, sources: list[tuple[str | None, str]]) -> None:
        """The first load (``sources`` from :func:`entries`): every one must load, or the
        replica fails to start."""
        with self._lock:
            self.configured = list(sources)
            for given, source in sources:
                directory = resolve(source)
                name = given or read_meta(directory).name
                if name in self.served:
                    raise ValueError(f"two checkpoints are named {name!r}")
                self._put(self._load(source, directory, given))

    def _load(self, source: str, directory: Path, name: str | None = None) -> Served:
        meta = read_meta(directory)
        if name is not None and name != meta.name:
            meta = meta.model_copy(update={"name": name})
        server = get_family(meta.family).load_server()(directory, meta, self.spec)
        metrics.model_step().set(meta.step, tags={"model": meta.name})
        card = server.info()
        return Served(
            source, directory, meta.family, meta.spec_hash, server, card, named=name is not None
        )

    def _put(self, served: Served) -> None:
        name = served.card["id"]
        self.served = {**self.served, name: served}
        self._publish()

    def _publish(self) -> None:
        self.servers = {n: s.server for n, s in self.served.items()}
        self.cards = {n: s.card for n, s in self.served.items()}

    # ------------------------------------------------------------------ changes

    def apply(self, sources: list[tuple[str | None, str]]) -> None:
        """A new list of sources (:func:`entries`; from Serve's reconfigure, or an edited
        serve config): swap changed models, add new ones, drop those no longer listed.
        When any source cannot be read, nothing is dropped: it may have been the new home
        of a served model."""
        with self._lock:
            self.configured = list(sources)
            listed: set[str] = set()
            complete = True
            named = {n for n, _ in sources if n}
            sources = [*sources, *((n, p) for n, p in self.added.items() if n not in named)]
            for given, source in sources:
                try:
                    directory = resolve(source)
                    name = given or read_meta(directory).name
                except Exception as exc:
                    complete = False
                    self._refuse(source, given or "?", exc)
                    continue
                listed.add(name)
                current = self.served.get(name)
                if current is None:
                    try:
                        self._put(self._load(source, directory, given))
                        self._event("added", name, directory)
                    except Exception as exc:
                        complete = False
                        self._refuse(str(directory), name, exc)
                elif current.directory != directory:
                    self._swap(current, source, directory)
                elif current.source != source:
                    # same checkpoint under another name (e.g. its `latest` link): keep the
                    # loaded model, remember the source the watcher must follow now
                    self._put(dataclasses.replace(current, source=source))
            if complete:
                for name in sorted(set(self.served) - listed):
                    old = self.served[name]
                    self.served = {n: s for n, s in self.served.items() if n != name}
                    self._publish()
                    self._event("removed", name, old.directory)
                    self._retire(old)

    def apply_added(self, added: dict[str, str]) -> None:
        """The adapters added over HTTP changed: serve the configured models and these."""
        self.added = dict(added)
        self.apply(self.configured)

    def poll(self) -> None:
        """One watch pass: a source that now resolves elsewhere is swapped in; an edited
        serve config file is re-applied."""
        if self._config_file is not None:
            try:
                mtime = self._config_file.stat().st_mtime
            except OSError:
                mtime = self._config_mtime
            if mtime != self._config_mtime:
                self._config_mtime = mtime
                try:
                    from genai.serve.spec import load_serve

                    spec = load_serve(self._config_file)
                    base = self._config_base

                    def here(p: str) -> str:
                        return p if os.path.isabs(p) else str(base / p)

                    self.apply(
                        entries(
                            [here(p) for p in spec.checkpoints],
                            {n: here(p) for n, p in spec.adapters.items()},
                        )
                    )
                except Exception as exc:
                    self._refuse(str(self._config_file), "?", exc)
        with self._lock:
            for current in list(self.served.values()):
                try:
                    directory = resolve(current.source)
                except Exception:
                    continue  # e.g. a `latest` link being replaced this instant
                if directory != current.directory and str(directory) not in self.refused:
                    self._swap(current, current.source, directory)

    def _swap(self, current: Served, source: str, directory: Path) -> bool:
        name = current.card["id"]
        t0 = time.perf_counter()
        try:
            meta = read_meta(directory)
            if meta.name != name and not current.named:
                raise ValueError(f"it holds model {meta.name!r}, not {name!r}")
            if meta.family != current.family:
                raise ValueError(f"it holds a {meta.family} model; {name!r} is {current.family}")
            new = self._load(source, directory, name if current.named else None)
        except Exception as exc:
            self._refuse(str(directory), name, exc)
            return False
        self._put(new)
        seconds = round(time.perf_counter() - t0, 3)
        self._event("swapped", name, directory, step=new.card["step"], load_s=seconds)
        log.info(
            "genai: %s now serves %s (step %s, loaded in %.2f s)",
            name,
            directory,
            new.card["step"],
            seconds,
        )
        self._retire(current)
        return True

    def _refuse(self, where: str, name: str, exc: BaseException) -> None:
        why = f"{type(exc).__name__}: {exc}"[:500]
        if self.refused.get(where) != why:
            log.error(
                "genai: refused checkpoint %s for model %s, still serving the old one: %s",
                where,
                name,
                why,
            )
        self.refused[where] = why
        self._event("refused", name, where, error=why)
        count(metrics.checkpoint_swaps_total(), 1, {"model": name, "result": "refused"})

    def _event(self, what: str, name: str, where: Any, **extra: Any) -> None:
        self.events.append(
            {
                "time": round(time.time(), 3),
                "event": what,
                "model": name,
                "checkpoint": str(where),
                **extra,
            }
        )
        if what == "swapped":
            count(metrics.checkpoint_swaps_total(), 1, {"model": name, "result": what})

    def _retire(self, old: Served) -> None:
        """Close the old model once the requests that hold it are done (its own thread)."""

        def wait_and_close() -> None:
            time.sleep(RETIRE_GRACE_S)
            deadline = time.monotonic() + RETIRE_MAX_WAIT_S
            while getattr(old.server, "busy", False) and time.monotonic() < deadline:
                time.sleep(0.1)
            old.server.close()

        threading.Thread(
            target=wait_and_close, name=f"retire-{old.card['id']}", daemon=True
        ).start()

    # ------------------------------------------------------------------ watching

    def watch(
        self, interval_s: float, config_file: str | None = None, base: str | None = None
    ) -> None:
        """Poll every ``interval_s`` in a daemon thread until :meth:`close`."""
        if config_file:
            self._config_file = Path(config_file)
            self._config_base = Path(base or os.getcwd())
            self._config_mtime = self._config_file.stat().st_mtime

        def loop() -> None:
            while not self._stop.wait(interval_s):
                try:
                    self.poll()
                except Exception:  # a watcher that dies silently would be worse
                    log.exception("genai: checkpoint watch pass failed")

        threading.Thread(target=loop, name="checkpoint-watch", daemon=True).start()

    def health(self) -> dict[str, Any]:
        return {
            "checkpoints": {
                n: {"step": s.card["step"], "directory": str(s.directory), "source": s.source}
                for n, s in self.served.items()
            },
            "refused": dict(self.refused),
            "events": list(self.events),
        }

    def close(self) -> None:
        self._stop.set()
        for s in self.served.values():
            s.server.close()
