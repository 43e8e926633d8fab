"""The Big-Little module (paper Section 3.1, Appendix A.2; official models/blresnet.py).

Two branches see the same input: the Big-Branch (the original network's blocks minus the one
shared transition block, at half resolution) and the Little-Branch (about 1/β of the blocks at
1/α of the width, at full resolution). The big output is upsampled, the little one widened by a
1x1 conv + BN, the two are added and passed through a ReLU, and one fusion bottleneck (which also
carries the module's stride) mixes them.
"""
from __future__ import annotations

from keras import layers

from bl_net_tf.models.blocks import stack
from bl_net_tf.models.layers import LayerContext, ResizeLike, conv_bn


def little_blocks(blocks: int, beta: int) -> int:
    """Blocks in the Little-Branch: max(1, L // β - 1) for a stage of L blocks, as blresnet.py."""
    return max(1, blocks // beta - 1)


def stem_module(ctx: LayerContext, x, *, alpha: int, name: str = "stage1"):
    """The first bL-module on the 112x112 stem output (Table 4, row 2).

    big: 3x3/s2 conv + BN; little: 3x3 conv at C/α, 3x3/s2 conv, 1x1 conv back to C (each + BN);
    add, ReLU, then a 1x1 conv + BN + ReLU that fuses them. Both branches stride, so no upsampling.
    """
    channels = ctx.channels(x)
    big = conv_bn(ctx, x, channels, 3, strides=2, name=f"{name}_big_conv", bn_name=f"{name}_big_bn", relu=False)
    little = conv_bn(ctx, x, channels // alpha, 3, name=f"{name}_little_conv1", bn_name=f"{name}_little_bn1")
    little = conv_bn(ctx, little, channels // alpha, 3, strides=2, name=f"{name}_little_conv2",
                     bn_name=f"{name}_little_bn2")
    little = conv_bn(ctx, little, channels, 1, name=f"{name}_little_conv3", bn_name=f"{name}_little_bn3",
                     relu=False)
    y = layers.Add(name=f"{name}_merge")([big, little])
    y = layers.ReLU(name=f"{name}_merge_relu")(y)
    return conv_bn(ctx, y, channels, 1, name=f"{name}_fusion_conv", bn_name=f"{name}_fusion_bn")


def bl_module(ctx: LayerContext, x, planes: int, blocks: int, *, alpha: int, beta: int, stride: int, name: str,
              cardinality: int = 1, base_width: int = 64, se: bool = False):
    """One Big-Little module replacing a stage of ``blocks`` bottlenecks with ``planes`` outputs.

    Returns ``(output, merged)``: ``merged`` is the full-resolution map after the merge (a detection
    feature tap), ``output`` the fusion block's result at the module's ``stride``.
    """
    block = dict(cardinality=cardinality, base_width=base_width, se=se)
    # Big: blocks-1 bottlenecks, the first at stride 2; no ReLU at its end (the merge has one).
    big = stack(ctx, x, planes, blocks - 1, stride=2, last_relu=False, name=f"{name}_big", **block)
    big = ResizeLike(ctx.upsample, ctx.data_format, name=f"{name}_big_upsample")([big, x])
    # Little: C/α wide; ResNeXt keeps the group width by using base_width*α and cardinality/α groups.
    little = stack(ctx, x, planes // alpha, little_blocks(blocks, beta), name=f"{name}_little",
                   cardinality=cardinality // alpha if cardinality > 1 else 1,
                   base_width=base_width * alpha if cardinality > 1 else base_width, se=se)
    little = conv_bn(ctx, little, planes, 1, name=f"{name}_little_expand_conv",
                     bn_name=f"{name}_little_expand_bn", relu=False)
    merged = layers.Add(name=f"{name}_merge")([big, little])
    merged = layers.ReLU(name=f"{name}_merge_relu")(merged)
    out = stack(ctx, merged, planes, 1, stride=stride, name=f"{name}_fusion", **block)
    return out, merged
