"""The network ``python -m bl_net_tf.export`` serves, with its weights: from a training run's
model_dir (``run_config.json`` and a checkpoint), or from a Keras ``.weights.h5`` file, an official
PyTorch checkpoint or ``imagenet`` (bl_net_tf/weights.py)."""
from __future__ import annotations

import dataclasses
import inspect
import os
from typing import Optional

import keras
import tensorflow as tf

from bl_net_tf.data import recipe
from bl_net_tf.models import create_model, registry
from bl_net_tf.training import run_config
from bl_net_tf.training.checkpoints import restore_model_weights

DEFAULT_IMAGE_SIZE = 224
# The network flags a run's configuration is checked against, and their values where it lacks one.
MODEL_DEFAULTS = {name: inspect.signature(create_model).parameters[name].default for name in ("alpha", "beta")}
MODEL_DEFAULTS.update(num_classes=1000, upsample="bilinear")
MODEL_FLAGS = ("arch", "alpha", "beta", "num_classes", "upsample")


@dataclasses.dataclass(frozen=True)
class ExportSource:
    """A network to export and the serving choices that come with it."""

    model: keras.Model
    image_size: int
    eval_protocol: str
    class_names: Optional[list]
    description: str


def load(args) -> ExportSource:
    """The network that the export command's ``args`` (argparse) describe, with its weights.

    Raises:
      ValueError: not exactly one source, a flag that contradicts a run's configuration, missing
        files, or weights that do not fit (one line each).
    """
    given = [flag for flag, value in (("--model_dir/--checkpoint", args.model_dir or args.checkpoint),
                                      ("--weights", args.weights), ("--pytorch_checkpoint", args.pytorch_checkpoint))
             if value]
    if len(given) != 1:
        raise ValueError(f"give one of --model_dir (or --checkpoint), --weights, --pytorch_checkpoint; got "
                         f"{', '.join(given) or 'none'}")
    if args.model_dir or args.checkpoint:
        return _from_run(args)
    if args.arch is None:
        raise ValueError(f"{given[0]} needs --arch")
    size = args.image_size or DEFAULT_IMAGE_SIZE
    protocol = args.eval_protocol or recipe.DEFAULT_EVAL_PROTOCOL
    return ExportSource(_from_file(args, size), size, protocol, None, args.arch)


def _run_value(name: str, options: dict):
    if name == "arch":
        return registry.get_spec(options["arch"], options.get("cardinality"), options.get("base_width")).name
    return options.get(name, MODEL_DEFAULTS.get(name))


def _from_run(args) -> ExportSource:
    model_dir = args.model_dir or os.path.dirname(args.checkpoint)
    run = run_config.read(model_dir)
    if run.model is None:
        raise ValueError(f"{model_dir} trained a custom model (model_fn): export it from Python with "
                         f"bl_net_tf.export.export_saved_model")
    for name in MODEL_FLAGS:
        value = getattr(args, name)
        if value is None:
            continue
        flag = registry.get_spec(value).name if name == "arch" else value
        if flag != _run_value(name, run.model):
            raise ValueError(f"--{name}={value} contradicts the run's {name}={_run_value(name, run.model)} "
                             f"({os.path.join(model_dir, run_config.FILE_NAME)}); leave the flag out")
    checkpoint = args.checkpoint or tf.train.latest_checkpoint(model_dir)
    if checkpoint is None:
        raise ValueError(f"no checkpoint in {model_dir}")
    size = args.image_size or run.eval_image_size
    model = run_config.create_run_model(run.model, input_shape=(size, size, 3), data_format="channels_last")
    restore_model_weights(model, checkpoint)
    return ExportSource(model, size, args.eval_protocol or run.eval_protocol, run.class_names, checkpoint)


def _from_file(args, size: int) -> keras.Model:
    """``--weights`` or ``--pytorch_checkpoint`` (bl_net_tf/weights.py reads both; a PyTorch
    checkpoint's network and classes are the official code's)."""
    path = args.pytorch_checkpoint or args.weights
    options = {name: getattr(args, name) for name in ("alpha", "beta", "upsample") if getattr(args, name) is not None}
    model = create_model(args.arch, **options, input_shape=(size, size, 3), data_format="channels_last", weights=path)
    classes = model.output.shape[-1]
    if args.num_classes is not None and args.num_classes != classes:  # serving a new, untrained head is no export
        raise ValueError(f"--num_classes {args.num_classes} but {path} has {classes} classes")
    return model
