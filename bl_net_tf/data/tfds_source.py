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


def _prepared(folder: str):
    """``(name, config)`` of the data set prepared in ``folder``, or None."""
    info = os.path.join(folder, _INFO)
    if not os.path.isfile(info):
        return None
    with open(info, encoding="utf-8") as f:
        content = json.load(f)
    name = content.get("name")
    return (name, content.get("configName", "")) if name in NAMES else None


def _subfolders(folder: str) -> list:
    if not os.path.isdir(folder):
        return []
    return [os.path.join(folder, name) for name in os.listdir(folder) if os.path.isdir(os.path.join(folder, name))]


def find_prepared(data_dir: str):
    """The prepared version folder in ``data_dir`` (the newest version), or None.

    ``data_dir`` may be the TFDS data dir, its ``imagenet2012/`` folder (or
    ``imagenet2012_subset/`` or ``imagenet2012_subset/<config>/``) or the version
    folder itself.

    Raises:
        ValueError: ``data_dir`` holds several prepared data sets (say, both subsets).
    """
    if _prepared(data_dir):
        return data_dir
    parents = [data_dir]  # a data set's folder, or a subset's config folder
    for name in NAMES:  # the TFDS data dir
        parents += [os.path.join(data_dir, name)] + _subfolders(os.path.join(data_dir, name))
    if os.path.basename(os.path.normpath(data_dir)) in NAMES:  # a subset's folder
        parents += _subfolders(data_dir)
    newest = {}
    for folder in (path for parent in parents for path in _subfolders(parent)):
        key = _prepared(folder)
        if key and (key not in newest or _version_key(os.path.basename(folder))
                    > _version_key(os.path.basename(newest[key]))):
            newest[key] = folder
    if len(newest) > 1:
        raise ValueError(f"{data_dir} holds {len(newest)} prepared data sets "
                         f"({', '.join(sorted(newest.values()))}); pass the one to read as data_dir.")
    return next(iter(newest.values()), None)


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
