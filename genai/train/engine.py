"""The only module that talks to DeepSpeed.

Builds the DeepSpeed config from the typed spec (no hand-written JSON, no
hidden ``"auto"``), and wraps initialize / forward / backward / step / save /
load / weight export behind a small interface used by the training loop.
"""

from __future__ import annotations

import logging
import math
import os
import re
from pathlib import Path
from typing import Any

import torch

from genai.config import DeepSpeedSpec, TrainSpec
from genai.hardware import resolve_precision


def _fix_cuda_arch_list() -> None:
    # Hopper images often set TORCH_CUDA_ARCH_LIST="9.0a"; DeepSpeed's JIT op builder
    # parses it with int() and fails ("invalid literal for int() ... '0a'"). The
    # arch-specific 'a' suffix adds nothing for DeepSpeed's kernels, so drop it.
    arch = os.environ.get("TORCH_CUDA_ARCH_LIST")
    if arch and re.search(r"\d[a-z]\b", arch):
        os.environ["TORCH_CUDA_ARCH_LIST"] = re.sub(r"(\d)[a-z]\b", r"\1", arch)


_fix_cuda_arch_list()
# Cold start: compiled kernels are cached on disk and reused by the next run. DeepSpeed's op
# builds (~/.cache/torch_extensions) persist by default; torch.compile's FX-graph, autotuning
# and Triton kernel caches live in /tmp, gone with a reboot or a fresh container: keep them
# beside DeepSpeed's unless the user chose a place.
os.environ.setdefault(
    "TORCHINDUCTOR_CACHE_DIR", str(Path.home() / ".cache" / "genai" / "torchinductor")
)
import deepspeed  # noqa: E402  (after the arch fix: the op builder reads it at import)

logging.getLogger("DeepSpeed").setLevel(logging.WARNING)
deepspeed.utils.logger.setLevel(logging.WARNING)
if not torch.cuda.is_available():
    # On the CPU, DeepSpeed JIT-compiles a shared-memory all-reduce op (~90 s cold) that
    # only its tensor-parallel *inference* path uses; training all-reduces through gloo.
    deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False


def dist_rank() -> int:
    return torch.distributed.get_rank() if torch.distributed.is_initialized() else 0


def lr_lambda(train: TrainSpec):
    """Linear warmup to 1, then cosine decay to ``min_lr_ratio`` at ``max_steps``."""

    def factor(step: int) -> float:
        if step < train.warmup_steps:
            return (step + 1) / train.warmup_steps
        progress = min(
            1.0, (step - train.warmup_steps) / max(1, train.max_steps - train.warmup_steps)
        )
        return train.min_lr_ratio + (1 - train.min_lr_ratio) * 0.5 * (
            1 + math.cos(math.pi * progress)
        )

    return factor


def deepspeed_config(ds: DeepSpeedSpec, train: TrainSpec, world_size: int) -> dict[str, Any]:
    """The DeepSpeed JSON, every value explicit. Stored in checkpoints' meta.json."""
    zero: dict[str, Any] = {"stage": ds.zero_stage}
    if ds.zero_stage >= 1:
        zero.update(overlap_comm=False, contiguous_gradients=True, reduce_bucket_size=5e7)
    if ds.zero_stage == 3:
        zero.update(
            stage3_gather_16bit_weights_on_model_save=True, stage3_param_persistence_threshold=1e4
        )
    if ds.offload_optimizer:
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": torch.cuda.is_available()}
    return {
        "train_micro_batch_size_per_gpu": train.micro_batch_size,
        "gradient_accumulation_steps": train.grad_accum_steps,
        "train_batch_size": train.micro_batch_size * train.grad_accum_steps * world_size,
        "gradient_clipping": train.grad_clip,
        "bf16": {"enabled": resolve_precision(ds.precision) == "bf16"},
        "fp16": {"enabled": False},
        "zero_optimization": zero,
        # we pass a torch AdamW: it runs on CPU and GPU alike; DeepSpeed's CPU Adam needs a JIT build
        "zero_allow_untested_optimizer": True,
        "zero_force_ds_cpu_optimizer": False,
        "steps_per_print": 1 << 30,
        "wall_clock_breakdown": False,
    }


