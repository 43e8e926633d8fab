"""Exports a trained classifier as a TF Serving SavedModel.

``export_saved_model(model, export_dir)`` takes the Keras model as built by
:func:`bl_net_tf.create_model` (channels_first or channels_last, with or without
``include_preprocessing``, any dtype policy) and writes a channels_last float32 copy with the
signatures described in :mod:`bl_net_tf.serving.signatures`:

* ``serving_default``: ``image_bytes`` (tf.string [N]) -> the evaluation transform in the graph,
  within :class:`ServingLimits` (images per request, pixels and aspect ratio per image);
* ``predict_images``: ``images`` (tf.uint8 [N, size, size, 3], RGB);
* outputs ``probabilities``, ``classes`` (top-5 indices), ``scores`` (top-5 probabilities) and,
  with class names, ``class_names``;

plus TF Serving's warm-up requests (``assets.extra/tf_serving_warmup_requests``).

Command line, ``bl-net-export`` (``python -m bl_net_tf.export``; docs/deployment.md)::

  bl-net-export --model_dir=train_log/bl-resnet50-a2-b4 --export_dir=models/bl_resnet50/1
  bl-net-export --arch=bl-resnet50 --pytorch_checkpoint=ImageNet-bLResNet-50-a2-b4.pth.tar \\
      --export_dir=models/bl_resnet50/1
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import sys
import uuid
from typing import Optional, Sequence

import keras
import tensorflow as tf
from absl import flags

from bl_net_tf import cli
from bl_net_tf.constants import DEFAULT_IMAGE_SIZE, SERVING_PRECISIONS, check_choice, check_positive_int
from bl_net_tf.data import recipe
from bl_net_tf.data.headers import DEFAULT_MAX_ASPECT_RATIO, DEFAULT_MAX_PIXELS
from bl_net_tf.models.families import check_image_size
from bl_net_tf.serving import sources, warmup
from bl_net_tf.serving.preprocess import DEFAULT_MAX_BATCH, ServingLimits
from bl_net_tf.serving.signatures import ServingModule, serving_network

# What the export was made with, for people and tools (TF Serving ignores it).
SETTINGS_FILE = "bl_net_tf_export.json"
logger = logging.getLogger(__name__)


def _image_size(model: keras.Model, image_size: Optional[int]) -> int:
    if image_size is not None:
        check_image_size((check_positive_int("image_size", image_size),) * 2)
        return image_size
    height, width = model.inputs[0].shape[1:3]
    if height is None or height != width:
        raise ValueError(f"the model's input is {height}x{width}: pass image_size (square) to export it")
    return int(height)


def _check_export_dir(export_dir: str, overwrite: bool) -> None:
    if os.path.exists(export_dir) and not overwrite and not (os.path.isdir(export_dir) and not os.listdir(export_dir)):
        raise FileExistsError(f"export_dir {export_dir} is not empty; pass overwrite=True (--overwrite) to replace it")


def export_saved_model(model: keras.Model, export_dir: str, *, image_size: Optional[int] = None,
                       class_names: Optional[Sequence[str]] = None, overwrite: bool = False,
                       eval_protocol: str = recipe.DEFAULT_EVAL_PROTOCOL,
                       limits: ServingLimits = ServingLimits(), precision: str = "float32") -> str:
    """Writes ``model`` as a SavedModel for TF Serving and returns ``export_dir``.

    Args:
      model: a functional classifier from :func:`bl_net_tf.create_model` (logits output). Its
        data format, dtype policy and ``include_preprocessing`` do not matter: the export is a
        channels_last float32 copy (weights copied by layer name) that takes RGB in [0, 255] and
        normalises inside the graph.
      export_dir: ``<base>/<name>/<version>``; TF Serving loads numeric version folders. The
        SavedModel is written next to it first and moved in place when complete, so a server
        watching ``<name>`` never sees half a version.
      image_size: the network's input size (the crop of ``serving_default``); default: the
        model's own static square input size.
      class_names: one name per class; adds a ``class_names`` output (the top-5 names).
      overwrite: replace a non-empty ``export_dir``.
      eval_protocol: how ``serving_default`` resizes before its centre crop
        (``bl_net_tf.data.recipe.EVAL_PROTOCOLS``).
      limits: what one request may hold (docs/deployment.md).
      precision: ``float32``, ``bfloat16`` (CPUs with AMX/AVX512-BF16) or ``float16`` (GPUs): the
        network's weights and arithmetic; inputs and outputs stay as above. BatchNorm is folded
        into the convolutions in every precision (serving/fold.py).

    Raises:
      FileExistsError: ``export_dir`` is not empty and ``overwrite`` is False.
      ValueError: not a single-output classifier, no usable image size, wrong number of names, or
        an unknown protocol or precision.
    """
    export_dir = os.path.normpath(os.fspath(export_dir))
    _check_export_dir(export_dir, overwrite)
    recipe.check_eval_protocol(eval_protocol)
    check_choice("precision", precision, SERVING_PRECISIONS)
    size = _image_size(model, image_size)
    network = serving_network(model, size, precision)
    num_classes = int(network.outputs[0].shape[-1])
    if class_names is not None and len(class_names) != num_classes:
        raise ValueError(f"got {len(class_names)} class names for a model with {num_classes} classes")
    module = ServingModule(network, size, class_names, eval_protocol=eval_protocol, limits=limits)

    parent = os.path.dirname(os.path.abspath(export_dir))
    os.makedirs(parent, exist_ok=True)
    # A dot-name is not a number, so TF Serving ignores the folder while it is being written.
    # (os.mkdir, unlike tempfile.mkdtemp, honours the umask: TF Serving may run as another user.)
    staging = os.path.join(parent, f".{os.path.basename(export_dir)}.{os.getpid()}.{uuid.uuid4().hex[:8]}")
    os.mkdir(staging)
    try:
        # TF's signature code logs (absl, INFO) every captured input of every signature by its
        # numeric name, hundreds of numbers per line for a ResNet: nothing a user can act on.
        absl_logger = logging.getLogger("absl")
        level = absl_logger.level
        absl_logger.setLevel(max(level, logging.WARNING))
        try:
            tf.saved_model.save(module, staging, signatures=module.signatures)
        finally:
            absl_logger.setLevel(level)
        warmup.write(staging, size)
        settings = {"image_size": size, "eval_protocol": eval_protocol, "num_classes": num_classes,
                    "class_names": class_names is not None, "precision": precision, **vars(limits)}
        with open(os.path.join(staging, "assets.extra", SETTINGS_FILE), "w", encoding="utf-8") as handle:
            handle.write(json.dumps(settings, indent=1) + "\n")
        if os.path.exists(export_dir):
            shutil.rmtree(export_dir)
        os.replace(staging, export_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    logger.info("exported %s (%d classes, %dx%d input, %s) to %s", network.name, num_classes, size, size,
                limits, export_dir)
    return export_dir


PROG = "bl-net-export"
# The export's own flags, name -> (kind, help), as bl_net_tf.cli.define takes them.
FLAGS_SPEC = {
    "model_dir": (str, "What to export (one of --model_dir, --checkpoint, --weights, --pytorch_checkpoint): a "
                       "train_imagenet.py run, its run_config.json and newest restorable checkpoint."),
    "checkpoint": (str, "Another checkpoint of that run (e.g. M/ckpt-5000); implies --model_dir = its folder."),
    "weights": (str, "Keras .weights.h5 (e.g. from bl-net-convert), or imagenet: the official checkpoint of --arch "
                     "(docs/deployment.md); needs --arch."),
    "pytorch_checkpoint": (str, "Official PyTorch .pth.tar (needs torch); needs --arch."),
    "eval_protocol": (recipe.EVAL_PROTOCOLS, f"How serving_default resizes before the centre crop (docs/data.md). "
                                             f"Unset: the run's, else {recipe.DEFAULT_EVAL_PROTOCOL}."),
    "class_names": (str, "Text file, one class name per line, in class-index order. Unset: the run's (its class "
                         "folders, TFDS's label names or the TFRecords' synsets)."),
    "max_batch": (int, "Images per request (docs/deployment.md)."),
    "max_pixels": (int, "Width x height of an image."),
    "max_aspect_ratio": (float, "Longer side / shorter side of an image."),
    "precision": (SERVING_PRECISIONS, "The dtype the exported network computes in (its weights and arithmetic; "
                                      "inputs and outputs do not change): bfloat16 for CPUs with AMX/AVX512-BF16, "
                                      "float16 for GPUs (docs/deployment.md). Not --mixed_precision, the policy a "
                                      "model trains under."),
    "export_dir": (str, "models/<name>/<version>, the version a number (TF Serving loads those)."),
    "overwrite": (bool, "Replace a non-empty --export_dir."),
}
_DEFAULTS = dict(model_dir=None, checkpoint=None, weights=None, pytorch_checkpoint=None, eval_protocol=None,
                 class_names=None, max_batch=DEFAULT_MAX_BATCH, max_pixels=DEFAULT_MAX_PIXELS,
                 max_aspect_ratio=DEFAULT_MAX_ASPECT_RATIO, precision=SERVING_PRECISIONS[0], export_dir=None,
                 overwrite=False)
_NOTES = {name: "Unset: the run's with --model_dir (a flag that contradicts it is an error), else create_model's "
                "default." for name in sources.MODEL_FLAGS}
_NOTES["image_size"] = f"Unset: the run's evaluation size, else {DEFAULT_IMAGE_SIZE}."
_NOTES["num_classes"] = "Unset: the run's with --model_dir, else the weights' own."
_NOTES["upsample"] = ("Unset: the run's with --model_dir, else what the weights need (nearest for the official "
                      "ones), else bilinear.")


def define_flags(flag_values: flags.FlagValues) -> None:
    """The export's flags: the model options (bl_net_tf/cli.py), unset by default, and its own."""
    cli.define_shared(flag_values, dict.fromkeys(cli.MODEL_FLAGS), _NOTES)
    cli.define(flag_values, FLAGS_SPEC, _DEFAULTS)
    flags.mark_flag_as_required("export_dir", flag_values=flag_values)


