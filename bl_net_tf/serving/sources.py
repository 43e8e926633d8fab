"""The network ``python -m bl_net_tf.export`` serves, with its weights: from a training run's
model_dir (``run_config.json`` and a checkpoint), a Keras ``.weights.h5`` file or an official
PyTorch checkpoint."""
from __future__ import annotations

import dataclasses
import inspect
import os
import warnings
from typing import Optional

import keras
import tensorflow as tf

from bl_net_tf.data import recipe
from bl_net_tf.models import create_model, registry
from bl_net_tf.training import run_config
from bl_net_tf.training.checkpoints import restore_model_weights

DEFAULT_IMAGE_SIZE = 224
# The network flags: their defaults without a run, and what a run's configuration is checked against.
MODEL_DEFAULTS = {name: inspect.signature(create_model).parameters[name].default
                  for name in ("alpha", "beta", "upsample")}
MODEL_DEFAULTS["num_classes"] = 1000
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
    if args.pytorch_checkpoint:
        return ExportSource(_from_pytorch(args, size), size, protocol, None, args.arch)
    return ExportSource(_from_weights(args, size), size, protocol, None, args.arch)


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


def _flag(args, name: str):
    value = getattr(args, name)
    return MODEL_DEFAULTS[name] if value is None else value


def _from_pytorch(args, size: int) -> keras.Model:
    from bl_net_tf.convert_pytorch import convert_checkpoint  # torch is an optional extra

    if args.upsample not in (None, "nearest"):
        raise ValueError("official PyTorch checkpoints need --upsample nearest (F.interpolate's default)")
    model = convert_checkpoint(args.pytorch_checkpoint, args.arch, _flag(args, "alpha"), _flag(args, "beta"),
                               data_format="channels_last", input_shape=(size, size, 3))
    if args.num_classes is not None and args.num_classes != model.output.shape[-1]:
        raise ValueError(f"--num_classes {args.num_classes} but the checkpoint has {model.output.shape[-1]} classes")
    return model


def _from_weights(args, size: int) -> keras.Model:
    if not os.path.isfile(args.weights):
        raise FileNotFoundError(f"no weights file {args.weights}")
    alpha, beta, num_classes = _flag(args, "alpha"), _flag(args, "beta"), _flag(args, "num_classes")
    model = create_model(args.arch, alpha=alpha, beta=beta, num_classes=num_classes, input_shape=(size, size, 3),
                         data_format="channels_last", upsample=_flag(args, "upsample"))
    # Keras warns once per unmatched layer before it raises; keep the one-line error readable.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            model.load_weights(args.weights)
        except ValueError as error:
            first = (str(error).strip().splitlines() or ["shape mismatch"])[0]
            raise ValueError(f"{args.weights} does not fit {args.arch} (alpha={alpha}, beta={beta}, "
                             f"num_classes={num_classes}): {first}") from error
    for warning in caught:
        warnings.showwarning(warning.message, warning.category, warning.filename, warning.lineno)
    return model
