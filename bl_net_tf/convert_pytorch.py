"""Converts the official PyTorch Big-Little Net checkpoints (IBM/BigLittleNet) to Keras.

The official release trained bL-ResNet-50/101, bL-ResNeXt-50/101 (32x4d, 64x4d) and
bL-SEResNeXt-50/101 with α=2, β=4; its checkpoints are ``torch.save`` dicts whose
``state_dict`` was taken from a ``DataParallel`` model (keys start with ``module.``). A bare state
dict is accepted too. The Keras model is built with ``upsample="nearest"``, which is what the
official code's ``F.interpolate`` does, and then gives the PyTorch model's logits for the same
normalised input.

Name contract (:func:`pytorch_name`; the Keras names are listed in ``models/resnet.py``)::

  stem_conv, stem_bn                      conv1, bn1
  stage1_big_conv, stage1_big_bn          b_conv0, bn_b0
  stage1_little_conv{i}, _bn{i}           l_conv{i-1}, bn_l{i-1}
  stage1_fusion_conv, stage1_fusion_bn    bl_init, bn_bl_init
  stage{n}_{big,little,fusion}_block{j}_  layer{n-1}.{big,little,fusion}.{j-1}.   (n = 2, 3, 4)
  stage{n}_little_expand_conv, _bn        layer{n-1}.little_e.0, layer{n-1}.little_e.1
  stage5_block{j}_                        layer4.{j-1}.
  head_fc                                 fc
  inside a block: conv{k}, bn{k} -> conv{k}, bn{k}; se_reduce, se_expand -> se_layer.fc1,
  se_layer.fc2; shortcut_conv, shortcut_bn -> downsample.1, downsample.2 when the block's
  shortcut starts with an average pool (a strided block), else downsample.0, downsample.1.

Command line, ``bl-net-convert`` (``python -m bl_net_tf.convert_pytorch``)::

  bl-net-convert --checkpoint=ImageNet-bLResNet-50-a2-b4.pth.tar --arch=bl-resnet50 --alpha=2 --beta=4 \\
      --output=bl_resnet50.weights.h5
"""
from __future__ import annotations

import re
import sys
from typing import Mapping, Optional

import keras
import numpy as np
from absl import flags

from bl_net_tf import cli
from bl_net_tf.models import create_model, registry
from bl_net_tf.training.checkpoints import first_line
from bl_net_tf.weights import OFFICIAL_NETWORK

# DataParallel's prefix on every key of the official checkpoints.
_DATA_PARALLEL_PREFIX = "module."
# BatchNorm's step counter: not a weight, Keras has no counterpart.
_IGNORED_SUFFIX = ".num_batches_tracked"
# How many names an error message lists per kind of mismatch.
_LISTED = 8

_STEM = {"stem_conv": "conv1", "stem_bn": "bn1", "stage1_big_conv": "b_conv0", "stage1_big_bn": "bn_b0",
         "stage1_fusion_conv": "bl_init", "stage1_fusion_bn": "bn_bl_init", "head_fc": "fc"}
_BLOCK_PARTS = {"se_reduce": "se_layer.fc1", "se_expand": "se_layer.fc2"}
_LITTLE_STEM = re.compile(r"stage1_little_(conv|bn)(\d)")
_EXPAND = re.compile(r"stage([234])_little_expand_(conv|bn)")
_BL_BLOCK = re.compile(r"stage([234])_(big|little|fusion)_block(\d+)_(\w+)")
_LAST_BLOCK = re.compile(r"stage5_block(\d+)_(\w+)")
_PART = re.compile(r"(conv|bn)[123]|se_reduce|se_expand|shortcut_conv|shortcut_bn")


def _block_part(part: str, pooled_shortcut: bool) -> Optional[str]:
    if not _PART.fullmatch(part):
        return None
    if part.startswith("shortcut_"):
        # The official downsample is Sequential([AvgPool]?, Conv, BN): the pool shifts the indices.
        index = (1 if pooled_shortcut else 0) + (part == "shortcut_bn")
        return f"downsample.{index}"
    return _BLOCK_PARTS.get(part, part)


