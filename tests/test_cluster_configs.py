"""Every file in cluster/ is checked against the schema of what reads it: Ray's cluster
launcher schema (it ships in the wheel) and KubeRay's CRDs (cluster/kuberay/crds/), with
unknown keys rejected as `kubectl apply --validate=strict` does. What the files name
(job specs, the Serve application, the image) must exist here too."""

from __future__ import annotations

import copy
import functools
import json
import shlex
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import ray
import yaml

ROOT = Path(__file__).resolve().parent.parent
CLUSTER = ROOT / "cluster"
CRDS = CLUSTER / "kuberay" / "crds"
LAUNCHER = sorted(CLUSTER.glob("*.yaml"))
KUBERAY = sorted((CLUSTER / "kuberay").glob("*.yaml"))


def _strict(schema: Any) -> Any:
    """The CRD schema with ``additionalProperties: false`` wherever properties are listed
    and unknown fields are not preserved: a typo is an error, not a pruned field."""
    if isinstance(schema, dict):
        out = {k: _strict(v) for k, v in schema.items()}
        if (
            "properties" in out
            and "additionalProperties" not in out
            and not out.get("x-kubernetes-preserve-unknown-fields")
        ):
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [_strict(v) for v in schema]
    return schema


@functools.cache
def _crds() -> tuple[dict, ...]:
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # the CRDs are 3.3 MB of YAML
    return tuple(yaml.load(p.read_text(), Loader=loader) for p in sorted(CRDS.glob("*.yaml")))


def _crd_schema(kind: str, version: str) -> dict:
    for crd in _crds():
        if crd["spec"]["names"]["kind"] == kind:
            (v,) = [v for v in crd["spec"]["versions"] if v["name"] == version]
            return _strict(copy.deepcopy(v["schema"]["openAPIV3Schema"]))
    raise AssertionError(f"no CRD for kind {kind}")


def test_cluster_dir_has_the_promised_files():
    names = {p.relative_to(CLUSTER).as_posix() for p in CLUSTER.rglob("*.yaml")}
    for needed in (
        "aws-gpu.yaml",
        "gcp-gpu.yaml",
        "kuberay/raycluster.yaml",
        "kuberay/rayjob-lm.yaml",
        "kuberay/rayservice.yaml",
    ):
        assert needed in names, needed


@pytest.mark.parametrize("path", LAUNCHER, ids=lambda p: p.name)
def test_launcher_config_matches_rays_schema(path):
    schema = json.loads((Path(ray.__file__).parent / "autoscaler" / "ray-schema.json").read_text())
    config = yaml.safe_load(path.read_text())
    jsonschema.validate(config, schema)
    # multi-GPU workers, and a head that does not take training work
    workers = [
        t for n, t in config["available_node_types"].items() if n != config["head_node_type"]
    ]
    assert workers and all(t["max_workers"] >= 1 for t in workers)
    cfg = workers[0]["node_config"]
    gpus = cfg.get("guestAccelerators", [{}])[0].get("acceleratorCount") or (
        4 if cfg.get("InstanceType", "").startswith(("g5.12x", "p4d", "p5")) else 0
    )
    assert gpus >= 2, f"{path.name}: worker nodes should have several GPUs"
    assert "RAY_AUTH_MODE=token" in " ".join(config["docker"]["run_options"])
    assert config["docker"]["image"].endswith("genai:latest-gpu")


def test_launcher_schema_rejects_a_typo():
    schema = json.loads((Path(ray.__file__).parent / "autoscaler" / "ray-schema.json").read_text())
    config = yaml.safe_load((CLUSTER / "aws-gpu.yaml").read_text())
    config["max_worker"] = config.pop("max_workers")
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(config, schema)


@pytest.mark.parametrize("path", KUBERAY, ids=lambda p: p.name)
def test_kuberay_manifest_matches_its_crd(path):
    manifest = yaml.safe_load(path.read_text())
    group, version = manifest["apiVersion"].split("/")
    assert group == "ray.io"
    jsonschema.validate(manifest, _crd_schema(manifest["kind"], version))
    text = path.read_text()
    assert "image: genai:latest-gpu" in text


def test_kuberay_strict_schema_rejects_an_unknown_field():
    manifest = yaml.safe_load((CLUSTER / "kuberay" / "rayjob-lm.yaml").read_text())
    manifest["spec"]["shutdownAfterJobFinish"] = True  # the real field ends in "es"
    with pytest.raises(jsonschema.ValidationError, match="shutdownAfterJobFinish"):
        jsonschema.validate(manifest, _crd_schema("RayJob", "v1"))


def test_what_the_manifests_name_exists():
    """The RayJob trains a job spec in this repo; the RayService's Serve config is valid
    and imports genai's application builder with args it accepts."""
    from ray.serve.schema import ServeDeploySchema

    from genai.config import load_job
    from genai.serve.app import AppArgs

    job = yaml.safe_load((CLUSTER / "kuberay" / "rayjob-lm.yaml").read_text())
    argv = shlex.split(job["spec"]["entrypoint"])
    assert argv[:2] == ["genai", "train"]
    load_job(ROOT / argv[2], [argv[argv.index("--set") + 1]])

    service = yaml.safe_load((CLUSTER / "kuberay" / "rayservice.yaml").read_text())
    serve_config = ServeDeploySchema.model_validate(
        yaml.safe_load(service["spec"]["serveConfigV2"])
    )
    (app,) = serve_config.applications
    assert app.import_path == "genai.serve.app:app_builder"
    AppArgs.model_validate(app.args)
    assert (ROOT / app.args["config"]).is_file()
    assert [d.name for d in app.deployments] == ["models"]


def test_dockerfile_builds_the_named_images():
    text = (ROOT / "infra" / "Dockerfile").read_text()
    assert "ARG BASE=rayproject/ray:2.60.0-py311" in text
    assert "genai:latest-gpu" in text and "py311-gpu" in text
    assert f"ray:{ray.__version__}" in text  # the image's Ray is the one tested here
