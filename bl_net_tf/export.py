"""Exports a trained classifier as a TF Serving SavedModel.

``export_saved_model(model, export_dir)`` takes the Keras model as built by
:func:`bl_net_tf.create_model` (channels_first or channels_last, with or without
``include_preprocessing``, any dtype policy) and writes a channels_last float32 copy with the
signatures described in :mod:`bl_net_tf.serving.signatures`:

* ``serving_default``: ``image_bytes`` (tf.string [N]) -> evaluation preprocessing in the graph;
* ``predict_images``: ``images`` (tf.uint8 [N, size, size, 3], RGB);
* outputs ``probabilities``, ``classes`` (top-5 indices), ``scores`` (top-5 probabilities).

Command line (see docs/deployment.md)::

  python -m bl_net_tf.export --arch bl-resnet50 --alpha 2 --beta 4 \\
      --weights bl_resnet50.weights.h5 --export_dir models/bl_resnet50/1
  python -m bl_net_tf.export --arch bl-resnet50 \\
      --pytorch_checkpoint ImageNet-bLResNet-50-a2-b4.pth.tar --export_dir models/bl_resnet50/1
"""
from __future__ import annotations

import logging
import os
import shutil
import sys
import uuid
import warnings
from typing import Optional, Sequence

import keras
import tensorflow as tf

from bl_net_tf.models import create_model
from bl_net_tf.models.layers import UPSAMPLE_MODES
from bl_net_tf.models.resnet import MIN_INPUT_SIZE
from bl_net_tf.serving import cli
from bl_net_tf.serving.fold import PRECISIONS
from bl_net_tf.serving.signatures import ServingModule, serving_network

DEFAULT_IMAGE_SIZE = 224
logger = logging.getLogger(__name__)