def pytorch_name(layer_name: str, *, pooled_shortcut: bool = False) -> str:
    """The official PyTorch module path of the Keras layer ``layer_name`` (the table above).

    ``pooled_shortcut`` tells whether the layer's block has a ``{block}_shortcut_pool`` layer;
    it matters for ``*_shortcut_conv`` / ``*_shortcut_bn`` only.

    Raises:
      ValueError: the layer has no counterpart in the official models.
    """
    if layer_name in _STEM:
        return _STEM[layer_name]
    match = _LITTLE_STEM.fullmatch(layer_name)
    if match and 1 <= int(match[2]) <= 3:
        kind, index = match[1], int(match[2]) - 1
        return f"l_conv{index}" if kind == "conv" else f"bn_l{index}"
    match = _EXPAND.fullmatch(layer_name)
    if match:
        return f"layer{int(match[1]) - 1}.little_e.{0 if match[2] == 'conv' else 1}"
    match = _BL_BLOCK.fullmatch(layer_name)
    if match and _block_part(match[4], pooled_shortcut):
        stage, branch, block = int(match[1]), match[2], int(match[3])
        return f"layer{stage - 1}.{branch}.{block - 1}.{_block_part(match[4], pooled_shortcut)}"
    match = _LAST_BLOCK.fullmatch(layer_name)
    if match and _block_part(match[2], pooled_shortcut):
        return f"layer4.{int(match[1]) - 1}.{_block_part(match[2], pooled_shortcut)}"
    raise ValueError(f"Keras layer {layer_name!r} has no counterpart in the official PyTorch models")


def _variables(layer) -> dict:
    """``{torch parameter suffix: Keras variable}`` for a layer with weights."""
    if isinstance(layer, keras.layers.BatchNormalization):
        return {"weight": layer.gamma, "bias": layer.beta, "running_mean": layer.moving_mean,
                "running_var": layer.moving_variance}
    if isinstance(layer, (keras.layers.Conv2D, keras.layers.Dense)):
        return {"weight": layer.kernel, **({"bias": layer.bias} if layer.use_bias else {})}
    raise ValueError(f"cannot convert layer {layer.name!r} of type {type(layer).__name__}")


def _to_keras(value: np.ndarray, rank: int) -> np.ndarray:
    """PyTorch layout -> Keras layout: conv (out, in/groups, kh, kw) -> (kh, kw, in/groups, out);
    linear (out, in) -> (in, out); vectors unchanged."""
    if rank == 4:
        return np.transpose(value, (2, 3, 1, 0))
    if rank == 2:
        return value.T
    return value


def _torch_shape(keras_shape: tuple) -> tuple:
    if len(keras_shape) == 4:
        return tuple(keras_shape[i] for i in (3, 2, 0, 1))
    return tuple(reversed(keras_shape))


def state_dict_targets(model: keras.Model) -> dict:
    """``{official state-dict key: Keras variable}`` for every weight of ``model``."""
    names = {layer.name for layer in model.layers}
    targets = {}
    for layer in model.layers:
        if not layer.weights:
            continue
        block = layer.name.rsplit("_shortcut_", 1)[0]
        module = pytorch_name(layer.name, pooled_shortcut=f"{block}_shortcut_pool" in names)
        for suffix, variable in _variables(layer).items():
            targets[f"{module}.{suffix}"] = variable
    return targets


def _listing(label: str, items: list) -> str:
    more = f", ... ({len(items) - _LISTED} more)" if len(items) > _LISTED else ""
    return f"{len(items)} {label}: {', '.join(items[:_LISTED])}{more}"


def _check_keys(state_dict: Mapping, targets: dict, what: str) -> None:
    # In network order, so that the first names listed are where the two models part ways.
    missing = [key for key in targets if key not in state_dict]
    unexpected = [key for key in state_dict if key not in targets]
    misshaped = [f"{key} {tuple(state_dict[key].shape)} vs {_torch_shape(tuple(variable.shape))}"
                 for key, variable in targets.items()
                 if key in state_dict and tuple(state_dict[key].shape) != _torch_shape(tuple(variable.shape))]
    problems = [_listing(label, items) for label, items in
                (("missing", missing), ("unexpected", unexpected), ("mis-shaped (checkpoint vs model)", misshaped))
                if items]
    if problems:
        raise ValueError(f"checkpoint does not match {what}: {'; '.join(problems)}")


def _strip(state_dict: Mapping) -> dict:
    return {(key[len(_DATA_PARALLEL_PREFIX):] if key.startswith(_DATA_PARALLEL_PREFIX) else key): value
            for key, value in state_dict.items() if not key.endswith(_IGNORED_SUFFIX)}


def convert_state_dict(state_dict: Mapping[str, np.ndarray], arch: str, alpha: int = 2, beta: int = 4,
                       data_format: Optional[str] = None, input_shape=None) -> keras.Model:
    """Builds ``arch`` as the official code does (``weights.OFFICIAL_NETWORK``; no in-graph
    preprocessing) with the weights of an official state dict given as NumPy arrays; see
    :func:`convert_checkpoint`."""
    spec = registry.get_spec(arch)
    if not spec.big_little:
        raise ValueError(f"the official release has Big-Little models only; {arch!r} is not one "
                         f"(allowed: {', '.join(n for n in registry.list_models() if n.startswith('bl-'))})")
    state_dict = _strip(state_dict)
    fc = state_dict.get("fc.weight")
    num_classes = int(fc.shape[0]) if fc is not None and len(fc.shape) == 2 else None  # the family's
    model = create_model(arch, alpha=alpha, beta=beta, num_classes=num_classes, input_shape=input_shape,
                         data_format=data_format, **OFFICIAL_NETWORK)
    targets = state_dict_targets(model)
    _check_keys(state_dict, targets, f"{arch} (alpha={alpha}, beta={beta})")
    for key, variable in targets.items():
        value = np.asarray(state_dict[key], dtype=np.float32)
        variable.assign(_to_keras(value, value.ndim))
    return model


