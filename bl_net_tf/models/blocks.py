"""The residual bottleneck shared by ResNet, ResNeXt and SE-ResNeXt, and stacks of it.

One block function serves every family; a family differs only by ``cardinality``, ``base_width``
and ``se`` (see registry.py). Layer names: ``{name}_conv1`` .. ``{name}_conv3``, ``{name}_bn1`` ..
``{name}_bn3``, ``{name}_se_reduce`` / ``{name}_se_expand``, ``{name}_shortcut_pool`` /
``{name}_shortcut_conv`` / ``{name}_shortcut_bn``.
"""
from __future__ import annotations

from keras import layers

from bl_net_tf.models.layers import LayerContext, avg_pool_3x3_s2, batch_norm, conv, conv_bn

EXPANSION = 4
SE_REDUCTION = 16


def bottleneck_width(planes: int, cardinality: int, base_width: int) -> int:
    """Channels of the 1x1-3x3 part: floor(planes * base_width / 64) / 4 per group, times the groups
    (blresnext.py's D * C). Plain ResNet is cardinality 1, base width 64: planes / 4."""
    return (planes * base_width // 64) // EXPANSION * cardinality


# The SE layers' kernels: He-normal over fan-in, truncated (Tensorpack's FullyConnected default,
# variance_scaling_initializer(2.0), which its se_resnet_bottleneck's fc1/fc2 use: tensorpack
# examples/ResNet/resnet_model.py at 0086e156c7a8c769fffea2214242c1b5767359d7, the paper's training
# code). Biases start at zero, as there and in the official blseresnext.py, whose init loop gives
# the SE 1x1 convs kaiming_normal_ over fan-out instead (docs/training.md lists the difference).
# A config, as layers.CONV_INIT and for its reason: each layer its own initializer, seeded by --seed.
SE_KERNEL_INIT = {"class_name": "VarianceScaling",
                  "config": {"scale": 2.0, "mode": "fan_in", "distribution": "truncated_normal"}}


def squeeze_excite(ctx: LayerContext, x, *, name: str):
    """SE with reduction 16 and biased 1x1 convolutions (Hu et al. 2018, blseresnext.py)."""
    channels = ctx.channels(x)
    s = layers.GlobalAveragePooling2D(data_format=ctx.data_format, keepdims=True, name=f"{name}_se_pool")(x)
    s = layers.Conv2D(channels // SE_REDUCTION, 1, use_bias=True, data_format=ctx.data_format,
                      kernel_initializer=SE_KERNEL_INIT, bias_initializer="zeros", name=f"{name}_se_reduce")(s)
    s = layers.ReLU(name=f"{name}_se_relu")(s)
    s = layers.Conv2D(channels, 1, use_bias=True, activation="sigmoid", data_format=ctx.data_format,
                      kernel_initializer=SE_KERNEL_INIT, bias_initializer="zeros", name=f"{name}_se_expand")(s)
    return layers.Multiply(name=f"{name}_se_scale")([x, s])


def shortcut(ctx: LayerContext, x, planes: int, stride: int, *, name: str):
    """Identity where the block keeps the shape, else a projection to ``planes`` at ``stride``, as
    ``ctx.shortcut`` says:

    ``"conv"``: a 1x1 conv + BN carrying the stride (Tensorpack's ``resnet_shortcut``,
      examples/ResNet/resnet_model.py): the plain baselines, as the paper trained them.
    ``"avgpool"``: 3x3/s2 average pooling where the block strides, then a 1x1 conv + BN where the
      width changes (the official release's ``downsample``, models/blresnet.py): the bL models.
      Pooling instead of a strided 1x1 keeps every input pixel.
    """
    pooled = ctx.shortcut == "avgpool" and stride != 1
    if pooled:
        x = avg_pool_3x3_s2(ctx, x, name=f"{name}_shortcut_pool")
    if ctx.channels(x) != planes or (stride != 1 and not pooled):
        x = conv(ctx, x, planes, 1, strides=1 if pooled else stride, name=f"{name}_shortcut_conv")
        x = batch_norm(ctx, x, name=f"{name}_shortcut_bn")
    return x


def bottleneck(ctx: LayerContext, x, planes: int, *, name: str, stride: int = 1, cardinality: int = 1,
               base_width: int = 64, se: bool = False, last_relu: bool = True):
    """1x1 -> 3x3 (stride, groups) -> 1x1 to ``planes``; the stride sits on the 3x3 (ResNet v1.5,
    as tensorpack and the official release)."""
    width = bottleneck_width(planes, cardinality, base_width)
    residual = shortcut(ctx, x, planes, stride, name=name)
    y = conv_bn(ctx, x, width, 1, name=f"{name}_conv1", bn_name=f"{name}_bn1")
    y = conv_bn(ctx, y, width, 3, strides=stride, groups=cardinality, name=f"{name}_conv2", bn_name=f"{name}_bn2")
    y = conv_bn(ctx, y, planes, 1, name=f"{name}_conv3", bn_name=f"{name}_bn3", relu=False, zero_gamma=True)
    if se:
        y = squeeze_excite(ctx, y, name=name)
    y = layers.Add(name=f"{name}_add")([y, residual])
    if last_relu:
        y = layers.ReLU(name=f"{name}_out")(y)
    return y


def stack(ctx: LayerContext, x, planes: int, blocks: int, *, name: str, stride: int = 1, last_relu: bool = True,
          **block_kwargs):
    """``blocks`` bottlenecks named ``{name}_block1`` ..; only the first carries the stride.

    ``last_relu=False`` drops the ReLU after the last block, for a big branch that is added to the
    little one before a shared ReLU. As in the official release, a one-block stack keeps its ReLU.
    """
    for i in range(blocks):
        relu = last_relu or blocks == 1 or i < blocks - 1
        x = bottleneck(ctx, x, planes, name=f"{name}_block{i + 1}", stride=stride if i == 0 else 1,
                       last_relu=relu, **block_kwargs)
    return x
