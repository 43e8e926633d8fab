"""Which kind of ImageNet a data dir holds, and its encoded examples for tf.data."""
import enum
import logging
import os

import tensorflow as tf

from bl_net_tf.data import folder, records, tfds_source

logger = logging.getLogger(__name__)


class Source(enum.Enum):
    """The supported ways of storing ImageNet (see docs/data.md)."""
    FOLDER = "ImageNet image folder"
    TFDS = "prepared TFDS imagenet2012"
    TFRECORD = "TFRecord shards"


def detect(data_dir: str) -> Source:
    """Tells which :class:`Source` ``data_dir`` holds, and logs it.

    Raises:
        ValueError: if ``data_dir`` is missing or holds none of them.
    """
    if not os.path.isdir(data_dir):
        raise ValueError(f"data_dir {data_dir!r} does not exist or is not a directory.")
    if tfds_source.find_prepared(data_dir):
        source = Source.TFDS
    elif records.find_shards(data_dir, "train") or records.find_shards(data_dir, "val"):
        source = Source.TFRECORD
    elif folder.has_layout(data_dir):
        source = Source.FOLDER
    else:
        raise ValueError(
            f"data_dir {data_dir!r} holds no ImageNet data; expected train/<wnid>/*.JPEG and "
            "val/ folders, a prepared TFDS imagenet2012, or train-*-of-* / validation-*-of-* "
            "TFRecord shards.")
    logger.info("Reading ImageNet from %s: %s", data_dir, source.value)
    return source


def folder_examples(images: folder.ImageList, *, shuffle: bool, seed) -> tf.data.Dataset:
    """A dataset of ``(path, path, int32 label)`` for the listed images of a folder: the payload
    is the path, the loader reads the file (see :func:`examples`)."""
    paths = tf.constant(images.paths, tf.string)  # bytes: any file name
    files = tf.data.Dataset.from_tensor_slices((paths, paths, tf.constant(images.labels, tf.int32)))
    if shuffle:
        # File names are small: shuffle all of them, before any image is read.
        files = files.shuffle(len(images.paths), seed=seed, reshuffle_each_iteration=True)
    return files


def examples(source: Source, data_dir: str, split: str, *, shuffle: bool, seed,
             input_context, label_offset) -> tf.data.Dataset:
    """A dataset of ``(name, encoded image, int32 label)`` for ``split`` ("train"/"val") of a
    TFDS or TFRecord source (image folders: :func:`folder_examples`).

    ``name`` identifies the image in warnings. ``label_offset`` (None for the source's
    default) is subtracted from TFRecord labels.
    """
    if source is Source.TFDS:
        return tfds_source.examples(tfds_source.find_prepared(data_dir), split, shuffle=shuffle,
                                    seed=seed, input_context=input_context)
    shards = records.find_shards(data_dir, split)
    if not shards:
        raise ValueError(f"No {split} TFRecord shards in {data_dir}: expected "
                         f"{records.SHARD_PREFIXES[split][0]}-*-of-* files.")
    offset = records.DEFAULT_LABEL_OFFSET if label_offset is None else label_offset
    return records.examples(shards, shuffle=shuffle, seed=seed, input_context=input_context,
                            label_offset=offset)
