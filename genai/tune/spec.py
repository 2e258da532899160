"""The sweep spec (``jobs/tune-*.yaml``): a base job spec, overrides, a search space.

    name: tune-lm-lr                  # default: the file's stem
    base: lm-tiny.yaml                # relative to this file
    overrides: {train.max_steps: 200} # dotted keys applied to the base spec
    space:
      train.lr: loguniform(1e-4, 3e-2)
      model.n_layer: choice([2, 4])
    metric: val_bpb                   # default: the family's objective
    num_samples: 8
    scheduler: {kind: asha, grace_period: 50, reduction_factor: 3}

Validated up front like every spec: an unknown key, an empty or malformed space,
a metric the family does not report, or a bad bound is one line naming the key.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, model_validator

from genai.config import JobSpec, absolute_paths, parse_job
from genai.families import get_family
from genai.specbase import Section, SpecError
from genai.specio import apply_overrides, read_yaml, validation_message

_KINDS = ("loguniform", "uniform", "choice", "grid")
_DIMENSION = re.compile(r"^\s*(\w+)\s*\((.*)\)\s*$", re.S)


class Dimension(Section):
    """One searched key: ``loguniform(a, b)``, ``uniform(a, b)``, ``choice([...])``, ``grid([...])``."""

    kind: Literal["loguniform", "uniform", "choice", "grid"]
    low: float | None = None
    high: float | None = None
    values: list[Any] | None = None

    @property
    def is_grid(self) -> bool:
        return self.kind == "grid"

    def sample_values(self) -> list[Any]:
        """Values that must each make a valid job spec (bounds, or every choice)."""
        return [self.low, self.high] if self.values is None else list(self.values)

    def to_tune(self):
        from ray import tune

        if self.kind == "loguniform":
            return tune.loguniform(self.low, self.high)
        if self.kind == "uniform":
            return tune.uniform(self.low, self.high)
        if self.kind == "choice":
            return tune.choice(self.values)
        return tune.grid_search(self.values)

    def __str__(self) -> str:
        if self.values is None:
            return f"{self.kind}({self.low:g}, {self.high:g})"
        return f"{self.kind}({self.values})"


def parse_dimension(key: str, text: Any) -> Dimension:
    """``"loguniform(1e-4, 1e-2)"`` -> Dimension; errors name ``space.<key>``."""
    where = f"space.{key}"
    if not isinstance(text, str) or not (m := _DIMENSION.match(text)):
        raise SpecError(
            f"{where} must look like loguniform(a, b), uniform(a, b), choice([...]) or grid([...]), got {text!r}"
        )
    kind, args = m.group(1), m.group(2)
    if kind not in _KINDS:
        raise SpecError(f"{where}: unknown distribution {kind!r}; use one of {list(_KINDS)}")
    from genai.specio import yaml_value

    try:
        parsed = yaml_value(f"[{args}]")
    except Exception:
        raise SpecError(f"{where}: cannot parse the arguments of {kind}(...): {args!r}") from None
    if kind in ("choice", "grid"):
        if len(parsed) != 1 or not isinstance(parsed[0], list):
            raise SpecError(f"{where}: {kind} takes one list, e.g. {kind}([1, 2]), got {text!r}")
        if not parsed[0]:
            raise SpecError(f"{where}: {kind}([]) is empty")
        return Dimension(kind=kind, values=parsed[0])
    if len(parsed) != 2 or not all(
        isinstance(v, int | float) and not isinstance(v, bool) for v in parsed
    ):
        raise SpecError(f"{where}: {kind} takes two numbers, e.g. {kind}(1e-4, 1e-2), got {text!r}")
    low, high = float(parsed[0]), float(parsed[1])
    if not low < high:
        raise SpecError(f"{where}: the lower bound ({low:g}) must be < the upper ({high:g})")
    if kind == "loguniform" and low <= 0:
        raise SpecError(f"{where}: loguniform bounds must be > 0, got {low:g}")
    return Dimension(kind=kind, low=low, high=high)


class SchedulerSpec(Section):
    """Which trials stop early (ASHA), or which copy the better ones (PBT). Times are in steps."""

    kind: Literal["asha", "pbt", "none"] = "asha"
    grace_period: int = Field(
        50, ge=1, description="asha: steps every trial runs before it may be stopped"
    )
    reduction_factor: float = Field(
        3.0, gt=1.0, description="asha: keep the best 1/reduction_factor at each rung"
    )
    perturbation_interval: int = Field(
        50, ge=1, description="pbt: steps between exploit/explore decisions"
    )
    quantile_fraction: float = Field(
        0.25, gt=0.0, le=0.5, description="pbt: the bottom fraction copies the top fraction"
    )
    resample_probability: float = Field(
        0.25, ge=0.0, le=1.0, description="pbt: chance to resample from the space, else perturb"
    )
    synch: bool = Field(
        False,
        description=(
            "pbt: every trial waits at each perturbation point, so the weakest always copies "
            "the strongest; asynchronous (the default) decides as each trial arrives, and a "
            "trial arriving before the others have a score is neither copied nor copies"
        ),
    )


class SweepSpec(Section):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,47}$")
    base: str = Field(description="the job spec the trials start from (relative to this file)")
    overrides: dict[str, Any] = Field(
        default_factory=dict, description="dotted keys applied to the base spec for every trial"
    )
    space: dict[str, Dimension] = Field(description="dotted key -> distribution")
    metric: str | None = Field(None, description="default: the family's objective")
    mode: Literal["min", "max"] | None = Field(None, description="default: the family's")
    num_samples: int | None = Field(
        None,
        ge=1,
        le=10_000,
        description="samples of the space (each grid point this many times); default 4, or 1 with a grid",
    )
    scheduler: SchedulerSpec = Field(default_factory=SchedulerSpec)
    search: Literal["random"] = Field(
        "random", description="random search (grid dimensions are enumerated)"
    )
    seed: int | None = Field(None, ge=0, description="seed of the random search: same samples")
    max_concurrent_trials: int | None = Field(
        None, ge=1, description="default: as many as the cluster's resources fit"
    )
    storage: str | None = Field(
        None, description="default runs/<name>; made absolute when the sweep is loaded"
    )

    @model_validator(mode="after")
    def _space_fits_scheduler(self) -> SweepSpec:
        if not self.space:
            raise ValueError("space must name at least one key to search")
        if self.scheduler.kind == "pbt" and any(d.is_grid for d in self.space.values()):
            raise ValueError("scheduler.kind pbt cannot mutate grid([...]) dimensions of space")
        return self

    @property
    def root(self) -> Path:
        return Path(self.storage or f"runs/{self.name}").absolute()


class Sweep:
    """A validated sweep: its spec, the base job (overrides applied) and its family."""

    def __init__(self, spec: SweepSpec, base_raw: dict[str, Any], base_path: Path) -> None:
        self.spec, self.base_raw, self.base_path = spec, base_raw, base_path
        self.base: JobSpec = parse_job(copy.deepcopy(base_raw))
        self.family = get_family(self.base.model.family)
        self.metric = spec.metric or self.family.objective[0]
        self.mode = spec.mode or (
            self.family.objective[1] if self.metric == self.family.objective[0] else "min"
        )

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def num_samples(self) -> int:
        if self.spec.num_samples is not None:
            return self.spec.num_samples
        return 1 if any(d.is_grid for d in self.spec.space.values()) else 4

    @property
    def root(self) -> Path:
        return self.spec.root

    def base_hash(self) -> str:
        blob = json.dumps(self.base_raw, sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    def trial_raw(self, config: dict[str, Any], trial_id: str) -> dict[str, Any]:
        """The job spec of one trial: the base, the trial's values, its own checkpoint dir."""
        raw = copy.deepcopy(self.base_raw)
        apply_overrides(raw, [f"{k}={json.dumps(v)}" for k, v in config.items()])
        raw["name"] = f"{self.name}-{trial_id}"[:64]
        raw.setdefault("checkpoint", {})["dir"] = str(self.root / "trials" / trial_id)
        if self.spec.scheduler.kind == "pbt":
            # PBT exploits from committed checkpoints: commit one at every decision point
            raw["checkpoint"]["every_steps"] = self.spec.scheduler.perturbation_interval
            raw["checkpoint"]["keep"] = max(2, raw["checkpoint"].get("keep", 2))
        return raw


