"""The serve spec: one YAML file under ``serve/`` (or ``genai serve`` flags), validated.

Each family's section (``lm: {max_batch_size: ...}``) comes from the registry.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, ValidationError, create_model, field_validator, model_validator

from genai.families import FAMILIES
from genai.specbase import Section, SpecError
from genai.specio import apply_overrides, read_yaml, validation_message


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


class LogEncryptionSpec(Section):
    """The generation log's master key (32 bytes, base64): from a file, else from an env
    var. Neither is ever logged or sent to Serve."""

    key_file: str | None = Field(None, description="file holding the base64 key")
    key_env: str = Field("GENAI_LOG_KEY", description="env var holding the base64 key")
    kms_client: str | None = Field(
        None,
        description="module:Class of a pyarrow.parquet.encryption.KmsClient for a real KMS "
        "(default: the local key wraps Parquet's data keys)",
    )


class GenerationLogSpec(Section):
    """What each request leaves in the generation log (:mod:`genai.serve.genlog`)."""

    mode: Literal["full", "metadata", "off"] = Field(
        "full", description="full: prompts and outputs too; metadata: neither; off: no log"
    )
    dir: str = Field("runs/generations", description="where the log files go")
    save_images: bool = Field(False, description="also keep each generated PNG (full mode)")
    flush_s: float = Field(
        1.0, gt=0, le=60, description="seconds between writes to disk (a kill loses at most this)"
    )
    rotate_s: float = Field(
        300.0, gt=0, description="rewrite the open stream as Parquet after this long"
    )
    rotate_mb: float = Field(64.0, gt=0, description="close a file once it is this large")
    encryption: LogEncryptionSpec | None = Field(
        None, description="encrypt the log at rest (Parquet modular encryption)"
    )
    anonymize: bool = Field(
        False,
        description="store e-mail addresses, phone numbers, IP addresses, card numbers and "
        "IBANs in prompts and outputs as salted hashes (the client's text is unchanged)",
    )
    salt_env: str = Field(
        "GENAI_LOG_SALT",
        description="env var holding the anonymization salt (else one is made and kept in dir)",
    )

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
    adapters: dict[str, str] = Field(
        default_factory=dict,
        description="LoRA adapter checkpoints to serve over their base (one of checkpoints), "
        "by model id: {name: dir}",
    )
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


def load_serve(path: str | Path | None, overrides: Iterable[str] = ()) -> ServeSpec:
    raw = read_yaml(path) if path else {}
    raw = apply_overrides(raw, overrides)
    try:
        return ServeSpec.model_validate(raw)
    except ValidationError as exc:
        raise SpecError(validation_message(exc, prefix="serve.")) from None
