"""The trainer's view of the data: what a data dir holds, checked before the first step, and its
distributed datasets.

Each input pipeline gets ``InputContext`` (``strategy.distribute_datasets_from_function``): it
reads its own shard and batches ``global batch / replicas`` images, as Tensorpack's
per-tower batch of ``batch // nr_tower``.
"""
from __future__ import annotations

import dataclasses
import logging
import os
from typing import Optional

import tensorflow as tf

import bl_net_tf.data
from bl_net_tf.data import folder, records, sources, tfds_source

logger = logging.getLogger(__name__)

_SPLITS = ("train", "val")
_NAMED_AT_MOST = 10  # empty class folders named in the log; the others are counted


@dataclasses.dataclass(frozen=True)
class DataInfo:
    """What the trainer knows before reading: the classes and the size of each split, from the data.

    ``label_offset``: for TFRecord shards, what is subtracted from the stored labels (0 when a
    label 0 is stored, else the converters' 1); None for the other sources.
    """

    data_dir: str
    num_classes: int
    train_images: int
    val_images: int = 0
    class_names: Optional[list] = None
    label_offset: Optional[int] = None


def describe(data_dir: str, *, train: bool = True) -> DataInfo:
    """Lists and checks both splits of ``data_dir``, in seconds, before anything is trained; logs
    their sizes and warns of class folders without an image. Sizes and classes come from the data:
    an image folder's listing, a TFDS data set's info, a count of the TFRecord shards' records.

    ``train=False`` (evaluation only): the train split may be missing.

    Raises:
      ValueError: ``data_dir`` is missing or holds no data set; a split is missing or empty (named);
        a val class is not a train class (named); a shard cannot be read.
    """
    source = sources.detect(data_dir)
    describers = {sources.Source.FOLDER: _describe_folder, sources.Source.TFDS: _describe_tfds,
                  sources.Source.TFRECORD: _describe_records}
    info = describers[source](data_dir, train)
    logger.info("%s: %d training and %d validation images, %d classes", data_dir, info.train_images,
                info.val_images, info.num_classes)
    return info


def _needed(data_dir: str, split: str, train: bool, present: bool) -> bool:
    """Whether ``split`` is read; raises if it is needed and not ``present``."""
    if present:
        return True
    if split == "train" and not train:
        return False
    raise ValueError(f"{data_dir} has no {split} split: training needs both train and val images")


def _describe_folder(data_dir: str, train: bool) -> DataInfo:
    images = {}
    for split in _SPLITS:
        if not _needed(data_dir, split, train, os.path.isdir(os.path.join(data_dir, split))):
            continue
        images[split] = listed = folder.list_images(data_dir, split)  # raises on a val class train lacks
        for path in listed.empty_classes[:_NAMED_AT_MOST]:
            logger.warning("class folder %s holds no image", path)
        if len(listed.empty_classes) > _NAMED_AT_MOST:
            logger.warning("... and %d more class folders of %s/ without an image",
                           len(listed.empty_classes) - _NAMED_AT_MOST, split)
        if listed.unreadable:
            logger.warning("%s/: %d image-named entries are not readable files (named when the split is "
                           "read)", split, len(listed.unreadable))
    names = images["val"].class_names
    return DataInfo(data_dir, len(names), len(images["train"].paths) if "train" in images else 0,
                    len(images["val"].paths), list(names))


def _describe_tfds(data_dir: str, train: bool) -> DataInfo:
    version_dir = tfds_source.find_prepared(data_dir)
    info = tfds_source.info(version_dir)
    sizes = {}
    for split in _SPLITS:
        if _needed(version_dir, split, train, split in info.split_images):
            sizes[split] = info.split_images[split]
            if not sizes[split]:
                raise ValueError(f"the {split} split of {version_dir} holds no image")
    return DataInfo(data_dir, len(info.class_names), sizes.get("train", 0), sizes["val"], info.class_names)


def _describe_records(data_dir: str, train: bool) -> DataInfo:
    counts = {}
    for split in _SPLITS:
        shards = records.find_shards(data_dir, split)
        if _needed(data_dir, split, train, bool(shards)):
            counts[split] = records.count(data_dir, shards)
    offset = 0 if min(c.min_label for c in counts.values()) == 0 else records.DEFAULT_LABEL_OFFSET
    if offset == 0:
        logger.info("%s: the TFRecord labels start at 0, read as 0-based (label_offset=0)", data_dir)
    highest = counts["train"].max_label if "train" in counts else counts["val"].max_label
    if counts["val"].max_label > highest:
        raise ValueError(f"the validation shards of {data_dir} hold label {counts['val'].max_label}, above the "
                         f"training shards' {highest}: a val class that train lacks")
    num_classes = highest - offset + 1
    return DataInfo(data_dir, num_classes, counts["train"].records if "train" in counts else 0,
                    counts["val"].records, _record_class_names(data_dir, counts, offset, num_classes), offset)


def _record_class_names(data_dir: str, counts: dict, offset: int, num_classes: int) -> Optional[list]:
    """The wnid of each class from the shards' ``image/class/synset``, if every class has one.

    Raises:
      ValueError: train and val name a label with different wnids.
    """
    synsets = {}
    for split in _SPLITS:
        if split in counts:
            records.merge_synsets(synsets, counts[split].synsets, f"the {split} shards")
    names = [synsets.get(label + offset) for label in range(num_classes)]
    if None in names:
        logger.info("%s: the shards name %d of %d classes (image/class/synset), so exports of this run have no "
                    "class names", data_dir, num_classes - names.count(None), num_classes)
        return None
    return names


def train_dataset(strategy: tf.distribute.Strategy, config, data: DataInfo, *, seed=None):
    """Endless distributed training batches (``config.batch_size`` images per step in all)."""

    def dataset_fn(context: tf.distribute.InputContext) -> tf.data.Dataset:
        batch = context.get_per_replica_batch_size(config.batch_size)
        pipeline_seed = None if seed is None else seed + context.input_pipeline_id
        return bl_net_tf.data.imagenet_dataset(
            data.data_dir, "train", batch, loader=config.loader, image_size=config.image_size,
            seed=pipeline_seed, input_context=context, label_offset=data.label_offset).repeat()

    return strategy.distribute_datasets_from_function(dataset_fn)


def eval_dataset(strategy: tf.distribute.Strategy, config, data: DataInfo):
    """One pass over the validation set, every image exactly once (the last batch partial)."""

    def dataset_fn(context: tf.distribute.InputContext) -> tf.data.Dataset:
        batch = context.get_per_replica_batch_size(config.batch_size)
        return bl_net_tf.data.imagenet_dataset(
            data.data_dir, "val", batch, loader=config.loader, image_size=config.image_size,
            eval_image_size=config.eval_image_size, eval_protocol=config.eval_protocol, input_context=context,
            label_offset=data.label_offset)

    return strategy.distribute_datasets_from_function(dataset_fn)
