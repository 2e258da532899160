"""The model deployment: replicas that hold every served checkpoint and do the work.

The gateway (:mod:`genai.serve.app`) validates, authenticates, counts and logs; it calls
these replicas through a Serve handle, so that when one dies the gateway can retry the
request on another (it retries only what has produced no output yet). Everything here
takes already-validated request fields; what depends on the model (which model, its
family, the context length, image sizes, class names) is checked here; a bad request
gets ``{"error": {status, message, param, kind}}`` back, which the gateway turns into
its JSON error naming the field.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import io
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
from ray import serve

from genai.config import ServeSpec
from genai.families.lm.serving import NoChatTemplate, PromptTooLong
from genai.models.decoding import Generation
from genai.serve import keys, registry
from genai.serve.errors import APIError

LM = ("lm",)


@serve.deployment
class Models:
    """Every served model, by name (:class:`~genai.serve.registry.Registry`): LMs decode
    with continuous batching, image models batch with ``@serve.batch``. Checkpoints come in
    the ``user_config`` (``reconfigure``: an in-place update) and, with ``watch``, from
    the watched paths."""

    def __init__(self, settings: dict[str, Any]) -> None:
        spec = ServeSpec.model_validate(settings["spec"])
        self.registry = registry.Registry(spec)
        self.max_tokens_limit = spec.max_tokens_limit
        self.watching = spec.watch
        self.watch = (spec.watch_interval_s, settings.get("config_file"), settings.get("base"))

    async def reconfigure(self, config: dict[str, Any]) -> None:
        sources = [str(s) for s in config["checkpoints"]]
        if not self.registry.served:
            await asyncio.to_thread(self.registry.load_all, sources)
            if self.watching:
                self.registry.watch(*self.watch)
        else:
            await asyncio.to_thread(self.registry.apply, sources)

    def __del__(self) -> None:
        if hasattr(self, "registry"):
            self.registry.close()

    # ------------------------------------------------------------------ what is served

    def cards(self) -> list[dict[str, Any]]:
        return [self.registry.cards[n] for n in sorted(self.registry.cards)]

    def health(self) -> dict[str, Any]:
        servers = self.registry.servers
        return {
            "models": sorted(servers),
            "replica": serve.get_replica_context().replica_id.unique_id,
            # per LM: sequences decoding and waiting now, and counters since start
            "decoding": {n: m.health() for n, m in servers.items() if hasattr(m, "health")},
            # what each model is served from, and recent swaps and refused checkpoints
            **self.registry.health(),
        }

    def _route(self, model: str | None, families: tuple[str, ...]) -> tuple[dict, Any]:
        """The served model a request names (or the only one of the right family), and
        what the generation log records of it (one snapshot: a swap may follow)."""
        served = self.registry.served
        if model is None:
            fitting = [n for n in sorted(served) if served[n].family in families]
            if len(fitting) != 1:
                raise APIError(
                    422,
                    f"model is required: {len(fitting)} {'/'.join(families)} models are served",
                    "model",
                )
            model = fitting[0]
        if model not in served:
            raise APIError(
                404,
                f"model {model!r} is not served; GET /v1/models lists them",
                "model",
                "not_found",
            )
        s = served[model]
        if s.family not in families:
            raise APIError(
                400,
                f"model {model!r} is a {s.family} model; this route takes {'/'.join(families)}",
                "model",
            )
        return {"model": model, "step": s.card["step"], "spec_hash": s.spec_hash}, s.server

    # ------------------------------------------------------------------ LMs

    def _open(self, body: dict[str, Any], chat: bool, stream: bool) -> tuple[dict, Any, Generation]:
        info, lm = self._route(body.get("model"), LM)
        req = dict(body)
        prompt = body.get("prompt")
        if chat:
            if body.get("max_completion_tokens") is not None:
                req["max_tokens"] = body["max_completion_tokens"]
            try:
                prompt = lm.chat_prompt(body["messages"])
            except NoChatTemplate as exc:
                raise APIError(400, str(exc), "model") from None
            if req.pop("max_tokens_default", False):
                # OpenAI's chat default: as long as the context (and the server) allow
                used = len(lm.tokenizer(prompt, add_special_tokens=False)["input_ids"])
                req["max_tokens"] = max(1, min(self.max_tokens_limit, lm.context - used))
        req.pop("max_tokens_default", None)
        if req["max_tokens"] > self.max_tokens_limit:
            raise APIError(
                422,
                f"max_tokens must be <= {self.max_tokens_limit}, got {req['max_tokens']}",
                "max_tokens",
            )
        try:
            gen = lm.open(req, prompt, stream=stream)
        except PromptTooLong as exc:
            raise APIError(400, str(exc), "max_tokens") from None
        params = {k: v for k, v in req.items() if k not in ("prompt", "messages", "model")}
        return {**info, "prompt": prompt, "params": params}, lm, gen

    async def complete(self, body: dict[str, Any], chat: bool, key: str) -> dict[str, Any]:
        keys.current_key.set(key)
        try:
            info, lm, gen = self._open(body, chat, stream=False)
        except APIError as exc:
            return _refusal(exc)
        await lm.complete(gen)
        return {**info, **_result(gen)}

    async def stream(self, body: dict[str, Any], chat: bool, key: str) -> AsyncIterator[dict]:
        """First ``{"opened": ...}`` or ``{"error": ...}`` (so that a bad request fails
        before any output), then ``{"delta", "finish_reason"}`` events, then ``{"done"}``."""
        keys.current_key.set(key)
        try:
            info, lm, gen = self._open(body, chat, stream=True)
        except APIError as exc:
            yield _refusal(exc)
            return
        yield {"opened": info}
        async for ev in lm.stream(gen):
            yield {"delta": ev.delta, "finish_reason": ev.finish_reason}
        yield {"done": _result(gen)}

    # ------------------------------------------------------------------ images

    async def images(self, route: str, body: dict[str, Any], key: str) -> dict[str, Any]:
        """``route``: generations, reconstruct or interpolate -> base64 PNGs."""
        keys.current_key.set(key)
        try:
            return await self._images(route, body)
        except APIError as exc:
            return _refusal(exc)

    async def _images(self, route: str, body: dict[str, Any]) -> dict[str, Any]:
        families = ("gan", "vae") if route == "generations" else ("vae",)
        info, model = self._route(body.get("model"), families)
        card = self.registry.cards[info["model"]]
        if route == "generations":
            side = card["image_size"]
            if body.get("size") is not None and body["size"] != f"{side}x{side}":
                raise APIError(
                    422,
                    f"size must be {side}x{side} for model {info['model']!r}, got {body['size']!r}",
                    "size",
                )
            label = _class_from_prompt(body["prompt"], card) if card["conditional"] else None
            images = await model.generate({"n": body["n"], "seed": body["seed"], "label": label})
        elif route == "reconstruct":
            arrays = [_decode(b, card, f"images[{i}]") for i, b in enumerate(body["images"])]
            images = await model.reconstruct(arrays)
        else:
            a, b = (
                _decode(body["image_a"], card, "image_a"),
                _decode(body["image_b"], card, "image_b"),
            )
            images = await model.interpolate(a, b, body["steps"])
        return {**info, "images": images}


def _refusal(exc: APIError) -> dict[str, Any]:
    """A bad request, returned rather than raised: Serve logs every raised exception as a
    failed request, with a traceback, and a client's mistake is not the server's error."""
    return {
        "error": {
            "status": exc.status,
            "message": exc.message,
            "param": exc.param,
            "kind": exc.kind,
        }
    }


def _result(gen: Generation) -> dict[str, Any]:
    return {
        "text": gen.text,
        "finish_reason": gen.finish_reason,
        "prompt_tokens": len(gen.prompt_ids),
        "completion_tokens": len(gen.tokens),
    }


def _class_from_prompt(prompt: str, card: dict[str, Any]) -> int | None:
    """'7' or a class name -> label; empty -> None (random classes)."""
    names: list[str] = card["class_names"]
    text = prompt.strip()
    if not text:
        return None
    lowered = [n.lower() for n in names]
    if text.lower() in lowered:
        return lowered.index(text.lower())
    if text.isdigit() and int(text) < len(names):
        return int(text)
    shown = ", ".join(names[:20]) + (" ..." if len(names) > 20 else "")
    raise APIError(
        422,
        f"prompt must name a class of model {card['id']!r} ({shown}); got {text[:40]!r}",
        "prompt",
    )


def _decode(b64: str, card: dict[str, Any], field: str) -> np.ndarray:
    """A base64 PNG/JPEG of exactly the model's size -> (C, S, S) float32 in 0..255."""
    from PIL import Image, UnidentifiedImageError

    try:
        blob = base64.b64decode(b64, validate=True)
        with Image.open(io.BytesIO(blob)) as img:
            size = img.size
            img = img.convert("L" if card["channels"] == 1 else "RGB")
            arr = np.asarray(img, dtype=np.float32)
    except (binascii.Error, ValueError, UnidentifiedImageError, OSError):
        raise APIError(
            422, f"{field} is not a base64-encoded PNG or JPEG image", field.split("[")[0]
        ) from None
    side = card["image_size"]
    if size != (side, side):
        raise APIError(
            422,
            f"{field} is {size[0]}x{size[1]}; model {card['id']!r} takes {side}x{side}",
            field.split("[")[0],
        )
    return arr[None] if card["channels"] == 1 else arr.transpose(2, 0, 1)
