"""Layer helpers shared by every family: conv+BN with the paper's settings, PyTorch-exact padding,
resizing one feature map onto another's grid, and in-graph ImageNet normalisation.

All helpers take a :class:`LayerContext` instead of reading global state, so one process can build
a channels_first GPU model and a channels_last export model side by side.
"""
from __future__ import annotations

import dataclasses

import keras
from keras import layers, ops

from bl_net_tf.constants import UPSAMPLE_MODES, check_choice
from bl_net_tf.models import batch_norm as fused_batch_norm
from bl_net_tf.models import grouped_conv

# Tensorpack's and the official release's BatchNorm: running averages decay 0.9, epsilon 1e-5.
# Keras's defaults (0.99, 1e-3) make short runs and fine-tuning noticeably worse.
BN_MOMENTUM = 0.9
BN_EPSILON = 1e-5

# ImageNet statistics in RGB order, for images in [0, 255].
IMAGENET_MEAN_RGB = (0.485 * 255, 0.456 * 255, 0.406 * 255)
IMAGENET_STD_RGB = (0.229 * 255, 0.224 * 255, 0.225 * 255)

# The dtype of the layers that make the logits. Under a mixed policy (mixed_float16/bfloat16) the rest
# of a network computes in 16 bits; the logits, the softmax and the loss stay float32 (Micikevicius et
# al. 2018; Keras's mixed-precision guide): a 1000-way (speech: 32,000-way) softmax in float16 loses
# the small probabilities, and the FC layer is a negligible share of the FLOPs.
LOGITS_DTYPE = "float32"

# He-normal over fan-out, as the official release (kaiming_normal_, mode="fan_out") and
# tensorpack's variance_scaling_initializer(2.0, mode="fan_out") do. A config, not an instance: each
# layer then gets its own initializer, seeded when the layer is made (after --seed); one shared
# instance draws its seed at import and gives every kernel of a shape the same values.
CONV_INIT = {"class_name": "VarianceScaling",
             "config": {"scale": 2.0, "mode": "fan_out", "distribution": "untruncated_normal"}}


@dataclasses.dataclass(frozen=True)
class LayerContext:
    """How layers are built: data format, how the big branch is upsampled and which projection
    shortcut the bottlenecks use (``constants.SHORTCUT_KINDS``; blocks.shortcut)."""

    data_format: str = "channels_last"
    upsample: str = "bilinear"
    shortcut: str = "avgpool"

    @property
    def channel_axis(self) -> int:
        return 1 if self.data_format == "channels_first" else -1

    def channels(self, x) -> int:
        return int(x.shape[self.channel_axis])

    def spatial(self, x) -> tuple:
        return tuple(x.shape[2:4]) if self.data_format == "channels_first" else tuple(x.shape[1:3])


