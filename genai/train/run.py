"""The driver side of ``genai train``: prepare data, launch a TorchTrainer, find the checkpoint."""

from __future__ import annotations

import shutil
import time
import uuid
from pathlib import Path

import ray
import torch
from ray.train import FailureConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer

from genai import cluster
from genai.config import JobSpec, SpecError
from genai.data.images import diagonal_gaussian_nll, load_images, to_model_range
from genai.data.tokens import prepare
from genai.quality import cached_classifier, frechet_distance
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

    with cluster.connect(address):
        config = {
            "spec": spec.model_dump(mode="json"),
            "data": _prepare_data(spec, log),
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
        try:
            trainer.fit()
        except (KeyboardInterrupt, SystemExit):
            # Ray Train's own SIGINT handler aborts the run gracefully and then exits;
            # say where the user can pick up again instead of exiting silently.
            latest = ckpt.find_latest(root)
            where = f"latest checkpoint {latest}" if latest else "no checkpoint was committed"
            raise KeyboardInterrupt(
                f"training interrupted; {where}; continue with --resume"
            ) from None
    final = ckpt.find_latest(root)
    if final is None:
        raise ckpt.CheckpointError(
            f"training finished but no checkpoint was committed under {root}"
        )
    return final


def _prepare_data(spec: JobSpec, log) -> dict:
    """Data for the workers, through the object store (workers on other nodes read it too)."""
    if spec.model.family == "lm":
        data = prepare(spec.data, log=log)
        return {
            "train_ref": ray.put(data.load("train")),
            "val_ref": ray.put(data.load("val")),
            "tokenizer_files": {p.name: p.read_bytes() for p in data.tokenizer_dir.iterdir()},
            "vocab_size": data.vocab_size,
            "eos_id": data.eos_id,
        }
    images = load_images(spec.data, spec.model.image_size, spec.model.channels)
    log(
        f"data: {len(images.train)} train + {len(images.val)} held-out images "
        f"{spec.model.channels}x{spec.model.image_size}x{spec.model.image_size}, {images.num_classes} classes"
    )
    out = {
        "train_ref": ray.put(images.train),
        "val_ref": ray.put(images.val),
        "train_labels": None if images.train_labels is None else ray.put(images.train_labels),
        "val_labels": None if images.val_labels is None else ray.put(images.val_labels),
        "levels": images.levels,
        "num_classes": images.num_classes,
        "class_names": images.class_names,
        "classifier": None,
    }
    if images.train_labels is not None:
        x = to_model_range(torch.from_numpy(images.train), images.levels, "unit")
        clf, path = cached_classifier(
            spec.data.cache_dir, x, torch.from_numpy(images.train_labels), images.num_classes
        )
        xv = to_model_range(torch.from_numpy(images.val), images.levels, "unit")
        acc = float((clf.predict(xv) == torch.from_numpy(images.val_labels)).float().mean())
        floor = _real_floor(clf, x, xv)
        log(
            f"quality classifier: held-out accuracy {acc:.3f}; real-vs-real feature FD {floor:.2f} ({path})"
        )
        out.update(
            classifier={k: v.numpy() for k, v in clf.state_dict().items()},
            classifier_accuracy=acc,
            classifier_path=str(path),
            real_fd_floor=floor,
        )
    if spec.model.family == "vae":
        out["baseline_nll"] = diagonal_gaussian_nll(images.train, images.val, images.levels)
        log(
            f"baseline: diagonal Gaussian fit to training pixels, held-out NLL {out['baseline_nll']:.2f} nats/image"
        )
    return out


def _real_floor(clf, train_x: torch.Tensor, val_x: torch.Tensor) -> float:
    """FD between real training and held-out images: the best a generator can hope for."""
    n = min(len(train_x), 1000)
    with torch.no_grad():
        return frechet_distance(clf.features(train_x[:n]).numpy(), clf.features(val_x).numpy())
