"""What a training run is, written into its model_dir, so that its checkpoints can be used alone.

The trainer (its chief) writes ``<model_dir>/run_config.json`` when it starts, after restoring
(an ``--eval_only`` run only when there is none):
the network's ``create_model`` keyword arguments (:func:`model_options`, the one mapping from a
:class:`TrainConfig` and its data to the model), the training and evaluation sizes, the
evaluation protocol and the class names (the data's synset folders). ``python -m bl_net_tf.export
--model_dir=M`` reads it back (:func:`read`) and rebuilds the network with :func:`create_run_model`,
the same call the trainer made.
"""
from __future__ import annotations

import dataclasses
import json
import os
from typing import Optional

import keras
import tensorflow as tf

from bl_net_tf.models import create_model, registry
from bl_net_tf.models.families import FAMILIES

FILE_NAME = "run_config.json"
FORMAT_VERSION = 1


# What run_config.json files written before the shortcut option existed built: every ResNet-family
# network had the average-pool shortcut (read() restores it; the variables alone cannot tell).
_SHORTCUT_BEFORE_THE_OPTION = "avgpool"


def model_options(config, num_classes: int) -> dict:
    """``create_model`` keyword arguments of the network that ``config`` trains on data with
    ``num_classes`` classes: everything that decides its variables and its outputs, the shortcut
    resolved (so that a later default cannot change the network of a run). (Not the layout,
    precision or input size, which a checkpoint does not depend on.)"""
    return {"arch": config.arch, "alpha": config.alpha, "beta": config.beta, "cardinality": config.cardinality,
            "base_width": config.base_width, "merge": config.merge, "branches": config.branches,
            "merges": config.merges, "upsample": config.upsample, "shortcut": config.model_request().shortcut,
            "num_classes": num_classes}


def create_run_model(options: dict, *, input_shape, data_format: str) -> keras.Model:
    """The network of a run from its :func:`model_options`: uint8 RGB in, logits out."""
    return create_model(**options, input_shape=input_shape, data_format=data_format, include_preprocessing=True)


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """The contents of ``run_config.json``.

    Attributes:
      model: :func:`model_options`; None when the run trained a custom ``model_fn``.
      num_classes: classes of the data.
      image_size, eval_image_size: training crop and evaluation crop.
      eval_protocol: ``bl_net_tf.data.recipe.EVAL_PROTOCOLS``.
      class_names: one name per class index (the folders' wnids; TFDS's label names; the TFRecord
        shards' image/class/synset when every class has one), else None.
    """

    model: Optional[dict]
    num_classes: int
    image_size: int
    eval_image_size: int
    eval_protocol: str
    class_names: Optional[list] = None


def from_training(config, data, *, custom_model: bool = False) -> RunConfig:
    """The run configuration of a resolved :class:`TrainConfig` on ``data`` (``inputs.DataInfo``)."""
    return RunConfig(model=None if custom_model else model_options(config, data.num_classes),
                     num_classes=data.num_classes, image_size=config.image_size,
                     eval_image_size=config.eval_image_size or config.image_size,
                     eval_protocol=config.eval_protocol, class_names=data.class_names)


def _takes_shortcut(model: dict) -> bool:
    return bool(FAMILIES[registry.get_spec(model["arch"]).family].shortcuts)


def exists(model_dir: str) -> bool:
    """Whether ``model_dir`` has a ``run_config.json``."""
    return tf.io.gfile.exists(os.path.join(model_dir, FILE_NAME))


def write(model_dir: str, run: RunConfig) -> str:
    """Writes ``run`` to ``<model_dir>/run_config.json`` (atomically); returns the path."""
    path = os.path.join(model_dir, FILE_NAME)
    text = json.dumps({"format_version": FORMAT_VERSION, **dataclasses.asdict(run)}, indent=1) + "\n"
    temporary = f"{path}.tmp-{os.getpid()}"
    with tf.io.gfile.GFile(temporary, "w") as handle:
        handle.write(text)
    tf.io.gfile.rename(temporary, path, overwrite=True)
    return path


def read(model_dir: str) -> RunConfig:
    """Reads ``<model_dir>/run_config.json``.

    Raises:
      ValueError: no such file (not a training run's model_dir, or one written before run configs
        existed), or not a run configuration this version reads.
    """
    path = os.path.join(model_dir, FILE_NAME)
    if not tf.io.gfile.exists(path):
        raise ValueError(f"{path} does not exist: --model_dir must be the model_dir of a train_imagenet.py run")
    try:
        with tf.io.gfile.GFile(path) as handle:
            values = json.load(handle)
        version = values.pop("format_version")
        if version != FORMAT_VERSION:
            raise ValueError(f"format_version {version}, this version reads {FORMAT_VERSION}")
        model = values.get("model")
        if model is not None and "shortcut" not in model and _takes_shortcut(model):
            model["shortcut"] = _SHORTCUT_BEFORE_THE_OPTION
        return RunConfig(**values)
    except (ValueError, KeyError, TypeError) as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ValueError(f"{path} is not a run configuration this version reads ({reason})") from None
