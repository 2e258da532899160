"""GAN/VAE models, image data, quality metrics, and the two-engine GAN step on real DeepSpeed."""

from __future__ import annotations

import io
import os
import socket

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
import torch.distributed as dist
from PIL import Image

from genai.config import SpecError, parse_job
from genai.data.images import diagonal_gaussian_nll, load_images, to_model_range
from genai.families.images import ImageDataSpec
from genai.models.gan import Discriminator, GANConfig, Generator
from genai.models.vae import VAE, VAEConfig
from genai.quality import cached_classifier, frechet_distance, sample_quality


@pytest.mark.parametrize(("size", "channels"), [(8, 1), (16, 3), (32, 1), (64, 3)])
def test_model_shapes(size, channels):
    g = Generator(
        GANConfig(image_size=size, channels=channels, conditional=True, g_width=8, d_width=8)
    )
    d = Discriminator(
        GANConfig(image_size=size, channels=channels, conditional=True, g_width=8, d_width=8)
    )
    y = torch.tensor([1, 2, 3])
    x = g(torch.randn(3, 64), y)
    assert x.shape == (3, channels, size, size) and x.min() >= -1 and x.max() <= 1
    assert d(x, y).shape == (3,)
    vae = VAE(VAEConfig(image_size=size, channels=channels, width=8))
    out = vae(torch.rand(3, channels, size, size))
    assert out["neg_elbo"].shape == (3,)
    assert vae.interpolate(
        torch.rand(channels, size, size), torch.rand(channels, size, size), 5
    ).shape == (5, channels, size, size)


def test_iw_bound_is_tighter_than_the_elbo():
    torch.manual_seed(0)
    vae = VAE(VAEConfig(width=8)).eval()
    x = torch.rand(32, 1, 8, 8)
    elbo = torch.stack([vae(x)["neg_elbo"] for _ in range(64)]).mean(0)  # the ELBO's expectation
    iw = vae.iw_bound(x, k=64)
    assert (iw <= elbo + 1e-3).float().mean() > 0.9


def test_frechet_distance_on_known_inputs():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(4000, 4))
    assert frechet_distance(a, a) == pytest.approx(0, abs=1e-6)
    b = rng.normal(size=(4000, 4)) + np.array([3.0, 0, 0, 0])  # same covariance, mean moved by 3
    assert frechet_distance(a, b) == pytest.approx(9.0, rel=0.05)
    c = rng.normal(size=(4000, 4)) * 2.0  # cov 4I vs I: Tr(I + 4I - 2*2I) = 4 (times 1 per dim)
    assert frechet_distance(a, c) == pytest.approx(4.0, rel=0.1)


def test_diagonal_gaussian_nll_matches_a_direct_computation():
    q = np.random.default_rng(0).integers(0, 17, size=(500, 1, 2, 2), dtype=np.uint8)
    nll = diagonal_gaussian_nll(q[:400], q[400:], levels=17, seed=3)
    g = torch.Generator().manual_seed(3)
    xt = to_model_range(torch.from_numpy(q[:400]), 17, "dequant", g).flatten(1).double()
    xv = to_model_range(torch.from_numpy(q[400:]), 17, "dequant", g).flatten(1).double()
    dist_ = torch.distributions.Normal(xt.mean(0), xt.std(0))
    assert nll == pytest.approx(float(-dist_.log_prob(xv).sum(1).mean()), rel=1e-6)


@pytest.fixture(scope="module")
def digits():
    return load_images(ImageDataSpec(), 8, 1)


def test_digits_classifier_and_sample_quality(digits, tmp_path):
    x = to_model_range(torch.from_numpy(digits.train), digits.levels, "unit")
    xv = to_model_range(torch.from_numpy(digits.val), digits.levels, "unit")
    clf, path = cached_classifier(tmp_path, x, torch.from_numpy(digits.train_labels), 10)
    assert path.is_file()
    acc = float((clf.predict(xv) == torch.from_numpy(digits.val_labels)).float().mean())
    assert acc > 0.9
    real = sample_quality(clf, xv, xv, 10)
    assert real["fd"] == pytest.approx(0, abs=1e-3) and real["classes_covered"] == 10
    noise = sample_quality(clf, torch.rand_like(xv), xv, 10)
    assert (
        noise["fd"] > 10 * sample_quality(clf, x[:300], xv, 10)["fd"]
    )  # noise is far, real train is near
    ones = sample_quality(clf, xv[torch.from_numpy(digits.val_labels) == 1], xv, 10)
    assert ones["classes_covered"] <= 3  # one class of images covers (almost) one class
    # the second call reuses the cached weights
    again, path2 = cached_classifier(tmp_path, x, torch.from_numpy(digits.train_labels), 10)
    assert path2 == path and torch.equal(again.head.weight, clf.head.weight)


