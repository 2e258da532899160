"""The driver side of ``genai train``: prepare data, launch a TorchTrainer, find the checkpoint."""

from __future__ import annotations

import shutil
import time
import uuid
from pathlib import Path

import ray
from ray.train import FailureConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer

from genai import cluster
from genai.config import JobSpec, SpecError
from genai.data.tokens import prepare
from genai.train import checkpoint as ckpt
from genai.train.loop import train_loop_per_worker


def train(
    spec: JobSpec,
    *,
    address: str | None = None,
    resume: bool = False,
    fresh: bool = False,
    log=print,
) -> Path:
    """Run the job to ``train.max_steps``; returns the final checkpoint directory."""
    t_submit = time.time()
    root = spec.checkpoint_dir
    latest = ckpt.find_latest(root)
    resume_from = None
    if resume:
        if latest is None:
            log(f"resume: no checkpoint under {root}; starting at step 0")
        else:
            step = ckpt.read_meta(latest)["step"]
            if step >= spec.train.max_steps:
                log(
                    f"resume: {latest} is at step {step} >= train.max_steps ({spec.train.max_steps}); nothing to do"
                )
                return latest
            resume_from = latest
    elif latest is not None:
        if not fresh:
            raise SpecError(
                f"checkpoint.dir {root} already holds checkpoints: pass --resume to continue "
                "or --fresh to delete them and start over"
            )
        shutil.rmtree(root)
    ckpt.clean_staging(root)
    root.mkdir(parents=True, exist_ok=True)

    data = prepare(spec.data, log=log)
    if spec.model.pretrained_path is None and data.vocab_size > 1 << 20:
        raise SpecError(f"data.tokenizer vocab ({data.vocab_size}) is too large")
    with cluster.connect(address):
        config = {
            "spec": spec.model_dump(mode="json"),
            "data": {
                # in the object store, so workers on other nodes read them too
                "train_ref": ray.put(data.load("train")),
                "val_ref": ray.put(data.load("val")),
                "tokenizer_files": {p.name: p.read_bytes() for p in data.tokenizer_dir.iterdir()},
                "vocab_size": data.vocab_size,
                "eos_id": data.eos_id,
            },
            "checkpoint_root": str(root),
            "resume_from": str(resume_from) if resume_from else None,
            "run_id": uuid.uuid4().hex[:8],
            "t_submit": t_submit,
        }
        resources = {"CPU": spec.scaling.cpus_per_worker}
        if spec.scaling.use_gpu:
            resources["GPU"] = 1
        trainer = TorchTrainer(
            train_loop_per_worker,
            train_loop_config=config,
            scaling_config=ScalingConfig(
                num_workers=spec.scaling.num_workers,
                use_gpu=spec.scaling.use_gpu,
                resources_per_worker=resources,
            ),
            run_config=RunConfig(
                name=f"{spec.name}-{config['run_id']}",
                storage_path=str(root.parent / "ray"),
                failure_config=FailureConfig(max_failures=0),
            ),
        )
        log(
            f"train: {spec.name} on {spec.scaling.num_workers} worker(s), "
            f"{'GPU' if spec.scaling.use_gpu else 'CPU'}, to step {spec.train.max_steps}"
        )
        trainer.fit()
    final = ckpt.find_latest(root)
    if final is None:
        raise ckpt.CheckpointError(
            f"training finished but no checkpoint was committed under {root}"
        )
    return final
