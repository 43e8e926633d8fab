"""The network ``python -m bl_net_tf.export`` serves, with its weights: from a training run's
model_dir (``run_config.json`` and a checkpoint), or from a Keras ``.weights.h5`` file, an official
PyTorch checkpoint or ``imagenet`` (bl_net_tf/weights.py)."""
from __future__ import annotations

import dataclasses
import os
from typing import Optional

import keras

from bl_net_tf import cli
from bl_net_tf.constants import DEFAULT_IMAGE_SIZE
from bl_net_tf.data import recipe
from bl_net_tf.models import create_model, registry, validate_model_options
from bl_net_tf.training import run_config
from bl_net_tf.training.checkpoints import find_checkpoints, restore_model_weights, restore_newest_model_weights

# The network flags, which a run's configuration is checked against: create_model's options.
MODEL_FLAGS = tuple(name for name in cli.MODEL_FLAGS if name != "image_size")


@dataclasses.dataclass(frozen=True)
class ExportSource:
    """A network to export and the serving choices that come with it."""

    model: keras.Model
    image_size: int
    eval_protocol: str
    class_names: Optional[list]
    description: str


def load(args) -> ExportSource:
    """The network that the export command's parsed flags ``args`` describe, with its weights.

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


def _resolved(model: dict) -> dict:
    """A run's network under the flags' names, resolved: ``bl-resnext50`` is ``bl-resnext50-32x4d``
    (cardinality 32, base width 4), merges None is 4, and so on."""
    options = validate_model_options(**model)
    return {**{field.name: getattr(options, field.name) for field in dataclasses.fields(options)},
            "arch": options.spec.name, "cardinality": options.spec.cardinality, "base_width": options.spec.base_width}


def _from_run(args) -> ExportSource:
    model_dir = args.model_dir or os.path.dirname(args.checkpoint)
    run = run_config.read(model_dir)
    if run.model is None:
        raise ValueError(f"{model_dir} trained a custom model (model_fn): export it from Python with "
                         f"bl_net_tf.export.export_saved_model")
    trained = _resolved(run.model)
    for name in MODEL_FLAGS:
        value = getattr(args, name)
        if value is not None and (registry.get_spec(value).name if name == "arch" else value) != trained[name]:
            raise ValueError(f"--{name}={value} contradicts the run's {name}={trained[name]} "
                             f"({os.path.join(model_dir, run_config.FILE_NAME)}); leave the flag out")
    if not args.checkpoint and not find_checkpoints(model_dir):
        raise ValueError(f"no checkpoint in {model_dir}")
    size = args.image_size or run.eval_image_size
    model = run_config.create_run_model(run.model, input_shape=(size, size, 3), data_format="channels_last")
    if args.checkpoint:
        restore_model_weights(model, args.checkpoint)
        checkpoint = args.checkpoint
    else:
        checkpoint = restore_newest_model_weights(model, model_dir)
    return ExportSource(model, size, args.eval_protocol or run.eval_protocol, run.class_names, checkpoint)


def _from_file(args, size: int) -> keras.Model:
    """``--weights`` or ``--pytorch_checkpoint`` (bl_net_tf/weights.py reads both; a PyTorch
    checkpoint's network and classes are the official code's)."""
    path = args.pytorch_checkpoint or args.weights
    options = cli.model_options(args, MODEL_FLAGS)
    options.pop("num_classes", None)  # create_model would give another number a new head; checked below
    model = create_model(args.arch, **options, input_shape=(size, size, 3), data_format="channels_last", weights=path)
    classes = model.output.shape[-1]
    if args.num_classes is not None and args.num_classes != classes:  # serving a new, untrained head is no export
        raise ValueError(f"--num_classes {args.num_classes} but {path} has {classes} classes")
    return model