# mappings keyed by dotted job-spec keys: `--set overrides.train.max_steps=60` sets the key
# "train.max_steps" in them, as the file writes it, instead of nesting {"train": {...}}
_DOTTED_MAPS = ("overrides", "space")


def _apply_sweep_overrides(raw: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    plain = []
    for item in overrides:
        head, dot, rest = item.partition(".")
        if not dot or head not in _DOTTED_MAPS or "=" not in rest:
            plain.append(item)
            continue
        key, _, text = rest.partition("=")
        mapping = raw.setdefault(head, {})
        if not isinstance(mapping, dict):
            raise SpecError(f"--set {head}.{key}: {head} is not a mapping")
        mapping[key.strip()] = apply_overrides({}, [f"value={text}"])["value"]
    return apply_overrides(raw, plain)


def load_sweep(path: str | Path, overrides: Sequence[str] = ()) -> Sweep:
    path = Path(path)
    raw = _apply_sweep_overrides(read_yaml(path), overrides)
    raw.setdefault("name", path.stem)
    space = raw.get("space")
    if isinstance(space, dict):
        raw["space"] = {
            k: v if isinstance(v, Dimension) else parse_dimension(k, v) for k, v in space.items()
        }
    try:
        spec = SweepSpec.model_validate(raw)
    except ValidationError as exc:
        raise SpecError(validation_message(exc)) from None
    # every user path resolved here, in the driver: Tune runs trials in directories of their own
    spec = spec.model_copy(update={"storage": str(spec.root)})
    base_path = (path.parent / spec.base).resolve()
    base_raw = read_yaml(base_path)
    base_raw.setdefault("name", base_path.stem)
    try:
        apply_overrides(base_raw, [f"{k}={json.dumps(v)}" for k, v in spec.overrides.items()])
        base_raw = absolute_paths(base_raw)
    except SpecError as exc:
        raise SpecError(f"overrides: {exc}") from None
    sweep = Sweep(spec, base_raw, base_path)
    _check_space(sweep)
    if not sweep.family.knows_metric(sweep.metric):
        raise SpecError(
            f"metric {sweep.metric!r} is not reported by model.family {sweep.family.name!r}; "
            f"known: {', '.join(sweep.family.metrics)}"
        )
    return sweep


def _check_space(sweep: Sweep) -> None:
    """Every key must exist in the job spec, and every bound or choice must make a valid job."""
    for key, dim in sweep.spec.space.items():
        for value in dim.sample_values():
            raw = copy.deepcopy(sweep.base_raw)
            try:
                apply_overrides(raw, [f"{key}={json.dumps(value)}"])
                parse_job(raw)
            except SpecError as exc:
                raise SpecError(f"space.{key} = {value!r}: {exc}") from None
