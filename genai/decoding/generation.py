"""One request's sequence: its sampling settings, generator, tokens and stop text."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

# Called in the decoder's thread after every token (or on finish/error) of a sequence.
Listener = Callable[["Generation"], None]


@dataclass(frozen=True)
class Sampling:
    max_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None
    stop: tuple[str, ...] = ()
    logprobs: int | None = None
    """log-probabilities of the chosen tokens and of this many likeliest ones (0: chosen only)"""
    echo: bool = False
    """also the prompt's tokens' log-probabilities (each given the tokens before it)"""


class StopText:
    """Incremental text of a token sequence: stop strings cut it, a stream never shows
    text it may have to take back (a stop string's first characters, a split UTF-8 char)."""

    def __init__(self, decode: Callable[[list[int]], str], stops: Sequence[str]) -> None:
        self.decode, self.stops = decode, tuple(s for s in stops if s)
        self.hold = max((len(s) for s in self.stops), default=1) - 1
        self.text, self.emitted = "", 0
        self.stopped = False

    def update(self, tokens: list[int], final: bool = False) -> str:
        """Feed all tokens so far; returns the newly safe text. Sets ``stopped`` on a stop string."""
        text = self.decode(tokens)
        # emitted text never holds a whole stop string, so one can only end past it
        hits = [
            at for s in self.stops if (at := text.find(s, max(0, self.emitted - len(s) + 1))) >= 0
        ]
        if hits:
            text, self.stopped = text[: min(hits)], True
        self.text = text
        if self.stopped or final:
            end = len(text)
        else:
            end = len(text) - self.hold
            while end > self.emitted and text[end - 1] == "\ufffd":  # an unfinished UTF-8 char
                end -= 1
        if end <= self.emitted:
            return ""
        delta, self.emitted = text[self.emitted : end], end
        return delta


class Generation:
    """One request's sequence: its prompt, settings, generator, tokens and text so far."""

    def __init__(
        self,
        prompt_ids: Sequence[int],
        sampling: Sampling,
        listener: Listener | None = None,
        decode: Callable[[list[int]], str] | None = None,
        stream: bool = False,
        adapter: str | None = None,
    ) -> None:
        if not prompt_ids:
            raise ValueError("prompt_ids is empty")
        self.prompt_ids = list(prompt_ids)
        self.sampling = sampling
        self.adapter = adapter  # the LoRA adapter its forward passes use; None: the base
        # with sampling.logprobs: per token (prompt tokens with echo, then generated ones),
        # its log-probability and the likeliest alternatives {token id: log-probability}
        self.prompt_logprobs: list[tuple[float | None, dict[int, float]]] = []
        self.logprobs: list[tuple[float, dict[int, float]]] = []
        self.listener = listener
        self.generator = torch.Generator()
        self.generator.manual_seed(
            sampling.seed if sampling.seed is not None else int(torch.randint(0, 2**62, ()))
        )
        self.tokens: list[int] = []
        self.finish_reason: str | None = None  # "stop" (EOS or a stop string) | "length"
        self.error: BaseException | None = None
        self.cancelled = False
        self.delta = ""  # text added by the last token (streams), "" without a decoder
        # text is tracked per token only where it is needed: stop strings, or a stream
        self._text = StopText(decode, sampling.stop) if decode else None
        self._track = decode is not None and (stream or bool(sampling.stop))
        self.submitted = time.perf_counter()

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None or self.error is not None

    @property
    def text(self) -> str:
        return self._text.text if self._text else ""

    @property
    def need(self) -> int:
        """Cache positions this sequence may take: its share of a token budget."""
        return len(self.prompt_ids) + self.sampling.max_tokens

    def cancel(self) -> None:
        """Thread-safe: the decoder drops the sequence at its next step."""
        self.cancelled = True

    def _push(
        self,
        token: int,
        eos_id: int | None,
        logprob: tuple[float, dict[int, float]] | None = None,
    ) -> None:
        if eos_id is not None and token == eos_id:
            self._finish("stop")
            return
        self.tokens.append(token)
        if logprob is not None:
            self.logprobs.append(logprob)
        if self._track:
            self.delta = self._text.update(self.tokens)
            if self._text.stopped:
                self._finish("stop", flush=False)
                return
        if len(self.tokens) >= self.sampling.max_tokens:
            self._finish("length")
            return
        self._notify()

    def _finish(self, reason: str, flush: bool = True) -> None:
        if self._text is not None and flush:
            self.delta = (self.delta if self._track else "") + self._text.update(
                self.tokens, final=True
            )
            if self._text.stopped:
                reason = "stop"
        self.finish_reason = reason
        self._notify()

    def _fail(self, exc: BaseException) -> None:
        self.error = exc
        self._notify()

    def _notify(self) -> None:
        if self.listener is not None:
            self.listener(self)
        self.delta = ""


def sample_rows(
    logits: torch.Tensor, temperature: torch.Tensor, top_p: torch.Tensor, u: torch.Tensor
) -> torch.Tensor:
    """One token per row of ``logits`` (B, V): greedy where temperature <= 0, else sampling
    by inverse CDF of the row's own uniform draw ``u`` (B,), from the nucleus where top_p < 1."""
    logits = logits.float()
    greedy = logits.argmax(-1)
    probs = torch.softmax(logits / temperature.clamp_min(1e-6)[:, None], dim=-1)
    sampled = _inverse_cdf(probs, u)
    nucleus = (top_p < 1.0).nonzero()[:, 0]
    if len(nucleus):  # sorting (B, V) costs more than the rest of sampling: only where needed
        sorted_p, order = probs[nucleus].sort(dim=-1, descending=True)
        # keep the smallest prefix whose mass reaches top_p (always at least one token)
        sorted_p = sorted_p * ((sorted_p.cumsum(-1) - sorted_p) < top_p[nucleus, None])
        sampled[nucleus] = order.gather(1, _inverse_cdf(sorted_p, u[nucleus])[:, None])[:, 0]
    return torch.where(temperature <= 0, greedy, sampled)


def token_logprobs(
    logits: torch.Tensor, chosen: torch.Tensor, top: int
) -> list[tuple[float, dict[int, float]]]:
    """Per row of ``logits`` (N, V): the log-probability of ``chosen`` (N,) and the ``top``
    likeliest tokens' (the model's distribution, before temperature and top_p)."""
    logp = torch.log_softmax(logits.float(), dim=-1)
    picked = logp.gather(1, chosen[:, None])[:, 0].tolist()
    if top <= 0:
        return [(lp, {}) for lp in picked]
    values, ids = logp.topk(min(top, logp.shape[-1]), dim=-1)
    return [
        (lp, dict(zip(i, v, strict=True)))
        for lp, i, v in zip(picked, ids.tolist(), values.tolist(), strict=True)
    ]


def _inverse_cdf(weights: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Column index per row where the running sum of (unnormalised) ``weights`` passes ``u``."""
    cdf = weights.cumsum(-1)
    idx = torch.searchsorted(cdf, (u * cdf[:, -1])[:, None])[:, 0]
    return idx.clamp_max(weights.shape[1] - 1)
