"""Where ``bl-net-train`` reads ImageNet from when ``--data_dir`` is not given.

In this order: ``--data_dir``; ``$IMAGENET_DIR``; a prepared TFDS ``imagenet2012`` in the TFDS data
dir (``$TFDS_DATA_DIR``, else TFDS's default ``~/tensorflow_datasets``); else the demo digits, but
only for a run on one device that asked for no paper recipe (a paper flagfile says ``--nodemo``):
a paper recipe or several devices without ImageNet is an error that says how to point at it,
rather than the 32-pixel digits on an 8-GPU node. ``--demo`` asks for the digits whatever exists.
Nothing here reads the data: a TFDS dir is recognised by its ``dataset_info.json``.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Optional

from bl_net_tf.data import tfds_source

IMAGENET_DIR_ENV = "IMAGENET_DIR"
TFDS_DATA_DIR_ENV = "TFDS_DATA_DIR"
TFDS_DEFAULT_DATA_DIR = os.path.join("~", "tensorflow_datasets")  # tfds.core.constants.DATA_DIR's default
# How to point at ImageNet, for the error.
_HOW = (f"pass --data_dir=/path/to/imagenet, set ${IMAGENET_DIR_ENV}, or prepare imagenet2012 in "
        f"${TFDS_DATA_DIR_ENV} (default {TFDS_DEFAULT_DATA_DIR}); --demo trains on the demo digits instead")


@dataclasses.dataclass(frozen=True)
class DataSource:
    """What a run reads.

    Attributes:
      data_dir: the ImageNet directory; None: the demo digits (with ``problem``: nothing).
      note: one line saying which data and why, for the log and ``--print_config``; empty when
        ``--data_dir`` said it.
      problem: set when the run cannot start (no ImageNet, and the digits are not allowed): the
        error's one line.
    """

    data_dir: Optional[str]
    note: str = ""
    problem: Optional[str] = None


def tfds_data_dir(environ=os.environ) -> str:
    """The TFDS data dir: ``$TFDS_DATA_DIR``, else TFDS's default ``~/tensorflow_datasets``."""
    return os.path.expanduser(environ.get(TFDS_DATA_DIR_ENV) or TFDS_DEFAULT_DATA_DIR)


def find(data_dir: Optional[str], *, demo: Optional[bool], devices: int, environ=os.environ) -> DataSource:
    """Chooses the data of a run (see the module docstring).

    Args:
      data_dir: ``--data_dir``, or None.
      demo: ``--demo`` True, ``--nodemo`` False (a paper recipe: never the digits), unset None.
      devices: how many devices (GPUs, or workers) would train; the digits are for one.
      environ: the environment to read ``$IMAGENET_DIR`` and ``$TFDS_DATA_DIR`` from.

    Raises:
      ValueError: ``--demo`` together with ``--data_dir``.
    """
    digits = "the demo digits, with demo values for the flags not given"
    if demo:
        if data_dir is not None:
            raise ValueError(f"--demo trains on the demo digits but --data_dir={data_dir} was given; drop one")
        return DataSource(None, f"--demo: {digits}")
    if data_dir is not None:
        return DataSource(data_dir)
    if environ.get(IMAGENET_DIR_ENV):
        path = environ[IMAGENET_DIR_ENV]
        return DataSource(path, f"no --data_dir: ImageNet from ${IMAGENET_DIR_ENV}={path}")
    tfds_dir = tfds_data_dir(environ)
    if tfds_source.find_prepared(tfds_dir):
        where = f"${TFDS_DATA_DIR_ENV}" if environ.get(TFDS_DATA_DIR_ENV) else "TFDS's default data dir"
        return DataSource(tfds_dir, f"no --data_dir or ${IMAGENET_DIR_ENV}: ImageNet from the prepared TFDS "
                                    f"imagenet2012 in {tfds_dir} ({where})")
    searched = f"no --data_dir, no ${IMAGENET_DIR_ENV}, no TFDS imagenet2012 in {tfds_dir}"
    if demo is False:
        problem = f"this paper recipe trains on ImageNet and there is none ({searched}): {_HOW}"
    elif devices > 1:
        problem = f"{devices} devices would train on the demo digits ({searched}): {_HOW}"
    else:
        return DataSource(None, f"no --data_dir: {digits} (no ${IMAGENET_DIR_ENV}, no TFDS imagenet2012 in "
                                f"{tfds_dir})")
    return DataSource(None, f"the run would stop: {problem}", problem)


def count_devices(gpus: Optional[int]) -> int:
    """How many devices a run with ``--gpus`` would train on, without creating them: the workers of
    a cluster (``TF_CONFIG``, a Slurm step), else ``gpus``, else the GPUs TensorFlow sees."""
    from bl_net_tf.training import distribute

    spec = distribute.cluster_spec()
    workers = sum(len(tasks) for tasks in spec["cluster"].values()) if spec else distribute.slurm_tasks()
    if workers > 1:
        return workers
    if gpus is not None:
        return gpus
    import tensorflow as tf

    return len(tf.config.list_physical_devices("GPU"))
