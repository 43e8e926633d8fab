"""The acoustic models' front end with tf.signal: 64 log-mel bands with their first and second
derivatives (Appendix B.1), and the 49-frame windows the models classify.

    feats = logmel_features(waveform, 8000)   # [frames, 64, 3]: log-mel, delta, delta-delta
    windows = context_windows(feats)          # [frames, 64, 49, 3]: one model input per frame

Frames are 25 ms long every 10 ms (the usual ASR setting; the paper does not give its own). The
log-mel bands are normalised per utterance (zero mean, unit variance per band over time), the
"calculated for each utterance on-the-fly" of Appendix B.1. Deltas are HTK's regression over
+-2 frames, with the edge frames repeated.
"""
from __future__ import annotations

import math

import tensorflow as tf

# 64 bands; windows of 49 frames (the models' input width: 24 frames either side of the labelled one).
from bl_net_tf.constants import SPEECH_CONTEXT_FRAMES as CONTEXT_FRAMES
from bl_net_tf.constants import SPEECH_MEL_BINS as NUM_MEL_BINS

FRAME_LENGTH_S = 0.025
FRAME_STEP_S = 0.010
LOWER_EDGE_HZ = 20.0
DELTA_WINDOW = 2
LOG_OFFSET = 1e-6


def frame_params(sample_rate: int) -> tuple:
    """(frame_length, frame_step, fft_length) in samples for ``sample_rate``."""
    length = int(round(FRAME_LENGTH_S * sample_rate))
    return length, int(round(FRAME_STEP_S * sample_rate)), 2 ** math.ceil(math.log2(length))


def num_frames(num_samples: int, sample_rate: int) -> int:
    """Frames :func:`logmel_features` returns for ``num_samples`` samples (no padding at the end)."""
    length, step, _ = frame_params(sample_rate)
    return max(0, 1 + (num_samples - length) // step)


def frame_centers(num_samples: int, sample_rate: int):
    """Centre of every frame in seconds, to align frame labels with a transcription's times."""
    length, step, _ = frame_params(sample_rate)
    return [(i * step + length / 2) / sample_rate for i in range(num_frames(num_samples, sample_rate))]


def deltas(x, window: int = DELTA_WINDOW):
    """HTK regression deltas along axis 0 of ``[frames, ...]``:
    sum_n n (x[t+n] - x[t-n]) / (2 sum_n n^2), edge frames repeated."""
    frames = tf.shape(x)[0]
    padded = tf.concat([tf.repeat(x[:1], window, axis=0), x, tf.repeat(x[-1:], window, axis=0)], axis=0)
    total = tf.add_n([n * (padded[window + n:window + n + frames] - padded[window - n:window - n + frames])
                      for n in range(1, window + 1)])
    return total / (2.0 * sum(n * n for n in range(1, window + 1)))


def logmel_features(waveform, sample_rate: int, *, num_mel_bins: int = NUM_MEL_BINS,
                    lower_edge_hz: float = LOWER_EDGE_HZ, upper_edge_hz: float | None = None, normalize: bool = True):
    """A mono waveform ``[samples]`` (float, any scale) to ``[frames, num_mel_bins, 3]`` float32:
    log-mel energies, their deltas and delta-deltas (the models' 3 input channels).

    Args:
      waveform: 1-D float tensor or array.
      sample_rate: samples per second (8000 for telephone speech such as Switchboard).
      num_mel_bins: 64 in the paper.
      lower_edge_hz, upper_edge_hz: the mel filterbank's range (default 20 Hz to Nyquist).
      normalize: zero mean, unit variance per band over the utterance.
    """
    length, step, fft_length = frame_params(sample_rate)
    waveform = tf.convert_to_tensor(waveform, tf.float32)
    stft = tf.signal.stft(waveform, length, step, fft_length, window_fn=tf.signal.hann_window)
    power = tf.math.square(tf.abs(stft))
    mel_matrix = tf.signal.linear_to_mel_weight_matrix(
        num_mel_bins, fft_length // 2 + 1, sample_rate, lower_edge_hz, upper_edge_hz or sample_rate / 2)
    logmel = tf.math.log(tf.matmul(power, mel_matrix) + LOG_OFFSET)
    if normalize:
        mean, variance = tf.nn.moments(logmel, axes=[0], keepdims=True)
        logmel = (logmel - mean) * tf.math.rsqrt(variance + 1e-5)
    delta = deltas(logmel)
    return tf.stack([logmel, delta, deltas(delta)], axis=-1)


def context_windows(features, context: int = CONTEXT_FRAMES):
    """``[frames, bins, channels]`` to one window per frame, ``[frames, bins, context, channels]``
    (frequency x time x channels, the models' input layout), centred on the frame; the first and
    last frames are repeated to fill the windows at the ends."""
    half = context // 2
    padded = tf.concat([tf.repeat(features[:1], half, axis=0), features,
                        tf.repeat(features[-1:], context - 1 - half, axis=0)], axis=0)
    windows = tf.signal.frame(padded, context, 1, axis=0)  # [frames, context, bins, channels]
    return tf.transpose(windows, [0, 2, 1, 3])
