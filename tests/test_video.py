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
