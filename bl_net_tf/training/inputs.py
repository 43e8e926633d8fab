"""The trainer's view of the data: what a data dir holds, and its distributed datasets.

Each input pipeline gets ``InputContext`` (``strategy.distribute_datasets_from_function``): it
reads its own shard and batches ``global batch / replicas`` images, as Tensorpack's
per-tower batch of ``batch // nr_tower``.
"""
from __future__ import annotations

import dataclasses
import logging
from typing import Optional

import tensorflow as tf

import bl_net_tf.data
from bl_net_tf.data import folder, sources

logger = logging.getLogger(__name__)

# ILSVRC-2012, for sources that do not list their files (TFDS, TFRecord shards).
IMAGENET_CLASSES = 1000
IMAGENET_TRAIN_IMAGES = 1281167


@dataclasses.dataclass(frozen=True)
class DataInfo:
    """What the trainer needs to know before reading: classes and the training set's size."""

    data_dir: str
    num_classes: int
    train_images: int
    class_names: Optional[list] = None


def describe(data_dir: str) -> DataInfo:
    """Counts the classes and training images of ``data_dir``.

    Raises:
      ValueError: ``data_dir`` is missing, holds no data set, or its train split has no image.
    """
    source = sources.detect(data_dir)
    if source is not sources.Source.FOLDER:
        return DataInfo(data_dir, IMAGENET_CLASSES, IMAGENET_TRAIN_IMAGES)
    images = folder.list_images(data_dir, "train")
    return DataInfo(data_dir, len(images.class_names), len(images.paths), list(images.class_names))


def train_dataset(strategy: tf.distribute.Strategy, config, data_dir: str, *, seed=None):
    """Endless distributed training batches (``config.batch_size`` images per step in all)."""

    def dataset_fn(context: tf.distribute.InputContext) -> tf.data.Dataset:
        batch = context.get_per_replica_batch_size(config.batch_size)
        pipeline_seed = None if seed is None else seed + context.input_pipeline_id
        return bl_net_tf.data.imagenet_dataset(
            data_dir, "train", batch, loader=config.loader, image_size=config.image_size,
            seed=pipeline_seed, input_context=context).repeat()

    return strategy.distribute_datasets_from_function(dataset_fn)


def eval_dataset(strategy: tf.distribute.Strategy, config, data_dir: str):
    """One pass over the validation set, every image exactly once (the last batch partial)."""

    def dataset_fn(context: tf.distribute.InputContext) -> tf.data.Dataset:
        batch = context.get_per_replica_batch_size(config.batch_size)
        return bl_net_tf.data.imagenet_dataset(
            data_dir, "val", batch, loader=config.loader, image_size=config.image_size,
            eval_image_size=config.eval_image_size, eval_protocol=config.eval_protocol, input_context=context)

    return strategy.distribute_datasets_from_function(dataset_fn)
