"""Reading ImageNet from TFRecord shards of ``tf.train.Example``.

The shards are those written by TF's Inception/TF-slim converter
(``build_imagenet_data.py``) and the TPU/Model Garden scripts derived from it:
``train-00000-of-01024`` ... and ``validation-00000-of-00128`` ..., each record
holding ``image/encoded`` (JPEG bytes), ``image/class/label`` and
``image/filename``.

Those converters number the classes **1..1000** (0 is reserved for a
"background" class), so by default 1 is subtracted from the stored label
(``label_offset=1``). Shards written with 0-based labels need ``label_offset=0``;
a label below 0 after the offset stops the pipeline with an error saying so.
"""
import glob
import os

import tensorflow as tf

DEFAULT_LABEL_OFFSET = 1
# Shard file prefixes for each split; "val-" is accepted for hand-made shards.
SHARD_PREFIXES = {"train": ("train",), "val": ("validation", "val")}
# Encoded examples held for shuffling records (about 110 kB each on ImageNet), as in
# TF Model Garden's ImageNet input.
SHUFFLE_BUFFER = 10_000
# Shards read at once. A fixed number (not AUTOTUNE) keeps the order of the
# validation records the same on every machine.
INTERLEAVE_CYCLE = 16
_FEATURES = {
    "image/encoded": tf.io.FixedLenFeature([], tf.string),
    "image/class/label": tf.io.FixedLenFeature([], tf.int64),
    "image/filename": tf.io.FixedLenFeature([], tf.string, default_value=""),
}


def find_shards(data_dir: str, split: str) -> list:
    """The sorted shard files of ``split`` ("train" or "val") in ``data_dir``."""
    for prefix in SHARD_PREFIXES[split]:
        shards = sorted(glob.glob(os.path.join(data_dir, f"{prefix}-*-of-*")))
        if shards:
            return shards
    return []


def examples(shards: list, *, shuffle: bool, seed, input_context, label_offset: int):
    """A dataset of ``(name, encoded image, label)`` read from ``shards``.

    ``name`` is ``<shard>:<image/filename>``, used to name a file that is skipped.
    With an ``input_context`` each input pipeline reads a disjoint set of shards
    (of records, when there are fewer shards than pipelines).
    """
    files = tf.data.Dataset.from_tensor_slices(shards)
    by_file = input_context is not None and len(shards) >= input_context.num_input_pipelines
    if by_file:
        files = files.shard(input_context.num_input_pipelines, input_context.input_pipeline_id)
    if shuffle:
        files = files.shuffle(len(shards), seed=seed, reshuffle_each_iteration=True)

    def read(path):
        records = tf.data.TFRecordDataset(path)
        if input_context is not None and not by_file:
            # Every n-th record of each shard: disjoint whatever order the shards come in.
            records = records.shard(input_context.num_input_pipelines,
                                    input_context.input_pipeline_id)
        return records.map(lambda record: (path, record))

    records = files.interleave(read, cycle_length=INTERLEAVE_CYCLE,
                               num_parallel_calls=tf.data.AUTOTUNE)
    if shuffle:
        records = records.shuffle(SHUFFLE_BUFFER, seed=seed, reshuffle_each_iteration=True)

    def parse(path, record):
        example = tf.io.parse_single_example(record, _FEATURES)
        name = tf.strings.join([path, example["image/filename"]], separator=":")
        label = tf.cast(example["image/class/label"], tf.int32) - label_offset
        return name, example["image/encoded"], label

    return records.map(parse, num_parallel_calls=tf.data.AUTOTUNE)