def _png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def test_image_folder_and_parquet_sources(tmp_path):
    rng = np.random.default_rng(0)
    for cls in ("cats", "dogs"):
        (tmp_path / "imgs" / cls).mkdir(parents=True)
        for i in range(6):
            (tmp_path / "imgs" / cls / f"{i}.png").write_bytes(
                _png(rng.integers(0, 255, (20, 30, 3), dtype=np.uint8))
            )
    data = load_images(ImageDataSpec(source=str(tmp_path / "imgs"), val_fraction=0.25), 16, 3)
    assert data.train.shape[1:] == (3, 16, 16) and len(data.train) + len(data.val) == 12
    assert (
        data.class_names == ["cats", "dogs"]
        and set(data.train_labels) <= {0, 1}
        and data.levels == 256
    )
    blobs = [_png(rng.integers(0, 255, (8, 8), dtype=np.uint8)) for _ in range(10)]
    pq.write_table(pa.table({"png": blobs, "y": list(range(10))}), tmp_path / "d.parquet")
    data = load_images(
        ImageDataSpec(source=str(tmp_path / "d.parquet"), image_column="png", label_column="y"),
        8,
        1,
    )
    assert data.train.shape[1:] == (1, 8, 8) and data.num_classes == 10
    with pytest.raises(SpecError, match="no column data.image_column='image'"):
        load_images(ImageDataSpec(source=str(tmp_path / "d.parquet")), 8, 1)
    (tmp_path / "imgs" / "cats" / "broken.png").write_bytes(b"not a png")
    with pytest.raises(SpecError, match="cannot decode .*broken.png"):
        load_images(ImageDataSpec(source=str(tmp_path / "imgs")), 16, 3)


def test_gan_and_vae_specs_validate_with_errors_naming_keys():
    with pytest.raises(
        SpecError, match=r"^model.image_size must be one of 8, 16, 32 or 64, got 12"
    ):
        parse_job({"name": "g", "model": {"family": "gan", "image_size": 12}})
    with pytest.raises(SpecError, match=r"^gan.d_steps must be >= 1, got 0"):
        parse_job({"name": "g", "model": {"family": "gan"}, "gan": {"d_steps": 0}})
    with pytest.raises(
        SpecError, match=r"^gan settings are only for model.family 'gan', got 'vae'"
    ):
        parse_job({"name": "v", "model": {"family": "vae"}, "gan": {}})
    from genai.families import FAMILIES

    known = ", ".join(repr(name) for name in FAMILIES)  # the built-in three, then plugins
    assert known.startswith("'lm', 'gan', 'vae'")
    with pytest.raises(SpecError, match=rf"^model.family must be one of {known}, got 'gpt'"):
        parse_job({"name": "x", "model": {"family": "gpt"}})
    spec = parse_job({"name": "v", "model": {"family": "vae"}})
    assert spec.data.kind == "images" and spec.vae is not None and spec.gan is None


@pytest.fixture(scope="module")
def process_group():
    """A real one-process gloo group, as DeepSpeed needs; no Ray required for the step itself."""
    if not dist.is_initialized():
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        os.environ.update(
            MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK="0", WORLD_SIZE="1", LOCAL_RANK="0"
        )
        dist.init_process_group("gloo", rank=0, world_size=1)
    yield


def _params(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in module.named_parameters()}


@pytest.mark.parametrize("stage", [0, 1, 2])
def test_two_engine_step_touches_only_its_own_model(process_group, digits, stage):
    from genai.families.gan.task import GANTask

    spec = parse_job(
        {
            "name": "g",
            "model": {
                "family": "gan",
                "conditional": True,
                "g_width": 8,
                "d_width": 8,
                "latent_dim": 8,
            },
            "train": {"max_steps": 10, "micro_batch_size": 16, "warmup_steps": 1},
            "deepspeed": {"zero_stage": stage, "precision": "fp32"},
            "scaling": {"num_workers": 1},
        }
    )
    data = {
        "train_ref": digits.train,
        "val_ref": digits.val,
        "train_labels": digits.train_labels,
        "val_labels": digits.val_labels,
        "levels": digits.levels,
        "num_classes": 10,
        "class_names": digits.class_names,
    }
    task = GANTask(spec, data, rank=0, world_size=1)
    g0, d0 = _params(task.g.module), _params(task.d.module)
    task.d_step(0)
    assert all(torch.equal(p, g0[n]) for n, p in _params(task.g.module).items()), "D step changed G"
    assert any(not torch.equal(p, d0[n]) for n, p in _params(task.d.module).items()), (
        "D step did not train D"
    )
    g1, d1 = _params(task.g.module), _params(task.d.module)
    task.g_step()
    assert all(torch.equal(p, d1[n]) for n, p in _params(task.d.module).items()), "G step changed D"
    assert any(not torch.equal(p, g1[n]) for n, p in _params(task.g.module).items()), (
        "G step did not train G"
    )
    assert all(p.requires_grad for p in task.d.module.parameters())  # D unfrozen again
    metrics = task.train_step(1)
    assert set(metrics) == {"d_loss", "g_loss"} and all(np.isfinite(v) for v in metrics.values())