def _read_class_names(path: str) -> list:
    with open(path, encoding="utf-8") as handle:
        return [line.strip() for line in handle if line.strip()]


def run(args: flags.FlagValues) -> int:
    """Exports what the parsed flags say."""
    # Fail before the slow part (building the model) on what can be checked up front.
    limits = ServingLimits(args.max_batch, args.max_pixels, args.max_aspect_ratio)
    _check_export_dir(args.export_dir, args.overwrite)
    if not os.path.basename(os.path.normpath(args.export_dir)).isdigit():
        logger.warning("TF Serving only loads numeric version folders (models/<name>/<version>); "
                        "%s does not end in one", args.export_dir)
    source = sources.load(args)
    class_names = _read_class_names(args.class_names) if args.class_names else source.class_names
    export_saved_model(source.model, args.export_dir, image_size=source.image_size, class_names=class_names,
                       eval_protocol=source.eval_protocol, limits=limits, overwrite=args.overwrite,
                       precision=args.precision)
    print(f"exported {source.description} to {args.export_dir} ({source.image_size}x{source.image_size}, "
          f"{args.precision}, {source.eval_protocol} protocol, max_batch={limits.max_batch}, "
          f"max_pixels={limits.max_pixels}, max_aspect_ratio={limits.max_aspect_ratio:g})")
    return cli.OK


def main(argv=None) -> int:
    """The console script: runs the command on ``argv`` (default ``sys.argv[1:]``); returns the exit status."""
    return cli.main(PROG, __doc__, define_flags, run, argv)


if __name__ == "__main__":
    sys.exit(main())
