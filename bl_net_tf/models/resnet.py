"""ResNet / ResNeXt / SE-ResNeXt and their Big-Little versions, from one builder.

Layer names (the contract for checkpoints, weight conversion and feature taps):
  stem_conv, stem_bn                         7x7/s2 convolution (112x112 at 224)
  stage1_*                                   first bL-module (bL) | stem max-pool (plain) |
                                             the bL stem's big path (lowres)
  stage{2,3,4}_{big,little}_block{j}_*       bL-modules; stage{n}_little_expand_conv/bn,
  stage{n}_merge, stage{n}_fusion_block1_*   the merge and the fusion (transition) block
  stage{n}_block{j}_*                        plain stages (all stages of a baseline, stage5 of bL)
  head_pool, head_fc                         global average pooling and the logits
"""
from __future__ import annotations

import dataclasses

import keras
from keras import layers

from bl_net_tf.models.big_little import bl_module, stem_module
from bl_net_tf.models.blocks import EXPANSION, stack
from bl_net_tf.models.layers import LayerContext, conv_bn
from bl_net_tf.models.registry import ArchSpec

STEM_CHANNELS = 64
STAGE_PLANES = (64 * EXPANSION, 128 * EXPANSION, 256 * EXPANSION, 512 * EXPANSION)
# bL-modules end in a fusion block that carries the stride of the *next* stage, so the third
# module's is 1 and the plain last stage strides as usual (blresnet.py, layer1..layer4).
BL_FUSION_STRIDES = (2, 2, 1)
# Total stride of the network; an input must be at least this large in each dimension.
MIN_INPUT_SIZE = 32


@dataclasses.dataclass(frozen=True)
class BigLittleOptions:
    """α (little width divisor), β (little depth divisor) and how branches are upsampled."""

    alpha: int = 2
    beta: int = 4


def build_resnet(spec: ArchSpec, ctx: LayerContext, inputs, *, bl: BigLittleOptions):
    """Builds the feature extractor on ``inputs`` (already in ``ctx.data_format``).

    Returns the C2..C5 feature maps (strides 4, 8, 16, 32 for the plain and bL models).
    """
    block = dict(cardinality=spec.cardinality, base_width=spec.base_width, se=spec.se)
    x = conv_bn(ctx, inputs, STEM_CHANNELS, 7, strides=2, name="stem_conv", bn_name="stem_bn")
    if spec.big_little:
        x = stem_module(ctx, x, alpha=bl.alpha)
        features = []
        for i, (planes, blocks, stride) in enumerate(zip(STAGE_PLANES, spec.blocks, BL_FUSION_STRIDES)):
            x, merged = bl_module(ctx, x, planes, blocks, alpha=bl.alpha, beta=bl.beta, stride=stride,
                                  name=f"stage{i + 2}", **block)
            features.append(merged)
        # C2, C3 are the merged full-resolution maps of stage2/3; C4 is stage4's (stride-1) fusion.
        features[-1] = x
        x = stack(ctx, x, STAGE_PLANES[3], spec.blocks[3], stride=2, name="stage5", **block)
        return features + [x]
    if spec.lowres:
        # Table 6's lowres model: the bL stem's big path (3x3/s2 conv, 1x1 conv) before the
        # max-pool, so the plain stages see half-resolution features. This reading gives Table 6's
        # 1.29 / 2.22 GFLOPs exactly (and 25.60M params for ResNet-50-lowres).
        x = conv_bn(ctx, x, STEM_CHANNELS, 3, strides=2, name="stage1_big_conv", bn_name="stage1_big_bn")
        x = conv_bn(ctx, x, STEM_CHANNELS, 1, name="stage1_fusion_conv", bn_name="stage1_fusion_bn")
    x = layers.ZeroPadding2D(1, data_format=ctx.data_format, name="stage1_pool_pad")(x)
    x = layers.MaxPooling2D(3, strides=2, data_format=ctx.data_format, name="stage1_pool")(x)
    features = []
    for i, (planes, blocks) in enumerate(zip(STAGE_PLANES, spec.blocks)):
        x = stack(ctx, x, planes, blocks, stride=1 if i == 0 else 2, name=f"stage{i + 2}", **block)
        features.append(x)
    return features


def classifier_head(ctx: LayerContext, x, num_classes: int):
    """Global average pooling and a linear layer to logits (tensorpack's N(0, 0.01) FC init)."""
    x = layers.GlobalAveragePooling2D(data_format=ctx.data_format, name="head_pool")(x)
    return layers.Dense(num_classes, kernel_initializer=keras.initializers.RandomNormal(stddev=0.01),
                        name="head_fc")(x)
