"""Reading a TFDS ``imagenet2012`` that ``tfds build`` has already prepared.

TFDS cannot download ImageNet; it prepares it from the manually downloaded tars
into ``<data_dir>/imagenet2012/<version>/``. This module only reads such a
directory, through ``tfds.builder_from_directory``, so it needs
``tensorflow-datasets`` installed but not the builder's code or the tars.
``tensorflow_datasets`` is imported only when such a directory is read.

TFDS's labels are already 0-based, in sorted-wnid order, and its preparation
re-encodes ImageNet's CMYK and PNG files as RGB JPEGs.
"""
import json
import os

NAME = "imagenet2012"
TFDS_SPLITS = {"train": "train", "val": "validation"}
_INFO = "dataset_info.json"


def _version_key(name: str) -> tuple:
    return tuple(int(part) if part.isdigit() else -1 for part in name.split("."))


def _is_prepared(folder: str) -> bool:
    info = os.path.join(folder, _INFO)
    if not os.path.isfile(info):
        return False
    with open(info, encoding="utf-8") as f:
        return json.load(f).get("name") == NAME


def find_prepared(data_dir: str):
    """The prepared version folder in ``data_dir`` (the newest version), or None.

    ``data_dir`` may be the TFDS data dir, its ``imagenet2012/`` folder or the
    version folder itself.
    """
    if _is_prepared(data_dir):
        return data_dir
    for folder in (os.path.join(data_dir, NAME), data_dir):
        if os.path.isdir(folder):
            versions = [v for v in os.listdir(folder) if _is_prepared(os.path.join(folder, v))]
            if versions:
                return os.path.join(folder, max(versions, key=_version_key))
    return None


def examples(version_dir: str, split: str, *, shuffle: bool, seed, input_context):
    """A dataset of ``(name, encoded image, label)`` from a prepared ``imagenet2012``.

    The images stay encoded (``SkipDecoding``) so that they go through the same
    checks and decoding as the other sources. ``input_context`` shards by file.
    """
    try:
        import tensorflow_datasets as tfds
    except ImportError as error:
        raise ImportError(
            f"{version_dir} holds a TFDS {NAME}; reading it needs "
            "'pip install tensorflow-datasets'.") from error
    import tensorflow as tf

    builder = tfds.builder_from_directory(version_dir)
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
