"""Moving digits: deterministic from a seed, cached, bouncing on a piecewise-linear path,
and held-out clips made only of held-out digit images."""

from __future__ import annotations

import numpy as np
import pytest

from genai.families.video.clips import ClipParams, bounce, build, cached, digit_images, split_images


@pytest.fixture(scope="module")
def source():
    images, labels = digit_images(16)
    train, val = split_images(labels, 0.2, seed=0)
    return images, labels, train, val


def test_clips_are_deterministic_from_their_seed(source):
    images, labels, train, _ = source
    p = ClipParams(n=20, frames=12)
    a, b = build(p, images, labels, train), build(p, images, labels, train)
    for name in ("frames", "digits", "images", "positions", "velocities"):
        assert np.array_equal(getattr(a, name), getattr(b, name)), name
    c = build(ClipParams(n=20, frames=12, seed=1), images, labels, train)
    assert not np.array_equal(a.frames, c.frames)
    assert a.frames.shape == (20, 12, 32, 32) and a.frames.dtype == np.uint8
    counts = (a.digits >= 0).sum(1)
    assert set(counts.tolist()) == {1, 2}  # one or two digits
    assert np.array_equal(a.digits[a.images >= 0], labels[a.images[a.images >= 0]])


def test_held_out_clips_use_only_held_out_digit_images(source):
    images, labels, train, val = source
    assert not set(train) & set(val) and len(train) + len(val) == len(labels)
    assert set(labels[val]) == set(range(10)) == set(labels[train])
    tr = build(ClipParams(n=200), images, labels, train)
    va = build(ClipParams(n=50, seed=1), images, labels, val)
    assert set(tr.images[tr.images >= 0]) <= set(train)
    assert set(va.images[va.images >= 0]) <= set(val)


def test_digits_bounce_off_the_edges_on_a_piecewise_linear_path():
    path = bounce(np.array([1.0, 10.0]), np.array([-2.0, 3.0]), 20, room=16)
    assert path.min() >= 0 and path.max() <= 16
    step = np.diff(path, axis=0)
    # each coordinate moves by |v| per frame except across a reflection
    assert np.isclose(np.abs(step[:, 0]), 2).mean() > 0.8
    assert (np.sign(step[:-1, 0]) != np.sign(step[1:, 0])).any()  # it turned back
    assert np.allclose(path[0], [1, 10]) and np.allclose(path[1], [1, 13])


def test_frames_show_each_digit_where_its_path_says(source):
    images, labels, train, _ = source
    clips = build(ClipParams(n=10, max_digits=1), images, labels, train)
    for i in range(10):
        img = images[clips.images[i, 0]]
        for f in range(clips.frames.shape[1]):
            r, c = np.round(clips.positions[i, f, 0]).astype(int)
            assert np.array_equal(clips.frames[i, f, r : r + 16, c : c + 16], img)
            assert clips.frames[i, f].sum() == img.sum()  # nothing else on the canvas


def test_clips_are_cached_by_their_parameters(tmp_path, source):
    images, labels, train, _ = source
    p = ClipParams(n=8)
    a, path = cached(tmp_path, p, images, labels, train)
    b, again = cached(tmp_path, p, images, labels, train)
    assert path == again and np.array_equal(a.frames, b.frames)
    _, other = cached(tmp_path, ClipParams(n=8, frames=20), images, labels, train)
    assert other != path and len(list(tmp_path.glob("*.npz"))) == 2
    with pytest.raises(ValueError, match="digit_size"):
        build(ClipParams(n=1, canvas=16, digit_size=16), images, labels, train)


def test_the_video_vae_gives_per_clip_bounds_and_decodes_a_condition():
    import torch

    from genai.families.video.config import VideoVAEConfig
    from genai.families.video.vae3d import VideoVAE

    torch.manual_seed(0)
    vae = VideoVAE(VideoVAEConfig(width=4, latent_dim=8))
    x = torch.rand(3, 1, 16, 32, 32)
    labels = torch.tensor([[3, 7], [1, -1], [2, 2]])
    assert vae.condition(labels)[2, 2] == 2 and vae.condition(labels)[1].sum() == 1
    out = vae(x, labels)
    assert {k: tuple(v.shape) for k, v in out.items()} == {k: (3,) for k in out}
    assert torch.allclose(out["neg_elbo"], out["recon"] + out["kl"]) and (out["kl"] >= 0).all()
    out["neg_elbo"].mean().backward()
    assert all(p.grad is not None for p in vae.parameters())
    bound = vae.iw_bound(x, labels, k=4)
    assert bound.shape == (3,) and torch.isfinite(bound).all()
    clips = vae.clips(torch.randn(2, 8), labels[:2])
    assert clips.shape == (2, 16, 32, 32) and clips.min() >= 0 and clips.max() <= 1


def test_motion_residual_is_small_for_bouncing_digits_and_large_for_jumbled_frames(source):
    from genai.families.video.motion import centroids, identity_consistency, motion_residual

    images, labels, train, _ = source
    clips = build(ClipParams(n=40, max_digits=1, frames=16), images, labels, train)
    # the centre of mass sits at the digit's (drawn, whole-pixel) corner plus its own centre
    c = centroids(clips.frames)
    shift = c - np.round(clips.positions[:, :, 0])
    assert np.allclose(shift, shift[:, :1], atol=1e-6)
    real = motion_residual(clips.frames)
    jumbled = motion_residual(clips.frames[:, np.random.default_rng(0).permutation(16)])
    assert np.median(real) < 0.5 and np.median(jumbled) > 4 * np.median(real)
    per_frame = np.array([[3, 3, 3], [3, 5, 3], [1, 1, 1], [0, 0, 2]])
    assert identity_consistency(per_frame) == 0.5
