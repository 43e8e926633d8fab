"""ShuffleNetV2 (Ma et al., ECCV 2018) and bL-ShuffleNetV2 (paper Appendix A.5, Table 9).

ShuffleNetV2: a 3x3/s2 conv to 24 channels and a 3x3/s2 max-pool, three stages of [4, 8, 4]
ShuffleNet units (the first of each stage strides 2), a 1x1 conv to 1024 (2048 at 2x) channels,
global average pooling and the classifier. A unit splits its channels in two, passes one half
through 1x1 -> 3x3 depthwise -> 1x1, concatenates and shuffles; a strided unit processes the whole
input in two branches instead (Ma et al. Fig. 3c, d).

bL-ShuffleNetV2 (α = 2, β = 2 in the paper). Appendix A.5 gives only the complexities, so the
design is ours, built from the paper's recipe (Section 3) and chosen because it reproduces every
FLOP count of Table 9 and the 1x and 2x parameter counts within 3%:
  * stages 2 and 3 become Big-Little modules on the previous stage's output; stage 4, like
    bL-ResNet's last stage, stays plain;
  * the Big-Branch is the original stage (all its units, the first one strided, full width) on the
    input average-pooled by 2 (3x3/s2, as bL-ResNet's shortcuts), i.e. the stage at half its
    resolution; its output is upsampled bilinearly to the stage's resolution;
  * the Little-Branch runs ceil(units/β) units at width/α at the stage's own resolution (its first
    unit strides), then a 1x1 conv + BN to the stage's width;
  * the branches are added and passed through a ReLU (big_little.merge_branches, as every family).
Measured and rejected (1x at 256, Table 9: 150 MFLOPs): keeping each stage's strided unit at full
resolution as a transition before the module (bL-ResNet's fusion block, the speech models'
transition layer) costs 189 MFLOPs with bL stages 2-3 and 198 with 2-4, since ShuffleNet units are
cheap next to a full-resolution strided unit; bL-ResNet's little depth max(1, units//β - 1)
instead of ceil(units/β) gives 143 (-5%); a bL stage 4 as well gives 133 (-11%) and +10% params.

Layer names:
  stem_conv, stem_bn, stage1_pool                 3x3/s2 conv, 3x3/s2 max-pool (stride 4)
  stage{n}_block{j}_*                             units of a plain stage (n = 2, 3, 4)
  stage{n}_big_pool, stage{n}_big_block{j}_*      a bL stage's Big-Branch
  stage{n}_little_block{j}_*                      its Little-Branch
  ..._branch1_dw / _branch1_conv                  a strided unit's shortcut branch
  ..._branch2_conv1 / _branch2_dw / _branch2_conv2   the unit's main branch (each with _bn)
  ..._split, ..._concat, ..._shuffle
  stage{n}_little_expand_conv / _bn, stage{n}_big_upsample, stage{n}_merge, stage{n}_merge_relu
  head_conv, head_bn                              the 1x1 conv to 1024 / 2048 channels
  head_pool, head_fc                              global average pooling and the logits
"""
from __future__ import annotations

import keras
from keras import layers, ops

from bl_net_tf.models.big_little import little_depth, merge_branches
from bl_net_tf.models.layers import CONV_INIT, LayerContext, avg_pool_3x3_s2, batch_norm, conv_bn, max_pool_3x3_s2
from bl_net_tf.models.registry import ArchSpec

STEM_CHANNELS = 24
UNITS = (4, 8, 4)  # ShuffleNet units in stages 2, 3, 4
BL_STAGES = (2, 3)  # stages built as Big-Little modules in bL-ShuffleNetV2
# Output channels of stages 2-4 and the last 1x1 conv per width multiplier (Ma et al. Table 5).
WIDTHS = {
    1.0: (116, 232, 464, 1024),
    1.5: (176, 352, 704, 1024),
    2.0: (244, 488, 976, 2048),
}