def _image_size(model: keras.Model, image_size: Optional[int]) -> int:
    if image_size is not None:
        if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < MIN_INPUT_SIZE:
            raise ValueError(f"image_size must be an integer >= {MIN_INPUT_SIZE}, got {image_size!r}")
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
                       precision: str = "float32") -> str:
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
      precision: ``float32``, ``bfloat16`` (CPUs with AMX/AVX512-BF16) or ``float16`` (GPUs): the
        network's weights and arithmetic; inputs and outputs stay as above. BatchNorm is folded
        into the convolutions in every precision (serving/fold.py).

    Raises:
      FileExistsError: ``export_dir`` is not empty and ``overwrite`` is False.
      ValueError: not a single-output classifier, no usable image size, wrong number of names, or
        an unknown precision.
    """
    export_dir = os.path.normpath(os.fspath(export_dir))
    _check_export_dir(export_dir, overwrite)
    size = _image_size(model, image_size)
    network = serving_network(model, size, precision)
    num_classes = int(network.outputs[0].shape[-1])
    if class_names is not None and len(class_names) != num_classes:
        raise ValueError(f"got {len(class_names)} class names for a model with {num_classes} classes")
    module = ServingModule(network, size, class_names)

    parent = os.path.dirname(os.path.abspath(export_dir))
    os.makedirs(parent, exist_ok=True)
    # A dot-name is not a number, so TF Serving ignores the folder while it is being written.
    # (os.mkdir, unlike tempfile.mkdtemp, honours the umask: TF Serving may run as another user.)
    staging = os.path.join(parent, f".{os.path.basename(export_dir)}.{os.getpid()}.{uuid.uuid4().hex[:8]}")
    os.mkdir(staging)
    try:
        tf.saved_model.save(module, staging, signatures=module.signatures)
        if os.path.exists(export_dir):
            shutil.rmtree(export_dir)
        os.replace(staging, export_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    logger.info("exported %s (%d classes, %dx%d input) to %s", network.name, num_classes, size, size, export_dir)
    return export_dir


def _read_class_names(path: str) -> list:
    with open(path, encoding="utf-8") as handle:
        return [line.strip() for line in handle if line.strip()]


def _build_model(args) -> keras.Model:
    """The model the flags describe, with its trained weights, channels_last."""
    input_shape = (args.image_size, args.image_size, 3)
    if args.pytorch_checkpoint:
        from bl_net_tf.convert_pytorch import convert_checkpoint  # torch is an optional extra

        if args.upsample not in (None, "nearest"):
            raise ValueError("official PyTorch checkpoints need --upsample nearest (F.interpolate's default)")
        model = convert_checkpoint(args.pytorch_checkpoint, args.arch, args.alpha, args.beta,
                                   data_format="channels_last", input_shape=input_shape)
        if args.num_classes is not None and args.num_classes != model.output.shape[-1]:
            raise ValueError(f"--num_classes {args.num_classes} but the checkpoint has {model.output.shape[-1]} classes")
        return model
    if not os.path.isfile(args.weights):
        raise FileNotFoundError(f"no weights file {args.weights}")
    model = create_model(args.arch, alpha=args.alpha, beta=args.beta, num_classes=args.num_classes or 1000,
                         input_shape=input_shape, data_format="channels_last", upsample=args.upsample or "bilinear")
    # Keras warns once per unmatched layer before it raises; keep the one-line error readable.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            model.load_weights(args.weights)
        except ValueError as error:
            first = (str(error).strip().splitlines() or ["shape mismatch"])[0]
            raise ValueError(f"{args.weights} does not fit {args.arch} (alpha={args.alpha}, beta={args.beta}, "
                             f"num_classes={args.num_classes or 1000}): {first}") from error
    for warning in caught:
        warnings.showwarning(warning.message, warning.category, warning.filename, warning.lineno)
    return model


def _main(argv) -> None:
    parser = cli.ArgumentParser(prog="python -m bl_net_tf.export",
                                description="Exports a Big-Little Net classifier as a TF Serving SavedModel.")
    parser.add_argument("--arch", required=True, help="a name from bl_net_tf.list_models()")
    parser.add_argument("--alpha", type=int, default=2)
    parser.add_argument("--beta", type=int, default=4)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--weights", help="Keras .weights.h5 written by training or convert_pytorch")
    source.add_argument("--pytorch_checkpoint", help="official PyTorch .pth.tar (needs torch)")
    parser.add_argument("--num_classes", type=int, default=None,
                        help="classes of --weights (default 1000); a PyTorch checkpoint says its own")
    parser.add_argument("--upsample", choices=UPSAMPLE_MODES, default=None,
                        help="as trained: bilinear (default) for --weights, nearest for --pytorch_checkpoint")
    parser.add_argument("--image_size", type=int, default=DEFAULT_IMAGE_SIZE, help="network input (crop) size")
    parser.add_argument("--class_names", help="text file, one class name per line, in class-index order")
    parser.add_argument("--export_dir", required=True, help="models/<name>/<version>, version a number")
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty --export_dir")
    parser.add_argument("--precision", choices=PRECISIONS, default="float32",
                        help="bfloat16 for CPUs with AMX/AVX512-BF16, float16 for GPUs (docs/deployment.md)")
    args = parser.parse_args(argv)
    # Fail before the slow part (building the model) on what can be checked up front.
    _check_export_dir(args.export_dir, args.overwrite)
    if not os.path.basename(os.path.normpath(args.export_dir)).isdigit():
        logger.warning("TF Serving only loads numeric version folders (models/<name>/<version>); "
                        "%s does not end in one", args.export_dir)
    class_names = _read_class_names(args.class_names) if args.class_names else None
    model = _build_model(args)
    export_saved_model(model, args.export_dir, image_size=args.image_size, class_names=class_names,
                       overwrite=args.overwrite, precision=args.precision)
    print(f"exported {args.arch} to {args.export_dir}")


def main(argv=None) -> int:
    """Command-line entry point; returns the exit status."""
    return cli.run("export", _main, argv)


if __name__ == "__main__":
    logging.basicConfig(format="%(levelname)s %(message)s")  # warnings only: TF's INFO lines are noise here
    sys.exit(main())
