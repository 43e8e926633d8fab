"""Reading a TFDS ``imagenet2012`` (or ``imagenet2012_subset``) that ``tfds build`` has already prepared.

TFDS cannot download ImageNet; it prepares it from the manually downloaded tars
into ``<data_dir>/imagenet2012/<version>/`` (the 1% and 10% subsets into
``<data_dir>/imagenet2012_subset/<1pct|10pct>/<version>/``). This module only reads
such a directory, through ``tfds.builder_from_directory``, so it needs
``tensorflow-datasets`` installed but not the builder's code or the tars.
``tensorflow_datasets`` is imported only when such a directory is read.

The split sizes and the class names come from the data set's own info, so a subset
or a data set of one's own in this format trains with its real epoch and head.
TFDS's labels are already 0-based, in sorted-wnid order, and its preparation
re-encodes ImageNet's CMYK and PNG files as RGB JPEGs.
"""
import dataclasses
import json
import os

NAMES = ("imagenet2012", "imagenet2012_subset")
NAME = NAMES[0]
TFDS_SPLITS = {"train": "train", "val": "validation"}
_INFO = "dataset_info.json"


@dataclasses.dataclass(frozen=True)
class Info:
    """What a prepared data set says about itself: images per split ("train"/"val") and class names."""
    split_images: dict
    class_names: list


def _version_key(name: str) -> tuple:
    return tuple(int(part) if part.isdigit() else -1 for part in name.split("."))


def _prepared(folder: str) -> bool:
    """Whether ``folder`` holds one of :data:`NAMES` prepared by TFDS."""
    info = os.path.join(folder, _INFO)
    if not os.path.isfile(info):
        return False
    with open(info, encoding="utf-8") as f:
        return json.load(f).get("name") in NAMES


def _subfolders(folder: str) -> list:
    if not os.path.isdir(folder):
        return []
    return [os.path.join(folder, name) for name in os.listdir(folder) if os.path.isdir(os.path.join(folder, name))]


def _newest(folders: list):
    """The prepared folder among ``folders`` with the highest version, or None."""
    prepared = [folder for folder in folders if _prepared(folder)]
    return max(prepared, key=lambda folder: _version_key(os.path.basename(folder)), default=None)


def find_prepared(data_dir: str):
    """The prepared version folder in ``data_dir`` (the newest version), or None.

    ``data_dir`` may be the version folder, the data set's folder (``imagenet2012/`` or a subset's
    ``imagenet2012_subset/<config>/``), a subset's folder holding one config, or a TFDS data dir:
    there ``imagenet2012`` is read if prepared, else the one prepared subset.

    Raises:
        ValueError: the folder holds several subsets and no ``imagenet2012`` (which one is meant?).
    """
    if _prepared(data_dir):
        return data_dir
    found = _newest(_subfolders(data_dir))  # a data set's folder: its versions
    if found:
        return found
    subsets = os.path.join(data_dir, NAMES[1])
    if os.path.basename(os.path.normpath(data_dir)) == NAMES[1]:  # a subset's folder: its configs
        subsets = data_dir
    else:  # a TFDS data dir
        found = _newest(_subfolders(os.path.join(data_dir, NAME)))
        if found:
            return found
    configs = [folder for folder in map(_newest, map(_subfolders, _subfolders(subsets))) if folder]
    if len(configs) > 1:
        raise ValueError(f"{data_dir} holds {len(configs)} prepared data sets ({', '.join(sorted(configs))}); "
                         f"pass the one to read as data_dir.")
    return configs[0] if configs else None


def _builder(version_dir: str):
    try:
        import tensorflow_datasets as tfds
    except ImportError as error:
        raise ImportError(
            f"{version_dir} holds a TFDS {NAME}; reading it needs "
            "'pip install tensorflow-datasets'.") from error
    return tfds, tfds.builder_from_directory(version_dir)


def info(version_dir: str) -> Info:
    """The split sizes and class names that the prepared data set's info records (no data is read)."""
    _, builder = _builder(version_dir)
    splits = {split: builder.info.splits[tfds_split].num_examples
              for split, tfds_split in TFDS_SPLITS.items() if tfds_split in builder.info.splits}
    return Info(splits, list(builder.info.features["label"].names))


def examples(version_dir: str, split: str, *, shuffle: bool, seed, input_context):
    """A dataset of ``(name, encoded image, label)`` from a prepared ``imagenet2012``.

    The images stay encoded (``SkipDecoding``) so that they go through the same
    checks and decoding as the other sources. ``input_context`` shards by file.
    """
    import tensorflow as tf

    tfds, builder = _builder(version_dir)
    tfds_split = TFDS_SPLITS[split]
    if tfds_split not in builder.info.splits:
        raise ValueError(f"The TFDS {NAME} in {version_dir} has no '{tfds_split}' split; "
                         f"it has {sorted(builder.info.splits)}.")
    read_config = tfds.ReadConfig(input_context=input_context, shuffle_seed=seed,
                                  interleave_cycle_length=16)
    dataset = builder.as_dataset(split=tfds_split, shuffle_files=shuffle, read_config=read_config,
                                 decoders={"image": tfds.decode.SkipDecoding()})
    return dataset.map(
        lambda ex: (ex["file_name"], ex["image"], tf.cast(ex["label"], tf.int32)),
        num_parallel_calls=tf.data.AUTOTUNE)
