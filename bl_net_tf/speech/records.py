"""Frame-labelled utterances in TFRecords, and the tf.data pipeline that cuts them into windows.

One ``tf.train.Example`` per utterance holds its features (``[frames, bins, channels]`` float32,
as :func:`~bl_net_tf.speech.features.logmel_features` returns them) and one integer label per
frame (a context-dependent state id from a forced alignment). Windows are cut when reading, so a
record is 49 times smaller than the windows it yields.

    write_utterances("train-00000.tfrecord", [(feats, labels), ...])
    ds = frame_dataset("train-*.tfrecord", batch_size=512, shuffle_buffer=10_000)
"""
from __future__ import annotations

from typing import Iterable, Optional

import numpy as np
import tensorflow as tf

from bl_net_tf.speech.features import CONTEXT_FRAMES, context_windows

UTTERANCE_BUFFER = 256  # serialized utterances shuffled before windowing
INTERLEAVED_UTTERANCES = 32  # utterances whose frames are drawn round-robin when shuffling
_FEATURES = {
    "features": tf.io.FixedLenFeature([], tf.string),
    "shape": tf.io.FixedLenFeature([3], tf.int64),
    "labels": tf.io.VarLenFeature(tf.int64),
}


def utterance_example(features, labels) -> tf.train.Example:
    """One utterance: ``features`` ``[frames, bins, channels]``, ``labels`` ``[frames]`` ints."""
    features = np.asarray(features, np.float32)
    labels = np.asarray(labels, np.int64)
    if features.ndim != 3 or labels.shape != features.shape[:1]:
        raise ValueError(f"need features [frames, bins, channels] and one label per frame, got "
                         f"{features.shape} and {labels.shape}")
    feature = {
        "features": tf.train.Feature(bytes_list=tf.train.BytesList(value=[features.tobytes()])),
        "shape": tf.train.Feature(int64_list=tf.train.Int64List(value=list(features.shape))),
        "labels": tf.train.Feature(int64_list=tf.train.Int64List(value=labels.tolist())),
    }
    return tf.train.Example(features=tf.train.Features(feature=feature))


def write_utterances(path: str, utterances: Iterable) -> int:
    """Writes ``(features, labels)`` pairs to one TFRecord file; returns the frames written."""
    frames = 0
    with tf.io.TFRecordWriter(path) as writer:
        for features, labels in utterances:
            writer.write(utterance_example(features, labels).SerializeToString())
            frames += len(labels)
    return frames


def parse_utterance(serialized):
    """A serialized utterance to ``(features [frames, bins, channels] float32, labels [frames] int32)``."""
    parsed = tf.io.parse_single_example(serialized, _FEATURES)
    features = tf.reshape(tf.io.decode_raw(parsed["features"], tf.float32), parsed["shape"])
    labels = tf.cast(tf.sparse.to_dense(parsed["labels"]), tf.int32)
    return features, labels


def frame_dataset(pattern: str, *, batch_size: int, context: int = CONTEXT_FRAMES, shuffle_buffer: int = 0,
                  seed: Optional[int] = None, drop_remainder: bool = False) -> tf.data.Dataset:
    """Batches of ``(windows [batch, bins, context, channels], labels [batch])`` from the files
    matching ``pattern``: every frame of every utterance, centred in its window.

    Without shuffling, frames come in file and utterance order. With ``shuffle_buffer`` > 0 the
    files and utterances are shuffled, frames are drawn round-robin from
    :data:`INTERLEAVED_UTTERANCES` utterances at a time (neighbouring frames are nearly
    identical), and then shuffled in a buffer of that many windows (37.6 KB each at 64 x 49 x 3).
    """
    files = tf.io.gfile.glob(pattern)
    if not files:
        raise ValueError(f"no TFRecord files match {pattern!r}")
    ds = tf.data.Dataset.from_tensor_slices(sorted(files))
    if shuffle_buffer:
        ds = ds.shuffle(len(files), seed=seed)
    ds = tf.data.TFRecordDataset(ds)
    if shuffle_buffer:
        ds = ds.shuffle(UTTERANCE_BUFFER, seed=seed)

    def windows(serialized):
        features, labels = parse_utterance(serialized)
        return tf.data.Dataset.from_tensor_slices((context_windows(features, context), labels))

    ds = ds.interleave(windows, cycle_length=INTERLEAVED_UTTERANCES if shuffle_buffer else 1, block_length=1,
                       num_parallel_calls=tf.data.AUTOTUNE, deterministic=not shuffle_buffer or seed is not None)
    if shuffle_buffer:
        ds = ds.shuffle(shuffle_buffer, seed=seed)
    return ds.batch(batch_size, drop_remainder=drop_remainder).prefetch(tf.data.AUTOTUNE)