@keras.saving.register_keras_serializable(package="bl_net_tf")
class ChannelShuffle(layers.Layer):
    """Interleaves ``groups`` channel groups: [a0 a1 .. b0 b1 ..] -> [a0 b0 a1 b1 ..]."""

    def __init__(self, groups: int = 2, data_format: str = "channels_last", **kwargs):
        super().__init__(**kwargs)
        self.groups = groups
        self.data_format = data_format

    def call(self, x):
        if self.data_format == "channels_first":
            shape = ops.shape(x)
            c = x.shape[1]
            y = ops.reshape(x, (-1, self.groups, c // self.groups, shape[2], shape[3]))
            y = ops.transpose(y, (0, 2, 1, 3, 4))
            return ops.reshape(y, (-1, c, shape[2], shape[3]))
        shape = ops.shape(x)
        c = x.shape[-1]
        y = ops.reshape(x, (-1, shape[1], shape[2], self.groups, c // self.groups))
        y = ops.transpose(y, (0, 1, 2, 4, 3))
        return ops.reshape(y, (-1, shape[1], shape[2], c))

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "groups": self.groups, "data_format": self.data_format}


@keras.saving.register_keras_serializable(package="bl_net_tf")
class ChannelSplit(layers.Layer):
    """Splits the channels into two equal halves (ShuffleNetV2's channel split)."""

    def __init__(self, data_format: str = "channels_last", **kwargs):
        super().__init__(**kwargs)
        self.data_format = data_format

    def call(self, x):
        axis = 1 if self.data_format == "channels_first" else -1
        return ops.split(x, 2, axis=axis)

    def compute_output_shape(self, input_shape):
        axis = 1 if self.data_format == "channels_first" else len(input_shape) - 1
        half = list(input_shape)
        half[axis] = None if input_shape[axis] is None else input_shape[axis] // 2
        return [tuple(half), tuple(half)]

    def get_config(self):
        return {**super().get_config(), "data_format": self.data_format}


def depthwise_bn(ctx: LayerContext, x, *, stride: int, name: str):
    """3x3 depthwise conv + BN (no ReLU), padded symmetrically as PyTorch's ``padding=1``."""
    if stride > 1:
        x = layers.ZeroPadding2D(1, data_format=ctx.data_format, name=f"{name}_pad")(x)
    x = layers.DepthwiseConv2D(3, strides=stride, padding="valid" if stride > 1 else "same", use_bias=False,
                               data_format=ctx.data_format, depthwise_initializer=CONV_INIT, name=name)(x)
    return batch_norm(ctx, x, name=f"{name}_bn")


def shuffle_unit(ctx: LayerContext, x, channels: int, *, name: str, stride: int = 1):
    """One ShuffleNetV2 unit to ``channels`` outputs. A unit that keeps the shape splits the input;
    one that strides or changes the width runs both branches on the whole input."""
    half = channels // 2
    if stride == 1 and ctx.channels(x) == channels:
        shortcut, x = ChannelSplit(ctx.data_format, name=f"{name}_split")(x)
    else:
        shortcut = depthwise_bn(ctx, x, stride=stride, name=f"{name}_branch1_dw")
        shortcut = conv_bn(ctx, shortcut, half, 1, name=f"{name}_branch1_conv", bn_name=f"{name}_branch1_bn")
    y = conv_bn(ctx, x, half, 1, name=f"{name}_branch2_conv1", bn_name=f"{name}_branch2_bn1")
    y = depthwise_bn(ctx, y, stride=stride, name=f"{name}_branch2_dw")
    y = conv_bn(ctx, y, half, 1, name=f"{name}_branch2_conv2", bn_name=f"{name}_branch2_bn2")
    y = layers.Concatenate(axis=ctx.channel_axis, name=f"{name}_concat")([shortcut, y])
    return ChannelShuffle(2, ctx.data_format, name=f"{name}_shuffle")(y)


def shuffle_stack(ctx: LayerContext, x, channels: int, units: int, *, name: str, stride: int = 1):
    """``units`` ShuffleNet units named ``{name}_block1`` ..; the first carries ``stride``."""
    for j in range(units):
        x = shuffle_unit(ctx, x, channels, stride=stride if j == 0 else 1, name=f"{name}_block{j + 1}")
    return x


def check_alpha(spec: ArchSpec, alpha: int) -> None:
    """Raises ValueError for an α that leaves a Little-Branch width odd (a unit splits it in two)."""
    widths = [WIDTHS[spec.width][n - 2] for n in BL_STAGES]
    allowed = [a for a in range(1, min(widths) + 1) if all(c % (2 * a) == 0 for c in widths)]
    if alpha not in allowed:
        raise ValueError(f"alpha must leave even Little-Branch widths for {spec.name} (stage widths "
                         f"{widths}): allowed {', '.join(map(str, allowed))}, got {alpha}")


def bl_shuffle_stage(ctx: LayerContext, x, channels: int, units: int, *, alpha: int, beta: int, name: str):
    """A ShuffleNetV2 stage as a Big-Little module (see the module docstring). Output: the
    stage's resolution (half the input's) and ``channels``."""
    big = avg_pool_3x3_s2(ctx, x, name=f"{name}_big_pool")
    big = shuffle_stack(ctx, big, channels, units, stride=2, name=f"{name}_big")
    little = shuffle_stack(ctx, x, channels // alpha, little_depth(units, beta), stride=2, name=f"{name}_little")
    return merge_branches(ctx, {"big": big, "little": little}, kind="add", channels=channels, name=name)


def build_shufflenet(spec: ArchSpec, ctx: LayerContext, inputs, *, bl):
    """Builds the feature extractor on ``inputs`` (already in ``ctx.data_format``); ``bl`` carries
    α and β (bL only; α validated with :func:`check_alpha` by models/families.py).

    Returns the stride-4, 8, 16 and 32 maps: the stem's max-pool, stages 2 and 3, and the last 1x1
    conv (on stage 4's output), the one :func:`classifier_head` pools.
    """
    widths = WIDTHS[spec.width]
    x = conv_bn(ctx, inputs, STEM_CHANNELS, 3, strides=2, name="stem_conv", bn_name="stem_bn")
    x = max_pool_3x3_s2(ctx, x, name="stage1_pool")
    features = [x]
    for n, (channels, units) in enumerate(zip(widths[:3], UNITS), start=2):
        if spec.big_little and n in BL_STAGES:
            x = bl_shuffle_stage(ctx, x, channels, units, alpha=bl.alpha, beta=bl.beta, name=f"stage{n}")
        else:
            x = shuffle_stack(ctx, x, channels, units, stride=2, name=f"stage{n}")
        features.append(x)
    features[-1] = conv_bn(ctx, x, widths[3], 1, name="head_conv", bn_name="head_bn")
    return features
