"""Synthetic frame-labelled speech for trying the acoustic models without a corpus, made offline.

Four "phone" classes, each a sound with its own place in the spectrum: a tone near 300 Hz, a tone
near 1200 Hz, noise in 1.8-2.4 kHz and noise in 3.0-3.6 kHz. An utterance is a few segments of
random classes and loudness at 8 kHz (telephone speech, as Switchboard) with a little white noise;
every frame is labelled with the segment its centre falls in. :func:`prepare` writes train and
dev utterances once as the TFRecords ``train_speech.py`` reads (``write_utterances``' format).
"""
from __future__ import annotations

import os
import shutil
import tempfile

import numpy as np

FOLDER = "demo_sounds"
SAMPLE_RATE = 8000
CLASSES = ("tone 300 Hz", "tone 1200 Hz", "noise 1.8-2.4 kHz", "noise 3.0-3.6 kHz")
_TONES_HZ = (300.0, 1200.0)
_NOISE_BANDS_HZ = ((1800.0, 2400.0), (3000.0, 3600.0))
TRAIN_UTTERANCES = 20
DEV_UTTERANCES = 6
# train_speech.py's settings without --train_records (flags given explicitly win): a couple of
# epochs over the demo's ~2,400 frames, at a rate that suits batches of 64.
TRAIN_DEFAULTS = dict(num_classes=len(CLASSES), batch_size=64, epochs=2, lr=0.1, anneal_from_epoch=2,
                      shuffle_buffer=5000)


def default_root() -> str:
    """``$BL_NET_TF_CACHE/demo_sounds``, else ``~/.cache/bl_net_tf/demo_sounds``: beside the demo digits."""
    from bl_net_tf.data.demo import cache_root

    return os.path.join(cache_root(), FOLDER)


def _band_noise(rng: np.random.Generator, n: int, lo: float, hi: float) -> np.ndarray:
    spectrum = np.fft.rfft(rng.normal(size=n))
    freqs = np.fft.rfftfreq(n, 1 / SAMPLE_RATE)
    spectrum[(freqs < lo) | (freqs > hi)] = 0
    x = np.fft.irfft(spectrum, n)
    return x / x.std()


def sound(rng: np.random.Generator, label: int, num_samples: int) -> np.ndarray:
    """``num_samples`` of class ``label`` (an index into :data:`CLASSES`), unit-ish amplitude."""
    if label < len(_TONES_HZ):
        hz = _TONES_HZ[label] * rng.uniform(0.9, 1.1)
        t = np.arange(num_samples) / SAMPLE_RATE
        return 1.4 * np.sin(2 * np.pi * hz * t + rng.uniform(0, 2 * np.pi))
    return _band_noise(rng, num_samples, *_NOISE_BANDS_HZ[label - len(_TONES_HZ)])


def utterance(rng: np.random.Generator, segments: int = 2, seconds: float = 0.6) -> tuple:
    """(log-mel features [frames, 64, 3], frame labels [frames]) of one random utterance."""
    from bl_net_tf.speech.features import frame_centers, logmel_features

    labels = rng.integers(0, len(CLASSES), segments)
    n = int(seconds * SAMPLE_RATE)
    wave = np.concatenate([sound(rng, y, n) * rng.uniform(0.3, 1.0) for y in labels])
    wave += 0.05 * rng.normal(size=wave.size)
    frame_labels = [labels[min(int(c / seconds), segments - 1)] for c in frame_centers(wave.size, SAMPLE_RATE)]
    return np.asarray(logmel_features(wave.astype("float32"), SAMPLE_RATE)), np.asarray(frame_labels)


def prepare(root: str | None = None, seed: int = 0) -> tuple:
    """Writes ``train.tfrecord`` and ``dev.tfrecord`` under ``root`` (default :func:`default_root`)
    unless they exist; returns their paths. Written to a temporary folder first and renamed, so an
    interrupted run never leaves a half-written data set behind."""
    from bl_net_tf.speech.records import write_utterances

    root = root or default_root()
    paths = os.path.join(root, "train.tfrecord"), os.path.join(root, "dev.tfrecord")
    if all(os.path.exists(p) for p in paths):
        return paths
    parent = os.path.dirname(os.path.abspath(root))
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=f".{FOLDER}-", dir=parent)
    try:
        rng = np.random.default_rng(seed)
        for path, count in zip(paths, (TRAIN_UTTERANCES, DEV_UTTERANCES)):
            write_utterances(os.path.join(staging, os.path.basename(path)), [utterance(rng) for _ in range(count)])
        if os.path.isdir(root):  # a partial folder from an older run
            shutil.rmtree(root)
        os.replace(staging, root)
    finally:
        shutil.rmtree(staging, ignore_errors=True)  # gone after the rename unless something failed
    return paths