def conv(ctx: LayerContext, x, filters: int, kernel_size: int, *, name: str, strides: int = 1,
         groups: int = 1, use_bias: bool = False, kernel_initializer=CONV_INIT):
    """A 2-D convolution padded as PyTorch's ``padding=k//2``.

    Strided convolutions get explicit symmetric zero padding: Keras's "same" pads only the bottom and
    right for an even input, which would shift every feature by half a pixel against the official
    weights.
    """
    if strides > 1 and kernel_size > 1:
        x = layers.ZeroPadding2D(kernel_size // 2, data_format=ctx.data_format, name=f"{name}_pad")(x)
        padding = "valid"
    else:
        padding = "same"
    # Grouped convs get the per-device kernel (Keras's is XLA-compiled and slow on CPU); same weights.
    conv_layer = grouped_conv.Conv2D if groups > 1 else layers.Conv2D
    return conv_layer(
        filters, kernel_size, strides=strides, padding=padding, groups=groups, use_bias=use_bias,
        data_format=ctx.data_format, kernel_initializer=kernel_initializer, name=name)(x)


def batch_norm(ctx: LayerContext, x, *, name: str, zero_gamma: bool = False):
    """BatchNorm with tensorpack's momentum/epsilon; ``zero_gamma`` for the last BN of a residual
    branch (Goyal et al. 2017), so each block starts as the identity. On TensorFlow's fused kernel
    (see batch_norm.py)."""
    return fused_batch_norm.BatchNormalization(
        axis=ctx.channel_axis, momentum=BN_MOMENTUM, epsilon=BN_EPSILON,
        gamma_initializer="zeros" if zero_gamma else "ones", name=name)(x)


def conv_bn(ctx: LayerContext, x, filters: int, kernel_size: int, *, name: str, bn_name: str,
            strides: int = 1, groups: int = 1, relu: bool = True, zero_gamma: bool = False):
    x = conv(ctx, x, filters, kernel_size, strides=strides, groups=groups, name=name)
    x = batch_norm(ctx, x, name=bn_name, zero_gamma=zero_gamma)
    if relu:
        x = layers.ReLU(name=f"{name}_relu")(x)
    return x


def max_pool_3x3_s2(ctx: LayerContext, x, *, name: str):
    """3x3 stride-2 max pooling after one pixel of zero padding (``{name}_pad``), as PyTorch's
    ``MaxPool2d(3, 2, padding=1)`` on the non-negative maps it follows (ResNet's and ShuffleNetV2's
    stem)."""
    x = layers.ZeroPadding2D(1, data_format=ctx.data_format, name=f"{name}_pad")(x)
    return layers.MaxPooling2D(3, strides=2, data_format=ctx.data_format, name=name)(x)


def avg_pool_3x3_s2(ctx: LayerContext, x, *, name: str):
    """3x3 stride-2 average pooling with one pixel of zero padding counted in the average
    (PyTorch's ``AvgPool2d(3, 2, padding=1)``, ``count_include_pad=True``)."""
    return AvgPool3x3S2(ctx.data_format, name=name)(x)


@keras.saving.register_keras_serializable(package="bl_net_tf")
class AvgPool3x3S2(layers.Layer):
    """PyTorch's ``AvgPool2d(3, 2, padding=1)``: zero padding, counted in the average.

    On TensorFlow with NHWC float32 it is one depthwise convolution with a constant 1/9 kernel and
    the padding done inside the op: no padded copy of the input, half the time of Pad + AvgPool
    forward and 15-30% less backward on a 2-core CPU (docs/benchmarks.md). Elsewhere (NCHW, where
    cuDNN pools; reduced precision, where 1/9 would round) it pads and pools.
    """

    def __init__(self, data_format: str = "channels_last", **kwargs):
        super().__init__(**kwargs)
        self.data_format = data_format

    def call(self, x):
        if (keras.backend.backend() == "tensorflow" and self.data_format == "channels_last"
                and keras.backend.standardize_dtype(x.dtype) == "float32"):
            import tensorflow as tf

            kernel = tf.fill((3, 3, x.shape[-1], 1), tf.constant(1.0 / 9.0, x.dtype))
            return tf.nn.depthwise_conv2d(x, kernel, [1, 2, 2, 1], [[0, 0], [1, 1], [1, 1], [0, 0]])
        hw = [(1, 1), (1, 1)]
        x = ops.pad(x, [(0, 0), (0, 0)] + hw if self.data_format == "channels_first" else [(0, 0)] + hw + [(0, 0)])
        return ops.average_pool(x, 3, strides=2, padding="valid", data_format=self.data_format)

    def compute_output_shape(self, input_shape):
        axes = (2, 3) if self.data_format == "channels_first" else (1, 2)
        return tuple((d - 1) // 2 + 1 if i in axes and d is not None else d for i, d in enumerate(input_shape))

    def get_config(self):
        return {**super().get_config(), "data_format": self.data_format}


@keras.saving.register_keras_serializable(package="bl_net_tf")
class ResizeLike(layers.Layer):
    """Resizes ``inputs[0]`` to the spatial size of ``inputs[1]`` (the big branch onto the little one).

    ``nearest`` picks source pixel floor(i * in / out), which is PyTorch's ``F.interpolate`` default
    and what the official pretrained weights were trained with. ``bilinear`` uses half-pixel
    centres (PyTorch's ``align_corners=False``), the paper's choice. An exact 2x nearest upsampling
    is a repeat, which needs no layout transposes on channels_first.
    """

    def __init__(self, method: str = "bilinear", data_format: str = "channels_last", **kwargs):
        super().__init__(**kwargs)
        self.method = check_choice("upsample", method, UPSAMPLE_MODES)
        self.data_format = data_format

    def _hw_axes(self):
        return (2, 3) if self.data_format == "channels_first" else (1, 2)

    def call(self, inputs):
        x, like = inputs
        h_axis, w_axis = self._hw_axes()
        in_hw = (x.shape[h_axis], x.shape[w_axis])
        out_hw = (like.shape[h_axis], like.shape[w_axis])
        if self.method == "nearest" and None not in in_hw + out_hw and all(
                o == 2 * i for i, o in zip(in_hw, out_hw)):
            return ops.repeat(ops.repeat(x, 2, axis=h_axis), 2, axis=w_axis)
        import tensorflow as tf  # resize kernels live in TF; this layer only runs on the TF backend

        if self.data_format == "channels_first":
            x = tf.transpose(x, [0, 2, 3, 1])
        # A static size gives the output a static shape, which grappler needs to fuse the merge's
        # addition into the little branch's convolution (the shapes must match symbolically).
        size = out_hw if None not in out_hw else tf.shape(like)[h_axis:w_axis + 1]
        if self.method == "nearest":
            y = tf.raw_ops.ResizeNearestNeighbor(images=x, size=size, align_corners=False,
                                                 half_pixel_centers=False)
        else:
            # ResizeBilinear returns float32 whatever it is given, and XLA's kernel for its gradient
            # then returns float32 into a float16/bfloat16 graph, which XLA refuses ("Seen floating
            # point types of different precisions"). Resized in float32 explicitly, both directions
            # stay consistent; the output is back in the input's (compute) dtype.
            y = tf.cast(tf.image.resize(tf.cast(x, "float32"), size, method="bilinear"), x.dtype)
        if self.data_format == "channels_first":
            y = tf.transpose(y, [0, 3, 1, 2])
        return y

    def compute_output_shape(self, input_shapes):
        x_shape, like_shape = input_shapes
        h_axis, w_axis = self._hw_axes()
        out = list(x_shape)
        out[h_axis], out[w_axis] = like_shape[h_axis], like_shape[w_axis]
        return tuple(out)

    def get_config(self):
        return {**super().get_config(), "method": self.method, "data_format": self.data_format}


@keras.saving.register_keras_serializable(package="bl_net_tf")
class ImageNetNormalization(layers.Layer):
    """Maps RGB images in [0, 255] (uint8 or float, NHWC) to ImageNet-normalised floats on the device,
    as tensorpack's ImageNetModel did inside its graph. Computed in float32 and then cast to the
    compute dtype: in bfloat16 the mean 123.675 alone would round to 124."""

    def call(self, images):
        x = ops.cast(images, "float32")
        mean = ops.convert_to_tensor(IMAGENET_MEAN_RGB, dtype="float32")
        std = ops.convert_to_tensor(IMAGENET_STD_RGB, dtype="float32")
        return ops.cast((x - mean) / std, self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return input_shape
