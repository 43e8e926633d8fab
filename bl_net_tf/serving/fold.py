"""The serving network's arithmetic: BatchNorm folded into the convolutions, and its precision.

After training, a BatchNorm is a fixed per-channel scale and shift, so a convolution followed by
one equals a convolution with a rescaled kernel and a bias:

    gamma * (conv(x, W) + b - mean) / sqrt(var + eps) + beta  =  conv(x, W * s) + (b - mean) * s + beta,
    s = gamma / sqrt(var + eps)   (one factor per output channel).

:func:`fold_batch_norm` rewrites a functional model that way: each convolution that feeds a
BatchNorm and nothing else gets ``use_bias=True`` and the folded weights, and the BatchNorm becomes
an ``Identity`` layer of the same name (the graph's wiring and every layer name stay). In the
served graph TensorFlow's remapper then fuses each convolution with its bias, the residual or merge
addition and the ReLU into one oneDNN (CPU) or cuDNN (GPU) convolution, which it cannot do with a
BatchNorm in between. Pairs are found from the functional graph, not from layer names, so every
family folds: dense, grouped and depthwise convolutions alike.

The same rebuild sets the precision: ``float32``; ``bfloat16`` for CPUs with AMX or AVX512-BF16
(oneDNN's bf16 kernels); ``float16`` for GPUs (Tensor Cores). Weights are stored and computed in
that type, the BatchNorm having gone into them first (folding happens in float64); the caller
casts the logits back to float32 (see signatures.py). Training graphs never pass through here.
"""
from __future__ import annotations

import collections
from typing import Optional

import keras
import numpy as np

from bl_net_tf.constants import SERVING_PRECISIONS, check_choice

# Convolutions whose kernel is (*spatial, in / groups, out): the output channel is the last axis.
_CONVS = (keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D)
# Depthwise convolutions: kernel (*spatial, in, multiplier); output channel c * multiplier + m.
_DEPTHWISE = (keras.layers.DepthwiseConv1D, keras.layers.DepthwiseConv2D)


def _history_refs(structure):
    """The ``keras_history`` ([layer, node, tensor]) of every tensor in a node's serialised args."""
    if isinstance(structure, dict):
        if structure.get("class_name") == "__keras_tensor__":
            yield tuple(structure["config"]["keras_history"])
            return
        for value in structure.values():
            yield from _history_refs(value)
    elif isinstance(structure, (list, tuple)):
        for value in structure:
            yield from _history_refs(value)


def _channel_axis(conv) -> int:
    rank = len(conv.kernel_size) + 2
    return 1 if conv.data_format == "channels_first" else rank - 1


def batch_norm_pairs(model: keras.Model, config: Optional[dict] = None) -> dict:
    """``{batch_norm_name: conv_name}`` for every BatchNorm of ``model`` (top level) whose one input
    is the output of a linear (no activation) convolution that nothing else reads. ``config`` is
    ``model.get_config()``, if the caller has it already."""
    config = model.get_config() if config is None else config
    readers = collections.Counter(_history_refs([layer["inbound_nodes"] for layer in config["layers"]]))
    readers.update(_history_refs(config["output_layers"]))
    nodes = {layer["name"]: layer["inbound_nodes"] for layer in config["layers"]}
    pairs = {}
    for layer in model.layers:
        if not isinstance(layer, keras.layers.BatchNormalization) or len(nodes[layer.name]) != 1:
            continue
        refs = list(_history_refs(nodes[layer.name][0]))
        if len(refs) != 1 or readers[refs[0]] != 1 or len(nodes[refs[0][0]]) != 1:
            continue
        conv = model.get_layer(refs[0][0])
        if (isinstance(conv, _CONVS + _DEPTHWISE) and conv.activation is keras.activations.linear
                and layer.axis % len(conv.output.shape) == _channel_axis(conv)):
            pairs[layer.name] = conv.name
    return pairs


def folded_weights(conv, batch_norm) -> list:
    """``[kernel, bias]`` of ``conv`` with ``batch_norm`` (inference mode) folded in, as float64."""
    mean = np.asarray(batch_norm.moving_mean, np.float64)
    variance = np.asarray(batch_norm.moving_variance, np.float64)
    gamma = np.asarray(batch_norm.gamma, np.float64) if batch_norm.scale else np.ones_like(mean)
    beta = np.asarray(batch_norm.beta, np.float64) if batch_norm.center else np.zeros_like(mean)
    scale = gamma / np.sqrt(variance + batch_norm.epsilon)
    kernel = np.asarray(conv.kernel, np.float64)
    bias = np.asarray(conv.bias, np.float64) if conv.use_bias else np.zeros_like(mean)
    if isinstance(conv, _DEPTHWISE):
        kernel = kernel * scale.reshape(kernel.shape[-2:])
    else:
        kernel = kernel * scale
    return [kernel, (bias - mean) * scale + beta]


def fold_batch_norm(model: keras.Model, *, precision: str = "float32") -> keras.Model:
    """A functional copy of ``model`` with every foldable BatchNorm folded into its convolution
    (see the module docstring) and all layers in ``precision``; for inference only.

    Raises:
      ValueError: ``model`` is not a functional channels_last model, or an unknown precision.
    """
    check_choice("precision", precision, SERVING_PRECISIONS)
    config = model.get_config() if isinstance(model, keras.Model) else {}
    if "input_layers" not in config:
        raise ValueError(f"BatchNorm folding needs a functional Keras model, got {type(model).__name__}")
    pairs = batch_norm_pairs(model, config)
    folded_convs = set(pairs.values())
    if any(model.get_layer(name).data_format == "channels_first" for name in folded_convs):
        # Keras 3's ops.add takes a (1, C, 1, 1) bias for a channels_last one when an NCHW map is
        # as wide as it has channels, and adds it along the width (keras/src/backend/tensorflow/numpy.py).
        raise ValueError("BatchNorm folding needs a channels_last model: fold the copy that "
                         "bl_net_tf.serving.layout.channels_last_copy makes")
    for layer_config in config["layers"]:
        name = layer_config["name"]
        layer_config.pop("build_config", None)
        if name in pairs:
            layer_config.update(class_name="Identity", module="keras.layers", registered_name=None)
            layer_config["config"] = {"name": name, "trainable": False}
            for node in layer_config["inbound_nodes"]:
                node["kwargs"] = {}  # BatchNorm's `mask`/`training`: Identity takes none
        elif name in folded_convs:
            layer_config["config"]["use_bias"] = True
        if layer_config["class_name"] != "InputLayer":  # the inputs keep their dtype; layers cast
            layer_config["config"]["dtype"] = precision
    result = keras.Model.from_config(config)
    batch_norms = {conv: model.get_layer(bn) for bn, conv in pairs.items()}
    for layer in result.layers:
        if layer.name in batch_norms:
            source = folded_weights(model.get_layer(layer.name), batch_norms[layer.name])
        elif layer.weights:
            source = model.get_layer(layer.name).get_weights()
        else:
            continue
        layer.set_weights([np.asarray(w, np.float32) for w in source])
    return result
