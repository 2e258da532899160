"""The job spec: one YAML file (``jobs/*.yaml``), ``--set dotted.key=value`` overrides, validated
(:mod:`genai.specio` reads the YAML and words the errors).

The common sections are here; the ``model:`` and ``data:`` unions and each family's own
section come from the registry (:mod:`genai.families`).
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, Union

from pydantic import Field, ValidationError, create_model, model_validator

from genai.families import DEFAULT_FAMILY, FAMILIES
from genai.specbase import PathField, Section, SpecError, relative_paths
from genai.specio import apply_overrides, read_yaml, validation_message


class TrainSpec(Section):
    """Optimisation schedule: AdamW, linear warmup then cosine decay to min_lr_ratio*lr."""

    max_steps: int = Field(200, ge=1)
    micro_batch_size: int = Field(8, ge=1, description="sequences per worker per micro-step")
    grad_accum_steps: int = Field(1, ge=1)
    lr: float = Field(1e-3, gt=0.0, le=1.0)
    min_lr_ratio: float = Field(0.1, ge=0.0, le=1.0)
    warmup_steps: int = Field(20, ge=0)
    weight_decay: float = Field(0.1, ge=0.0)
    beta1: float = Field(0.9, ge=0.0, lt=1.0)
    beta2: float = Field(0.95, ge=0.0, lt=1.0)
    grad_clip: float = Field(1.0, ge=0.0, description="max grad norm; 0 disables")
    log_every: int = Field(10, ge=1)
    eval_every: int = Field(50, ge=1)
    eval_batches: int | None = Field(
        None,
        ge=1,
        description="micro-batches per worker per evaluation; default: the whole held-out split",
    )
    seed: int = Field(0, ge=0)
    max_failures: int = Field(
        3,
        ge=0,
        description="times Ray Train restarts a failed worker group; each restart continues "
        "from the run's latest committed checkpoint",
    )

    @model_validator(mode="after")
    def _warmup_fits(self) -> TrainSpec:
        if self.warmup_steps >= self.max_steps:
            raise ValueError(
                f"warmup_steps ({self.warmup_steps}) must be < train.max_steps ({self.max_steps})"
            )
        return self


class DeepSpeedSpec(Section):
    """How the model is sharded; the DeepSpeed JSON is generated from this."""

    zero_stage: Literal[0, 1, 2, 3] = 2
    precision: Literal["auto", "bf16", "fp32"] = Field(
        "auto",
        description="auto: bf16 on GPUs and on CPUs with native bf16 (AVX512-BF16/AMX), else fp32; "
        "fp16 is not available on the CPU",
    )
    offload_optimizer: bool = Field(False, description="keep optimizer state on the CPU (ZeRO 1-3)")
    compile: bool = Field(False, description="torch.compile the engine (GPU)")

    @model_validator(mode="after")
    def _offload_needs_zero(self) -> DeepSpeedSpec:
        if self.offload_optimizer and self.zero_stage == 0:
            raise ValueError("offload_optimizer needs deepspeed.zero_stage >= 1, got 0")
        return self


class ScalingSpec(Section):
    num_workers: int = Field(2, ge=1)
    min_workers: int | None = Field(
        None,
        ge=1,
        description="elastic: after losing workers (a node), continue on as few as this many "
        "instead of waiting for them to come back; ZeRO state is re-sharded and the global "
        "batch kept. None: always num_workers (wait)",
    )
    use_gpu: bool = False
    cpus_per_worker: float = Field(1.0, gt=0.0)
    resources_per_worker: dict[str, float] = Field(
        default_factory=dict,
        description="custom Ray resources each worker needs, to place workers on certain "
        "nodes (e.g. {trainer: 1} where only those nodes offer it)",
    )

    @model_validator(mode="after")
    def _min_fits(self) -> ScalingSpec:
        if self.min_workers is not None and self.min_workers > self.num_workers:
            raise ValueError(
                f"scaling.min_workers ({self.min_workers}) must be <= scaling.num_workers "
                f"({self.num_workers})"
            )
        return self


class CheckpointSpec(Section):
    dir: str | None = PathField(
        None, description="default runs/<name>/checkpoints; shared storage on clusters"
    )
    every_steps: int = Field(100, ge=0, description="0: only at the end")
    keep: int = Field(3, ge=1, description="newest checkpoints kept")


# One model section and one data section per family (discriminated by `family` / `kind`),
# and each family's own top-level section: all from the registry in genai/families.
_DATA_SPECS = {f.data_spec.model_fields["kind"].default: f.data_spec for f in FAMILIES.values()}
if TYPE_CHECKING:
    # unions of whatever families are installed: a family's code narrows them to its own
    _ModelSpecs = Any
    _DataSpecs = Any
else:
    _ModelSpecs = Annotated[
        Union[tuple(f.model_spec for f in FAMILIES.values())],  # noqa: UP007
        Field(discriminator="family"),
    ]
    _DataSpecs = Annotated[Union[tuple(_DATA_SPECS.values())], Field(discriminator="kind")]  # noqa: UP007
_SECTIONS = {name: f.section for name, f in FAMILIES.items() if f.section is not None}
# what validation errors leave out of a key: the union tags the user never writes
UNION_TAGS = {"model": list(FAMILIES), "data": list(_DATA_SPECS)}


class _JobSpecBase(Section):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
    model: _ModelSpecs = Field(default_factory=lambda: FAMILIES[DEFAULT_FAMILY].model_spec())
    data: _DataSpecs = Field(default_factory=lambda: FAMILIES[DEFAULT_FAMILY].data_spec())
    train: TrainSpec = Field(default_factory=TrainSpec)
    deepspeed: DeepSpeedSpec = Field(default_factory=DeepSpeedSpec)
    scaling: ScalingSpec = Field(default_factory=ScalingSpec)
    checkpoint: CheckpointSpec = Field(default_factory=CheckpointSpec)

    if TYPE_CHECKING:

        def __getattr__(self, name: str) -> Any:
            """A family's own section (``spec.gan``), added to ``JobSpec`` at run time."""

    @model_validator(mode="before")
    @classmethod
    def _defaults_by_family(cls, raw: Any) -> Any:
        # `family` picks the model type; data kind and the family's section follow from it
        if not isinstance(raw, dict):
            return raw
        model = raw.get("model")
        family = model.get("family", DEFAULT_FAMILY) if isinstance(model, dict) else DEFAULT_FAMILY
        if isinstance(model, dict):
            raw["model"] = {**model, "family": family}
        data = raw.get("data", {})
        if isinstance(data, dict) and "kind" not in data and family in FAMILIES:
            kind = FAMILIES[family].data_spec.model_fields["kind"].default
            raw["data"] = {**data, "kind": kind}
        if family in _SECTIONS and raw.get(family) is None:
            raw[family] = {}
        return raw

    @model_validator(mode="after")
    def _cross_checks(self) -> _JobSpecBase:
        family = FAMILIES[self.model.family]
        if not isinstance(self.data, family.data_spec):
            raise ValueError(
                f"data.kind {self.data.kind!r} does not fit model.family {family.name!r}"
            )
        for section in _SECTIONS:
            if getattr(self, section) is not None and family.name != section:
                raise ValueError(
                    f"{section} settings are only for model.family {section!r}, got {family.name!r}"
                )
        if family.check is not None:
            family.check(self)
        # every worker count the run may use must split the global batch evenly
        g, low = self.global_batch, self.scaling.min_workers or self.scaling.num_workers
        uneven = [w for w in range(low, self.scaling.num_workers + 1) if g % w]
        if uneven:
            raise ValueError(
                f"scaling.min_workers: the global batch ({g} = train.micro_batch_size x "
                f"train.grad_accum_steps x scaling.num_workers) does not split evenly over "
                f"{uneven[0]} workers"
            )
        return self

    @property
    def global_batch(self) -> int:
        """Items per optimizer step, fixed for the run whatever the worker count."""
        return self.train.micro_batch_size * self.train.grad_accum_steps * self.scaling.num_workers

    @property
    def checkpoint_dir(self) -> Path:
        return Path(self.checkpoint.dir or f"runs/{self.name}/checkpoints").absolute()

    def spec_hash(self) -> str:
        blob = json.dumps(self.model_dump(mode="json"), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


if TYPE_CHECKING:
    # built at run time from the registry; a type checker knows the common sections, and a
    # family's own section (`gan:`) is reached through getattr
    JobSpec = _JobSpecBase
else:
    # `gan: ...`, `vae: ...`: a family's own section, present only for that family
    JobSpec = create_model(
        "JobSpec",
        __base__=_JobSpecBase,
        __doc__="A job spec: one YAML file under jobs/, validated.",
        **{name: (section | None, None) for name, section in _SECTIONS.items()},
    )


def load_job(path: str | Path, overrides: Iterable[str] = ()) -> JobSpec:
    """A job spec file with ``--set`` overrides, its paths made absolute (:func:`PathField`)."""
    raw = apply_overrides(read_yaml(path), overrides)
    raw.setdefault("name", Path(path).stem)
    return parse_job(absolute_paths(raw))


def absolute_paths(raw: dict[str, Any]) -> dict[str, Any]:
    """``raw`` (a job spec dict, validated here) with every relative user path made absolute
    against the current directory: done once, in the driver, before anything goes to Ray."""
    paths = relative_paths(parse_job(copy.deepcopy(raw)))
    return apply_overrides(raw, [f"{k}={json.dumps(v)}" for k, v in paths.items()])


def parse_job(raw: dict[str, Any]) -> JobSpec:
    try:
        return JobSpec.model_validate(raw)
    except ValidationError as exc:
        raise SpecError(validation_message(exc, tags=UNION_TAGS)) from None
