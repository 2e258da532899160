"""Serving side of the LM family: load a checkpoint, decode requests in continuous batches.

Loads ``meta.json`` + ``model.safetensors`` + tokenizer files and nothing else:
never training code, never a pickle (a ``pytorch_model.bin`` dropped into a
checkpoint is ignored). The model is built from ``config.json``.

:class:`LMServer` lives inside the gateway's replica (no extra Serve hop): a
:class:`~genai.decoding.batch.BatchDecoder` thread runs the forward passes,
and requests wait on asyncio futures/queues fed from that thread.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedModel, PreTrainedTokenizerFast

from genai.checkpoint import WEIGHTS, Meta, is_adapter, open_for_inference, weights_sha256
from genai.decoding.batch import BatchDecoder
from genai.decoding.generation import Generation, Sampling
from genai.families.lm import adapters, metrics
from genai.models.transformer import context_length
from genai.serve.api import base_card, count, current_key


@dataclass
class LoadedLM:
    name: str
    path: Path
    meta: Meta
    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerFast

    @property
    def context(self) -> int:
        """Positions the model was trained on: ``max_position`` may be larger than the
        training ``seq_len``, and positions past it were never trained."""
        built = context_length(self.model.config)
        trained = (self.meta.spec.get("data") or {}).get("seq_len")
        return min(built, int(trained)) if trained else built


def load_lm(
    path: str | Path, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu"
) -> LoadedLM:
    directory, meta = open_for_inference(path, "lm")
    config = AutoConfig.from_pretrained(directory, local_files_only=True)
    model = AutoModelForCausalLM.from_config(config, attn_implementation="sdpa", dtype=dtype)
    state = load_file(directory / WEIGHTS)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected:
        raise ValueError(f"{directory / WEIGHTS}: unexpected tensors {unexpected[:5]}")
    model.tie_weights()
    # A key may be absent from the file only if it is tied to one that was loaded (lm_head ~ wte).
    loaded_ptrs = {p.data_ptr() for n, p in model.state_dict().items() if n in state}
    untied = [k for k in missing if model.state_dict()[k].data_ptr() not in loaded_ptrs]
    if untied:
        raise ValueError(f"{directory / WEIGHTS}: missing tensors {untied[:5]}")
    model.to(device).eval()
    tokenizer = PreTrainedTokenizerFast.from_pretrained(directory, local_files_only=True)
    return LoadedLM(name=meta.name, path=directory, meta=meta, model=model, tokenizer=tokenizer)


class PromptTooLong(ValueError):
    pass


class NoChatTemplate(ValueError):
    pass


class BadTokens(ValueError):
    pass


@dataclass
class Event:
    """What a request's listener hands to asyncio after a token: new text, and the end."""

    delta: str
    finish_reason: str | None
    error: BaseException | None


