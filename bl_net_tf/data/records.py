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

How many records a split holds and which labels they carry is not written anywhere
in the shards: :func:`count` reads them once (the labels only) and caches the result
in a JSON file beside them, or in the user's cache when that folder is read-only,
keyed by each shard's size and modification time, so that a changed shard is read
again. The same pass reads ``image/class/synset`` where the converter wrote it (the
class's wnid, ``n01440764``): the class names a run's export returns, as the folder
names are for an image folder.
"""
import dataclasses
import glob
import hashlib
import json
import logging
import os

import numpy as np
import tensorflow as tf

logger = logging.getLogger(__name__)

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


# What counting reads of each record; a shard without synsets (hand-made) reads "".
_COUNTED = {"image/class/label": _FEATURES["image/class/label"],
            "image/class/synset": tf.io.FixedLenFeature([], tf.string, default_value="")}
COUNTS_FILE = ".bl_net_tf_record_counts.json"
_COUNT_BATCH = 8192


@dataclasses.dataclass(frozen=True)
class Counts:
    """The records of some shards and the range of their stored labels (before any offset);
    ``synsets`` maps a stored label to its ``image/class/synset`` (only labels that have one)."""
    records: int
    min_label: int
    max_label: int
    synsets: dict = dataclasses.field(default_factory=dict, compare=False, hash=False)


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


def _cache_files(data_dir: str) -> list:
    """Where the counts of ``data_dir`` are cached: beside the shards, else in the user's cache."""
    from bl_net_tf.data import demo  # the cache root of the package

    key = hashlib.sha1(os.path.abspath(data_dir).encode()).hexdigest()[:16]
    return [os.path.join(data_dir, COUNTS_FILE), os.path.join(demo.cache_root(), "record_counts", f"{key}.json")]


def _read_cache(data_dir: str) -> dict:
    for path in _cache_files(data_dir):
        try:
            with open(path, encoding="utf-8") as f:
                return json.load(f)
        except (OSError, ValueError):
            continue
    return {}


def _write_cache(data_dir: str, entries: dict) -> None:
    for path in _cache_files(data_dir):
        temporary = f"{path}.{os.getpid()}.tmp"
        try:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(temporary, "w", encoding="utf-8") as f:
                json.dump(entries, f, indent=0, sort_keys=True)
            os.replace(temporary, path)
            return
        except OSError:  # a read-only data folder: the next place
            try:
                os.remove(temporary)
            except OSError:
                pass
    logger.warning("cannot cache the record counts of %s (no writable place)", data_dir)


def _signature(path: str) -> list:
    stat = os.stat(path)
    return [stat.st_size, stat.st_mtime_ns]


def _count_shards(shards: list) -> dict:
    """Reads the labels of ``shards``: ``{shard: {"counts": [records, min label, max label],
    "synsets": {label (str, as JSON keys are): wnid}}}``.

    Raises:
      ValueError: a shard cannot be read (named), or names one label with two wnids.
    """
    paths = tf.data.Dataset.from_tensor_slices((tf.range(len(shards)), shards))
    labels = paths.interleave(
        lambda index, path: tf.data.TFRecordDataset(path).map(lambda record: (index, record)),
        cycle_length=INTERLEAVE_CYCLE, num_parallel_calls=tf.data.AUTOTUNE)

    def parse(index, records):
        features = tf.io.parse_example(records, _COUNTED)
        return index, features["image/class/label"], features["image/class/synset"]

    labels = labels.batch(_COUNT_BATCH).map(parse, num_parallel_calls=tf.data.AUTOTUNE)
    records = np.zeros(len(shards), np.int64)
    lowest = np.full(len(shards), np.iinfo(np.int64).max)
    highest = np.full(len(shards), np.iinfo(np.int64).min)
    synsets = [{} for _ in shards]
    try:
        for index, label, synset in labels:
            index, label = index.numpy(), label.numpy()
            np.add.at(records, index, 1)
            np.minimum.at(lowest, index, label)
            np.maximum.at(highest, index, label)
            for i, stored, name in set(zip(index.tolist(), label.tolist(), synset.numpy().tolist())):
                if name:
                    merge_synsets(synsets[i], {stored: name.decode("utf-8", "replace")}, shards[i])
    except tf.errors.OpError:
        for shard in shards:  # rare: find the one to name
            try:
                for _ in tf.data.TFRecordDataset(shard):
                    pass
            except tf.errors.OpError as error:
                raise ValueError(f"TFRecord shard {shard} cannot be read: "
                                 f"{(error.message or str(error)).splitlines()[0]}") from None
        raise
    return {shard: {"counts": [int(n), int(lo), int(hi)], "synsets": {str(k): v for k, v in names.items()}}
            for shard, n, lo, hi, names in zip(shards, records, lowest, highest, synsets)}


def count(data_dir: str, shards: list) -> Counts:
    """The records of ``shards`` (in ``data_dir``) and their label range, read once and cached.

    Raises:
      ValueError: a shard cannot be read, or holds no record.
    """
    cache = _read_cache(data_dir)
    signatures = {shard: _signature(shard) for shard in shards}
    # An entry without "synsets" was written before they were read: counted again, once.
    known = {shard: cache[os.path.basename(shard)] for shard in shards
             if cache.get(os.path.basename(shard), {}).get("signature") == signatures[shard]
             and "synsets" in cache[os.path.basename(shard)]}
    missing = [shard for shard in shards if shard not in known]
    if missing:
        logger.info("counting the records of %d TFRecord shard(s) in %s (once; cached)", len(missing), data_dir)
        counted = _count_shards(missing)
        known.update({shard: {"signature": signatures[shard], **counted[shard]} for shard in missing})
        cache.update({os.path.basename(shard): known[shard] for shard in missing})
        _write_cache(data_dir, cache)
    empty = [shard for shard in shards if known[shard]["counts"][0] == 0]
    if empty:
        raise ValueError(f"TFRecord shard {empty[0]} holds no record"
                         + (f" ({len(empty) - 1} more shards are empty)" if len(empty) > 1 else ""))
    synsets = {}
    for shard in shards:
        merge_synsets(synsets, {int(label): name for label, name in known[shard]["synsets"].items()}, shard)
    counts = [known[shard]["counts"] for shard in shards]
    return Counts(sum(c[0] for c in counts), min(c[1] for c in counts), max(c[2] for c in counts), synsets)


def merge_synsets(into: dict, synsets: dict, where: str) -> None:
    """Adds ``synsets`` ({label: wnid}, read from ``where``) to ``into``.

    Raises:
      ValueError: a label already has another wnid (the shards disagree on what the label means).
    """
    for label, name in synsets.items():
        if into.setdefault(label, name) != name:
            raise ValueError(f"TFRecord label {label} is {into[label]}, and {name} in {where} (image/class/synset): "
                             f"the shards number the classes differently")
