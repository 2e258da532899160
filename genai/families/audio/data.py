"""Driver side of the audio family: the spoken-digit clips (split by whole voices), the
digit classifier on their log-mel spectrograms, and the references its metrics sit beside."""

from __future__ import annotations

from typing import Any

import numpy as np
import ray
import torch

from genai.families.audio import digits
from genai.families.audio.features import log_mel
from genai.families.audio.judge import Judge
from genai.quality import cached_classifier, frechet_distance

LEVELS = 1 << 16  # 16-bit samples: levels 0..65535 (int16 + 32768), as pixels are 0..255


def mel_images(clips: np.ndarray, sample_rate: int, batch: int = 512) -> torch.Tensor:
    x = torch.from_numpy(digits.to_float(clips))
    return torch.cat([log_mel(x[i : i + batch], sample_rate) for i in range(0, len(x), batch)])


def with_noise(
    clips: np.ndarray, seed: int, low_db: float = -50, high_db: float = -25
) -> np.ndarray:
    """Each clip under white noise of a random level between ``low_db`` and ``high_db``."""
    rng = np.random.default_rng(seed)
    std = 32767 * 10 ** (rng.uniform(low_db, high_db, (len(clips), 1)) / 20)
    noisy = clips + rng.normal(0.0, 1.0, clips.shape) * std
    return np.clip(np.round(noisy), -32768, 32767).astype(np.int16)


def load_corpus(spec: Any, log=print) -> tuple[digits.DigitsCorpus, np.ndarray, np.ndarray]:
    d, m = spec.data, spec.model
    corpus, _ = digits.build(
        d.cache_dir,
        d.voices,
        d.speeds,
        d.pitches,
        m.sample_rate,
        m.clip_samples,
        d.noise_floor_db,
        log=log,
    )
    held = d.held_out_voices or digits.held_out_voices(d.voices, d.held_out_fraction, d.seed)
    train, val = corpus.split(held)
    log(f"data: held-out voices {', '.join(held)}")
    return corpus, train, val


def prepare(spec: Any, log=print) -> dict[str, Any]:
    corpus, train, val = load_corpus(spec, log)
    rate = spec.model.sample_rate
    log(
        f"data: {train.sum()} train + {val.sum()} held-out clips of {spec.model.clip_samples} "
        f"samples at {rate} Hz, {val.sum() // 10} held-out per digit"
    )
    x_train, x_val = mel_images(corpus.clips[train], rate), mel_images(corpus.clips[val], rate)
    y_train = torch.from_numpy(corpus.labels[train])
    y_val = torch.from_numpy(corpus.labels[val])
    # the classifier also learns each training clip under louder noise: it must name the
    # digit a generator says, not the generator's noise floor
    noisy = mel_images(with_noise(corpus.clips[train], spec.data.seed), rate)
    clf, path = cached_classifier(
        spec.data.cache_dir, torch.cat([x_train, noisy]), torch.cat([y_train, y_train]), 10
    )
    acc = float((clf.predict(x_val) == y_val).float().mean())
    n = min(len(x_train), 1000)
    with torch.no_grad():
        floor = frechet_distance(clf.features(x_train[:n]).numpy(), clf.features(x_val).numpy())
    log(
        f"quality classifier: held-out-voice accuracy {acc:.3f}; real-vs-real feature FD "
        f"{floor:.2f} ({path})"
    )
    out = {
        "train_ref": ray.put(corpus.clips[train]),
        "n_train_items": int(train.sum()),
        "val_ref": ray.put(corpus.clips[val]),
        "train_labels": ray.put(corpus.labels[train]),
        "val_labels": ray.put(corpus.labels[val]),
        "levels": LEVELS,
        "num_classes": 10,
        "class_names": list(digits.WORDS),
        "classifier": {k: v.numpy() for k, v in clf.state_dict().items()},
        "classifier_accuracy": acc,
        "real_fd_floor": floor,
    }
    if spec.data.judge:
        judge = Judge()
        real_asr = judge.accuracy(corpus.clips[val], corpus.labels[val], rate)
        log(f"pocketsphinx judge: word accuracy {real_asr:.3f} on the held-out real clips")
        out["asr_real_accuracy"] = real_asr
    return out