class LMServer:
    """One LM checkpoint in a gateway replica: prompt checks, batching, streams."""

    def __init__(self, directory: Path, meta: Meta, spec: Any) -> None:
        cuda = spec.num_gpus > 0 and torch.cuda.is_available()
        if not cuda:
            torch.set_num_threads(spec.torch_threads or max(1, math.ceil(spec.num_cpus)))
        self.lm = load_lm(
            directory,
            dtype=torch.bfloat16 if cuda else torch.float32,
            device="cuda" if cuda else "cpu",
        )
        self.tokenizer = self.lm.tokenizer
        self.eos_id = self.tokenizer.eos_token_id
        self.context = self.lm.context
        name = self.lm.name
        self.decoder = BatchDecoder(
            self.lm.model,
            eos_id=self.eos_id,
            max_batch_size=spec.lm.max_batch_size,
            max_batch_tokens=spec.lm.max_batch_tokens,
            lean=spec.lm.lean_forward,
            on_step=self._on_step,
            on_idle=self._on_idle,
        )
        self.decoder.start(name=f"decoder-{name}")
        # adapters attach to a base by the hash of its weights (genai/families/lm/adapters.py)
        self.sha256 = weights_sha256(directory)
        self.adapter_names: dict[str, str] = {}  # adapter key -> its model id
        adapters.BASES[self.sha256] = self

    def info(self) -> dict[str, Any]:
        return {
            **base_card(self.lm.path, self.lm.meta),
            "context_length": self.context,
            "chat": self.tokenizer.chat_template is not None,
            "base": self.lm.meta.export.get("base"),
            "weights_sha256": self.sha256,
        }

    def _on_step(self, n: int, _seconds: float) -> None:  # decoder thread
        tags = {"model": self.lm.name}
        metrics.decode_batch_size().observe(n, tags=tags)
        metrics.decode_active().set(n, tags=tags)
        metrics.decode_queued().set(self.decoder.stats()["queued"], tags=tags)

    def _on_idle(self) -> None:
        tags = {"model": self.lm.name}
        metrics.decode_active().set(0, tags=tags)
        metrics.decode_queued().set(0, tags=tags)

    def health(self) -> dict[str, int]:
        return self.decoder.stats()

    @property
    def busy(self) -> bool:
        """Sequences decoding or waiting (a swapped-out model is closed only when idle)."""
        return self.decoder.busy

    # ----------------------------------------------------------------- requests

    def chat_prompt(self, messages: list[dict[str, str]]) -> str:
        if self.tokenizer.chat_template is None:
            raise NoChatTemplate(
                f"model {self.lm.name!r} has no chat template (its tokenizer defines none); "
                "use /v1/completions with a plain prompt"
            )
        return str(
            self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        )

    def open(
        self,
        req: dict[str, Any],
        prompt: str | list[int],
        stream: bool,
        adapter: str | None = None,
    ) -> Generation:
        """A validated, not yet submitted generation; raises PromptTooLong. ``prompt``:
        text, or token ids (checked against the vocabulary)."""
        if isinstance(prompt, str):
            prompt_ids = self.tokenizer(prompt, add_special_tokens=False)["input_ids"]
        else:
            prompt_ids = list(prompt)
            vocab = self.lm.model.config.vocab_size
            if any(not 0 <= t < vocab for t in prompt_ids):
                raise BadTokens(f"prompt token ids must be in [0, {vocab})")
        prompt_ids = prompt_ids or [self.eos_id]
        if len(prompt_ids) + req["max_tokens"] > self.context:
            raise PromptTooLong(
                f"prompt ({len(prompt_ids)} tokens) + max_tokens ({req['max_tokens']}) exceeds "
                f"the model's context length ({self.context}, the length it was trained on)"
            )
        stop = req.get("stop")
        sampling = Sampling(
            max_tokens=req["max_tokens"],
            temperature=req["temperature"],
            top_p=req["top_p"],
            seed=req.get("seed"),
            stop=(stop,) if isinstance(stop, str) else tuple(stop or ()),
            logprobs=req.get("logprobs"),
            echo=bool(req.get("echo")),
        )
        return Generation(prompt_ids, sampling, decode=self._decode, stream=stream, adapter=adapter)

    def _decode(self, ids: list[int]) -> str:
        # no clean-up of spaces: the text of a prefix stays a prefix of the text (streams)
        return str(self.tokenizer.decode(ids, clean_up_tokenization_spaces=False))

    async def complete(self, gen: Generation) -> Generation:
        """Decode to the end; cancelling the awaiting task frees the sequence's slot."""
        loop = asyncio.get_running_loop()
        done = loop.create_future()

        def listener(g: Generation) -> None:  # decoder thread
            if g.finished:
                loop.call_soon_threadsafe(_resolve, done)

        gen.listener = listener
        self.decoder.submit(gen)
        try:
            await done
        finally:
            if not gen.finished:
                gen.cancel()
        if gen.error is not None:
            raise gen.error
        self._count(gen)
        return gen

    async def stream(self, gen: Generation) -> AsyncIterator[Event]:
        """Text deltas as the decoder makes them; closing the iterator frees the slot."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Event] = asyncio.Queue()

        def listener(g: Generation) -> None:  # decoder thread
            event = Event(g.delta, g.finish_reason, g.error)
            try:
                loop.call_soon_threadsafe(queue.put_nowait, event)
            except RuntimeError:  # the replica's loop is closing
                g.cancel()

        gen.listener = listener
        self.decoder.submit(gen)
        try:
            while True:
                event = await queue.get()
                if event.error is not None:
                    raise event.error
                if event.delta or event.finish_reason:
                    yield event
                if event.finish_reason:
                    self._count(gen)
                    return
        finally:
            if not gen.finished:
                gen.cancel()

    def _count(self, gen: Generation) -> None:
        model = self.adapter_names.get(gen.adapter or "", self.lm.name)
        tags = {"model": model, "key": current_key()}
        count(metrics.tokens_total(), len(gen.prompt_ids), {**tags, "kind": "prompt"})
        count(metrics.tokens_total(), len(gen.tokens), {**tags, "kind": "completion"})

    def close(self) -> None:
        if adapters.BASES.get(self.sha256) is self:
            del adapters.BASES[self.sha256]
        self.decoder.close()


def _resolve(fut: asyncio.Future) -> None:
    if not fut.done():  # the request may have been cancelled meanwhile
        fut.set_result(None)


def server(directory: Path, meta: Meta, spec: Any) -> LMServer | adapters.AdapterServer:
    """The family's server: a base model, or a LoRA adapter over a base already served."""
    if is_adapter(directory):
        return adapters.AdapterServer(directory, meta)
    return LMServer(directory, meta, spec)