def load_state_dict(path: str) -> dict:
    """Reads a PyTorch checkpoint (a dict with ``state_dict``, or a bare state dict) into
    ``{key: float32 array}`` with torch, imported here because it is an optional dependency.

    Raises:
      ImportError: torch is not installed.
      FileNotFoundError: no file at ``path``.
      ValueError: the file is not a readable PyTorch checkpoint or holds no state dict.
    """
    try:
        import torch
    except ImportError as error:
        raise ImportError("converting PyTorch checkpoints needs torch: pip install 'bl-net-tf[convert]'") from error
    with open(path, "rb"):  # a missing file is a FileNotFoundError, not "unreadable"
        pass
    try:
        # weights_only: a checkpoint from the internet must not run code when unpickled.
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises RuntimeError, EOFError, UnpicklingError, ... here
        raise ValueError(f"cannot read PyTorch checkpoint {path} (truncated or not a checkpoint?): "
                         f"{first_line(error)}") from error
    if isinstance(checkpoint, Mapping) and isinstance(checkpoint.get("state_dict"), Mapping):
        checkpoint = checkpoint["state_dict"]
    if not isinstance(checkpoint, Mapping) or not checkpoint or not all(
            isinstance(value, torch.Tensor) for value in checkpoint.values()):
        raise ValueError(f"{path} holds neither a state dict nor a dict with a 'state_dict' entry")
    return {key: value.detach().cpu().float().numpy() for key, value in checkpoint.items()}


def convert_checkpoint(path: str, arch: str, alpha: int = 2, beta: int = 4, data_format: Optional[str] = None,
                       input_shape=None) -> keras.Model:
    """Builds ``arch`` with the weights of an official PyTorch checkpoint.

    Args:
      path: a ``.pth.tar`` of the official release, or any file holding such a state dict.
      arch: a Big-Little name from :func:`bl_net_tf.list_models`, e.g. ``bl-resnext101-64x4d``.
      alpha, beta: as the checkpoint was trained (the official ones: 2 and 4).
      data_format, input_shape: passed to :func:`bl_net_tf.create_model`. The number of classes
        comes from the checkpoint's ``fc.weight``.

    Returns:
      A Keras model (``upsample="nearest"``, inputs ImageNet-normalised NHWC RGB) giving the
      PyTorch model's logits.

    Raises:
      ValueError: unreadable file, or keys that are missing, unexpected or of the wrong shape for
        ``arch`` (all listed in one message).
    """
    return convert_state_dict(load_state_dict(path), arch, alpha, beta, data_format, input_shape)


PROG = "bl-net-convert"
FLAGS_SPEC = {
    "checkpoint": (str, "The official .pth.tar (or a bare state dict)."),
    "output": (str, "The Keras weights file to write, ending in .weights.h5 (load it into "
                    "create_model(..., upsample='nearest'))."),
}


def define_flags(flag_values: flags.FlagValues) -> None:
    """``--checkpoint``, ``--arch``, ``--alpha``, ``--beta`` (the official ones: 2 and 4), ``--output``."""
    cli.define(flag_values, FLAGS_SPEC, dict.fromkeys(FLAGS_SPEC))
    cli.define_shared(flag_values, cli.model_defaults("arch", "alpha", "beta"),
                      {"arch": "A Big-Little arch of the official release: bl-resnet50/101, bl-resnext50/101 "
                               "(32x4d, 64x4d), bl-seresnext50/101."})
    flags.mark_flags_as_required(["checkpoint", "arch", "output"], flag_values=flag_values)


def run(args: flags.FlagValues) -> int:
    """Converts what the parsed flags say."""
    if not args.output.endswith(".weights.h5"):
        raise cli.UsageError(f"--output must end in .weights.h5, got {args.output!r}")
    model = convert_checkpoint(args.checkpoint, args.arch, args.alpha, args.beta, data_format="channels_last")
    model.save_weights(args.output)
    print(f"wrote {args.output} ({model.name}, {model.output.shape[-1]} classes, upsample=nearest)")
    return cli.OK


def main(argv=None) -> int:
    """The console script: runs the command on ``argv`` (default ``sys.argv[1:]``); returns the exit status."""
    return cli.main(PROG, __doc__, define_flags, run, argv)


if __name__ == "__main__":
    sys.exit(main())
