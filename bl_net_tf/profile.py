"""Parameter and multiply-accumulate counts, the way the paper's tables count them."""
from __future__ import annotations

import keras
from keras import layers


def _layer_macs(layer) -> int:
    if isinstance(layer, layers.Conv2D):  # DepthwiseConv2D is not a Conv2D subclass in Keras 3
        kh, kw = layer.kernel_size
        out = layer.output.shape
        spatial = out[2] * out[3] if layer.data_format == "channels_first" else out[1] * out[2]
        in_channels = layer.kernel.shape[2] * layer.groups  # kernel is (kh, kw, in/groups, out)
        return int(spatial) * layer.filters * kh * kw * in_channels // layer.groups
    if isinstance(layer, layers.DepthwiseConv2D):
        kh, kw = layer.kernel_size
        out = layer.output.shape
        spatial = out[2] * out[3] if layer.data_format == "channels_first" else out[1] * out[2]
        return int(spatial) * layer.kernel.shape[2] * layer.depth_multiplier * kh * kw
    if isinstance(layer, layers.Dense):
        return int(layer.kernel.shape[0] * layer.kernel.shape[1])
    return 0


def count_macs(model: keras.Model) -> int:
    """Multiply-accumulates of the conv and fully-connected layers for one image (the paper's
    "FLOPs"); a grouped conv counts 1/groups of a dense one. Needs static spatial shapes."""
    return sum(_layer_macs(layer) for layer in model.layers)


def count_params(model: keras.Model) -> int:
    """Trainable parameters (BN's moving statistics excluded, as the paper and PyTorch count)."""
    return int(sum(v.shape.num_elements() if hasattr(v.shape, "num_elements") else int(__import__("numpy").prod(v.shape))
                   for v in model.trainable_weights))