class Engine:
    """A DeepSpeed engine with the few verbs the loops need."""

    def __init__(
        self,
        model: torch.nn.Module,
        ds: DeepSpeedSpec,
        train: TrainSpec,
        world_size: int,
        *,
        lr: float | None = None,
        betas: tuple[float, float] | None = None,
        weight_decay: float | None = None,
    ):
        """AdamW from ``train`` (lr, betas, weight decay on matrices only), unless overridden
        (a GAN's two engines each have their own)."""
        self.config = deepspeed_config(ds, train, world_size)
        self.zero_stage = ds.zero_stage
        wd = train.weight_decay if weight_decay is None else weight_decay
        # frozen weights (a LoRA run's base) are neither optimized nor saved with the shards
        trainable = [p for p in model.parameters() if p.requires_grad]
        self.frozen = len(trainable) < len(list(model.parameters()))
        decay = [p for p in trainable if p.ndim >= 2]
        no_decay = [p for p in trainable if p.ndim < 2]
        groups = [{"params": decay, "weight_decay": wd}, {"params": no_decay, "weight_decay": 0.0}]
        optimizer = torch.optim.AdamW(
            # an empty group (LoRA trains matrices only) would desync the LR schedule's groups
            [g for g in groups if g["params"]],
            lr=train.lr if lr is None else lr,
            betas=betas or (train.beta1, train.beta2),
            fused=torch.cuda.is_available(),
        )
        self.base_lr = train.lr if lr is None else lr
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(train))
        self.ds_engine, self.optimizer, _, self.scheduler = deepspeed.initialize(
            model=model, optimizer=optimizer, lr_scheduler=scheduler, config=self.config
        )
        if ds.compile:
            self.ds_engine.compile()

    @property
    def device(self) -> torch.device:
        return self.ds_engine.device

    @property
    def module(self) -> Any:
        """The family's own model (its class has the methods the family calls on it)."""
        return self.ds_engine.module

    def __call__(self, *args, **kwargs):
        return self.ds_engine(*args, **kwargs)

    def backward(self, loss: torch.Tensor) -> None:
        self.ds_engine.backward(loss)

    def step(self) -> None:
        """Call after every micro-batch; DeepSpeed steps the optimizer at accumulation boundaries."""
        self.ds_engine.step()

    def train(self, mode: bool = True) -> None:
        self.ds_engine.train(mode)

    def forward_module(self) -> torch.nn.Module:
        """What to call for a forward *inside another engine's backward* (a GAN's G step).

        Under ZeRO 0-2 the plain module: the engine's hooks would run inside the other
        engine's backward and fail. Under ZeRO-3 the engine: it must gather its partitioned
        parameters (the one combination that runs under every ZeRO stage)."""
        return self.ds_engine if self.zero_stage == 3 else self.ds_engine.module

    @property
    def dtype(self) -> torch.dtype:
        """The parameters' dtype: inputs must be cast to it (DeepSpeed does not)."""
        return torch.bfloat16 if self.config.get("bf16", {}).get("enabled") else torch.float32

    @property
    def lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    def save(self, directory: Path, tag: str, client_state: dict[str, Any]) -> None:
        """Every rank writes its shards (a collective)."""
        self.ds_engine.save_checkpoint(
            str(directory),
            tag=tag,
            client_state=client_state,
            exclude_frozen_parameters=self.frozen,
        )

    def load(self, directory: Path, tag: str, *, universal: bool = False) -> dict[str, Any]:
        """Restore module, optimizer, LR schedule; returns the client state saved with them.
        ``universal``: ``directory`` holds DeepSpeed's universal format (reshard.py), which
        loads on any world size."""
        # DeepSpeed reads this flag from its config at load time only; saves are unaffected
        self.ds_engine._config.load_universal_checkpoint = universal
        try:
            _, client_state = self.ds_engine.load_checkpoint(
                str(directory),
                tag=tag,
                load_optimizer_states=True,
                load_lr_scheduler_states=True,
                # frozen weights were not saved: they come from the base, as at the start
                load_module_strict=not self.frozen,
            )
        finally:
            self.ds_engine._config.load_universal_checkpoint = False
        if client_state is None:
            raise FileNotFoundError(f"no DeepSpeed checkpoint {tag!r} under {directory}")
        self._apply_base_lr()
        return client_state

    def _apply_base_lr(self) -> None:
        """The spec's learning rate wins over the one saved with the scheduler state: a PBT
        exploit continues another trial's checkpoint with a perturbed rate. (Plain resume:
        the two are equal and this changes nothing.)"""
        sched = self.scheduler
        sched.base_lrs = [self.base_lr] * len(sched.base_lrs)
        for group, factor in zip(
            sched.optimizer.param_groups,
            (f(sched.last_epoch) for f in sched.lr_lambdas),
            strict=False,
        ):
            group["initial_lr"] = self.base_lr
            group["lr"] = self.base_lr * factor

    def export(self, path: Path) -> int:
        """Consolidated weights as safetensors at ``path``, written by rank 0 (a collective
        under ZeRO-3); returns the tensor count on rank 0, 0 elsewhere."""
        from safetensors.torch import save_file

        state = self.full_state_dict()
        if state is None or (dist_rank() != 0):
            return 0
        save_file({k: v.contiguous() for k, v in state.items()}, path)
        return len(state)

    def full_state_dict(self) -> dict[str, torch.Tensor] | None:
        """Consolidated weights on rank 0 (None elsewhere). A collective under ZeRO-3."""
        if self.zero_stage == 3:
            return self.ds_engine._zero3_consolidated_16bit_state_dict()
        if dist_rank() != 0:
            return None
        return {k: v.detach().cpu() for k, v in self.ds_engine.module.state_dict().items()}
