"""LoRA adapters served over a base model: many fine-tunes for the memory of one.

An adapter checkpoint (``adapter_model.safetensors``, from a ``model.lora`` run) names its
base by the sha256 of the base's weights. Served, it attaches to the replica's
:class:`~genai.families.lm.serving.LMServer` whose weights have that hash (a base that
differs is refused, with both named), and is a model of its own in ``/v1/models``.

The base's decoder then runs a ``peft`` model: each forward pass names every row's adapter
(``adapter_names``; ``__base__`` for the base), so one continuous batch mixes requests for
any adapters and the base. Adapters are loaded and deleted in the decoder's thread between
two steps; one is deleted only once no sequence uses it.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from genai.checkpoint import Meta
from genai.serve.api import base_card

if TYPE_CHECKING:
    from genai.decoding.generation import Generation
    from genai.families.lm.serving import Event, LMServer

# the LM servers of this replica, by the sha256 of their weights: what adapters attach to
BASES: dict[str, LMServer] = {}
_keys = itertools.count()


class AdapterBaseMismatch(ValueError):
    pass


def attach(server: LMServer, directory: Path) -> str:
    """Load the adapter at ``directory`` into ``server``'s decoder; returns its key (peft's
    adapter name: model ids may hold characters a module name may not)."""
    key = f"adapter{next(_keys)}"

    def load() -> bool:
        from peft import PeftModel

        decoder = server.decoder
        if decoder.peft is None:
            decoder.peft = PeftModel.from_pretrained(
                server.lm.model, str(directory), adapter_name=key
            ).eval()
            decoder.forward = decoder.peft  # genai's lean GPT-2 pass knows no adapters
        else:
            decoder.peft.load_adapter(str(directory), adapter_name=key)
            decoder.peft.eval()
        return True

    server.decoder.between_steps(load)
    return key


def detach(server: LMServer, key: str) -> None:
    """Delete the adapter once no sequence uses it."""

    def delete() -> bool:
        if server.decoder.uses(key):
            return False
        assert server.decoder.peft is not None
        server.decoder.peft.delete_adapter(key)
        return True

    server.decoder.between_steps(delete)


class AdapterServer:
    """One adapter as a served model: requests go to its base's decoder, their rows
    tagged with the adapter."""

    def __init__(self, directory: Path, meta: Meta) -> None:
        base = meta.export.get("base") or {}
        sha = str(base.get("sha256", ""))
        server = BASES.get(sha)
        if server is None:
            served = ", ".join(f"{s.lm.name} ({k[:12]})" for k, s in BASES.items()) or "none"
            raise AdapterBaseMismatch(
                f"adapter {meta.name!r} was trained over {base.get('name')!r} (weights sha256 "
                f"{sha[:12]}); no served base has those weights (served: {served})"
            )
        self.base, self.name, self.directory, self.meta = server, meta.name, directory, meta
        self.key = attach(server, directory)
        server.adapter_names[self.key] = self.name

    # what the LM routes use (genai/families/lm/replica.py), as LMServer has it
    @property
    def tokenizer(self) -> Any:
        return self.base.tokenizer

    @property
    def context(self) -> int:
        return self.base.context

    def info(self) -> dict[str, Any]:
        card = base_card(self.directory, self.meta)
        return {
            **card,
            "id": self.name,
            "context_length": self.base.context,
            "chat": self.base.tokenizer.chat_template is not None,
            "base": {"id": self.base.lm.name, **(self.meta.export.get("base") or {})},
            "adapter": self.meta.export.get("adapter"),
        }

    def chat_prompt(self, messages: list[dict[str, str]]) -> str:
        return self.base.chat_prompt(messages)

    def open(self, req: dict[str, Any], prompt: str | list[int], stream: bool) -> Generation:
        return self.base.open(req, prompt, stream, adapter=self.key)

    async def complete(self, gen: Generation) -> Generation:
        return await self.base.complete(gen)

    def stream(self, gen: Generation) -> AsyncIterator[Event]:
        return self.base.stream(gen)

    @property
    def busy(self) -> bool:
        return self.base.decoder.uses(self.key)

    def close(self) -> None:
        detach(self.base, self.key)
        self.base.adapter_names.pop(self.key, None)
