"""Typed job and serve specs: YAML in, validated, errors that name the key.

A job spec is one YAML file (``jobs/*.yaml``); ``--set dotted.key=value``
overrides any field. Unknown keys are errors, numbers are not parsed from
strings, and every error message names the dotted key, the rule and the value:
``train.lr must be > 0, got -1``.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, Union

import yaml
from pydantic import Field, ValidationError, create_model, field_validator, model_validator

from genai.families import FAMILIES
from genai.families.gan import GANModelSpec, GANSpec
from genai.families.images import ImageDataSpec
from genai.families.lm import DataSpec, ModelSpec, TokenizerSpec
from genai.families.vae import VAEModelSpec, VAESpec
from genai.specbase import PathField, Section, SpecError, relative_paths

# the family specs are declared with their families; re-exported here for callers
__all__ = [
    "DataSpec",
    "GANModelSpec",
    "GANSpec",
    "ImageDataSpec",
    "JobSpec",
    "ModelSpec",
    "Section",
    "ServeSpec",
    "SpecError",
    "TokenizerSpec",
    "VAEModelSpec",
    "VAESpec",
]


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


class _JobSpecBase(Section):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
    model: _ModelSpecs = Field(default_factory=ModelSpec)
    data: _DataSpecs = Field(default_factory=DataSpec)
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
        family = model.get("family", "lm") if isinstance(model, dict) else "lm"
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


# --------------------------------------------------------------------------- serve spec


class AutoscalingSpec(Section):
    """Ray Serve autoscaling_config of the gateway deployment (replicas hold every model)."""

    min_replicas: int = Field(1, ge=0)
    max_replicas: int = Field(2, ge=1)
    # a replica decodes up to serve.lm.max_batch_size requests at once: scale out on half of that
    target_ongoing_requests: float = Field(16.0, gt=0)
    upscale_delay_s: float = Field(3.0, ge=0)
    downscale_delay_s: float = Field(30.0, ge=0)
    # Serve pushes replica metrics every 10 s by default and wants a longer window
    look_back_period_s: float = Field(12.0, gt=0)

    @model_validator(mode="after")
    def _bounds(self) -> AutoscalingSpec:
        if self.min_replicas > self.max_replicas:
            raise ValueError(
                f"min_replicas ({self.min_replicas}) must be <= serve.autoscaling.max_replicas ({self.max_replicas})"
            )
        return self


class GenerationLogSpec(Section):
    """What each request leaves in the generation log (:mod:`genai.serve.genlog`)."""

    mode: Literal["full", "metadata", "off"] = Field(
        "full", description="full: prompts and outputs too; metadata: neither; off: no log"
    )
    dir: str = Field("runs/generations", description="where the Parquet files go")
    save_images: bool = Field(False, description="also keep each generated PNG (full mode)")
    flush_s: float = Field(1.0, gt=0, le=60, description="seconds between batched writes")
    rotate_s: float = Field(
        300.0, gt=0, description="close a file after this long (a kill loses at most this)"
    )
    rotate_mb: float = Field(64.0, gt=0, description="close a file once it is this large")

    @field_validator("mode", mode="before")
    @classmethod
    def _yaml_off(cls, value: Any) -> Any:
        # YAML 1.1 reads a bare `off` (in a file or `--set generation_log.mode=off`) as false
        return "off" if value is False else value


class GatewaySpec(Section):
    """The ingress deployment in front of the model replicas."""

    num_cpus: float = Field(0.1, gt=0, description="CPUs per gateway replica")
    max_ongoing_requests: int = Field(256, ge=1, description="requests one gateway replica holds")
    target_ongoing_requests: float = Field(
        128,
        gt=0,
        description="the gateway's autoscaling target: it only forwards, so one replica carries "
        "many model replicas' load (between autoscaling.min_replicas and max_replicas)",
    )
    retries: int = Field(
        5, ge=0, le=10, description="retries of a model call whose replica died before answering"
    )


class _ServeSpecBase(Section):
    host: str = Field("127.0.0.1", description="bind address of the HTTP proxy")
    port: int = Field(8000, ge=1, le=65535)
    checkpoints: list[str] = Field(default_factory=list, description="checkpoint dirs to serve")
    num_cpus: float = Field(
        0.5, gt=0, description="CPUs per replica (fractions fit beside training)"
    )
    num_gpus: float = Field(0.0, ge=0, description="GPUs per replica; models run in bf16 there")
    torch_threads: int = Field(
        0,
        ge=0,
        description="torch CPU threads per replica; 0: num_cpus rounded up (replicas that "
        "share a node's cores must not each take all of them)",
    )
    autoscaling: AutoscalingSpec = Field(default_factory=AutoscalingSpec)
    # Above lm.max_batch_size: Serve must let enough requests in for a full decode batch
    max_ongoing_requests: int = Field(64, ge=1)
    max_tokens_limit: int = Field(
        1024, ge=1, description="largest max_tokens a request may ask for"
    )
    max_body_bytes: int = Field(
        1_000_000, ge=1024, description="requests with larger bodies get 413"
    )
    api_keys_env: str = Field(
        "GENAI_API_KEYS",
        description="env var with comma-separated `name:key` pairs; no keys anywhere: open API",
    )
    api_keys_file: str | None = Field(
        None,
        description="YAML file of `name: key` (or `name: {key, requests_per_minute}`) entries",
    )
    requests_per_minute: float = Field(
        0.0, ge=0, description="per-key request rate limit (per replica); 0: none"
    )
    watch: bool = Field(
        False,
        description="replicas poll each checkpoint (a `latest` link, a checkpoints root) and "
        "the serve config's checkpoint list, and swap a new checkpoint in without a restart",
    )
    watch_interval_s: float = Field(2.0, gt=0, description="seconds between watch passes")
    generation_log: GenerationLogSpec = Field(default_factory=GenerationLogSpec)
    gateway: GatewaySpec = Field(default_factory=GatewaySpec)


# each family's serve section (`lm: {max_batch_size: ...}`), shared ones once
_SERVE_SECTIONS = dict(f.serve_section for f in FAMILIES.values() if f.serve_section is not None)
if TYPE_CHECKING:
    ServeSpec = _ServeSpecBase
else:
    ServeSpec = create_model(
        "ServeSpec",
        __base__=_ServeSpecBase,
        __doc__="A serve spec: one YAML file under serve/, validated.",
        **{k: (section, Field(default_factory=section)) for k, section in _SERVE_SECTIONS.items()},
    )


# --------------------------------------------------------------------------- loading


class _YamlLoader(yaml.SafeLoader):
    """SafeLoader that also reads ``3e-4`` as a float (YAML 1.1 wants ``3.0e-4``)."""


_YamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?[0-9][0-9_]*[eE][-+]?[0-9]+
        |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


def _yaml(text: str) -> Any:
    return yaml.load(text, Loader=_YamlLoader)


def _format_error(err: dict[str, Any], prefix: str = "") -> str:
    # discriminated unions put the tag in the path (model.gan.latent_dim): drop it
    parts = [str(p) for p in err["loc"]]
    if len(parts) >= 2 and parts[0] in ("model", "data") and parts[1] in (*FAMILIES, *_DATA_SPECS):
        del parts[1]
    loc = ".".join(parts)
    key = f"{prefix}{loc}" if loc else prefix.rstrip(".") or "spec"
    kind, ctx, value = err["type"], err.get("ctx") or {}, err.get("input")
    shown = repr(value) if isinstance(value, str) else json.dumps(value, default=str)
    if len(shown) > 60:
        shown = shown[:57] + "..."
    rules = {
        "greater_than": lambda: f"must be > {ctx.get('gt')}",
        "greater_than_equal": lambda: f"must be >= {ctx.get('ge')}",
        "less_than": lambda: f"must be < {ctx.get('lt')}",
        "less_than_equal": lambda: f"must be <= {ctx.get('le')}",
        "int_type": lambda: "must be an integer",
        "float_type": lambda: "must be a number",
        "bool_type": lambda: "must be true or false",
        "string_type": lambda: "must be a string",
        "list_type": lambda: "must be a list",
        "model_type": lambda: "must be a mapping",
        "literal_error": lambda: f"must be one of {ctx.get('expected')}",
        "string_pattern_mismatch": lambda: f"must match {ctx.get('pattern')}",
        "missing": lambda: "is required",
    }
    if kind == "union_tag_invalid":
        field = str(ctx.get("discriminator", "")).strip("'")
        return f"{key}.{field} must be one of {ctx.get('expected_tags')}, got {ctx.get('tag')!r}"
    if kind == "extra_forbidden":
        return f"unknown key {key}"
    if kind == "missing":
        return f"{key} is required"
    if kind == "value_error":
        # our own validators: the message starts with the field inside this section
        head = f"{prefix}{loc}." if loc else prefix
        return f"{head}{ctx.get('error', err['msg'])}"
    rule = rules.get(kind, lambda: err["msg"].lower())()
    return f"{key} {rule}, got {shown}"


def validation_message(exc: ValidationError, prefix: str = "") -> str:
    """One line for the first error (the others usually follow from it), naming the key."""
    errors = exc.errors(include_url=False)
    first = _format_error(errors[0], prefix)
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return first + more


def apply_overrides(raw: dict[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """Apply ``dotted.key=value`` overrides; values are parsed as YAML scalars/lists."""
    for item in overrides:
        if "=" not in item:
            raise SpecError(f"--set {item!r} must look like dotted.key=value")
        dotted, _, text = item.partition("=")
        keys = dotted.strip().split(".")
        if not all(keys):
            raise SpecError(f"--set {item!r} has an empty key")
        try:
            value = _yaml(text) if text.strip() else ""
        except yaml.YAMLError as exc:
            raise SpecError(f"--set {dotted}: cannot parse value {text!r}: {exc}") from None
        node = raw
        for i, key in enumerate(keys[:-1]):
            child = node.setdefault(key, {})
            if not isinstance(child, dict):
                raise SpecError(f"--set {dotted}: {'.'.join(keys[: i + 1])} is not a mapping")
            node = child
        node[keys[-1]] = value
    return raw


def _read_yaml(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise SpecError(f"spec file not found: {p}")
    try:
        raw = _yaml(p.read_text()) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise SpecError(f"{p}: invalid YAML{where}") from None
    if not isinstance(raw, dict):
        raise SpecError(f"{p}: the top level must be a mapping of sections")
    return raw


def load_job(path: str | Path, overrides: Iterable[str] = ()) -> JobSpec:
    """A job spec file with ``--set`` overrides, its paths made absolute (:func:`PathField`)."""
    raw = apply_overrides(_read_yaml(path), overrides)
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
        raise SpecError(validation_message(exc)) from None


def load_serve(path: str | Path | None, overrides: Iterable[str] = ()) -> ServeSpec:
    raw = _read_yaml(path) if path else {}
    raw = apply_overrides(raw, overrides)
    try:
        return ServeSpec.model_validate(raw)
    except ValidationError as exc:
        raise SpecError(validation_message(exc, prefix="serve.")) from None
