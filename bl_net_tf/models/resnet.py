"""ResNet / ResNeXt / SE-ResNeXt and their Big-Little versions, from one builder.

Layer names (the contract for checkpoints, weight conversion and feature taps):
  stem_conv, stem_bn                         7x7/s2 convolution (112x112 at 224)
  stage1_*                                   first bL-module (bL) | stem max-pool (plain) |
                                             the bL stem's big path (lowres)
  stage{2,3,4}_{big,little}_block{j}_*       bL-modules; stage{n}_little_expand_conv/bn,
  stage{n}_merge, stage{n}_fusion_block1_*   the merge and the fusion (transition) block
  stage{n}_middle_*                          the third branch of a K=3 module (``branches=3``; no
                                             stage1_*: its stem is the conv alone, and stage2 ends in
                                             stage2_pool instead of a fusion block)
  stage{n}_module{k}_*                       the k-th module of a stage split for extra merges
                                             (``merges=7``); big_little.py describes the ablations
  stage{n}_block{j}_*                        plain stages (all stages of a baseline, stage5 of bL)
  head_pool, head_fc                         global average pooling and the logits
"""
from __future__ import annotations

import dataclasses

import keras
from keras import layers

from bl_net_tf.models.big_little import Unmerged, bl_module, stem_module, three_branch_module
from bl_net_tf.models.blocks import EXPANSION, stack
from bl_net_tf.models.layers import LOGITS_DTYPE, LayerContext, conv_bn, max_pool_3x3_s2
from bl_net_tf.models.registry import ArchSpec

STEM_CHANNELS = 64
STAGE_PLANES = (64 * EXPANSION, 128 * EXPANSION, 256 * EXPANSION, 512 * EXPANSION)
# bL-modules end in a fusion block that carries the stride of the *next* stage, so the third
# module's is 1 and the plain last stage strides as usual (blresnet.py, layer1..layer4).
BL_FUSION_STRIDES = (2, 2, 1)


@dataclasses.dataclass(frozen=True)
class MergeLayout:
    """Where a bL-ResNet merges its branches (Table 8, m = number of merges).

    Attributes:
      stem_merges: the stem module merges its branches.
      modules: bL-modules per stage 2..4; a stage's blocks are split evenly between them.
      stage_merges: per stage 2..4, whether its last module merges (the others always do).
    """

    stem_merges: bool
    modules: tuple
    stage_merges: tuple


# A.4: "we merged branches before the feature dimension changes, except for the first stride
# convolution; thus, we used 4 merges". Fewer merges drop every other one, keeping the last (a
# plain stage follows it): m=2 keeps stage2's and stage4's, m=1 stage4's only; an unmerged module
# passes its branches on separately (big_little.py). bL-ResNet-50: m=2 2.729 GFLOPs / 26.655M, m=1
# 2.626 / 26.646M (paper 2.74 / 26.66, 2.64 / 26.64). More merges split the deep stages into
# equal bL-modules ("extra merges happened at the feature dimension"): m=7 on bL-ResNet-101 is
# stage3 as 2 x 4 blocks and stage4 as 3 x 6: 5.208 / 44.436M (paper 5.21 / 44.44).
MERGE_LAYOUTS = {
    4: MergeLayout(True, (1, 1, 1), (True, True, True)),
    2: MergeLayout(False, (1, 1, 1), (True, False, True)),
    1: MergeLayout(False, (1, 1, 1), (False, False, True)),
    7: MergeLayout(True, (1, 2, 3), (True, True, True)),
}
DEFAULT_MERGES = 4
# The merge counts the paper built, per depth (Table 8).
SUPPORTED_MERGES = {50: (1, 2, 4), 101: (4, 7), 152: (4,)}


@dataclasses.dataclass(frozen=True)
class BigLittleOptions:
    """α (little width divisor), β (little depth divisor) and how branches are merged; ``branches``
    and ``merges`` are the ablations of Tables 7 and 8 (bL-ResNet family only)."""

    alpha: int = 2
    beta: int = 4
    merge: str = "add"
    branches: int = 2
    merges: int = DEFAULT_MERGES


def split_blocks(blocks: int, parts: int) -> tuple:
    """``blocks`` split into ``parts`` consecutive runs as equal as possible, longer ones first."""
    return tuple(blocks // parts + (1 if i < blocks % parts else 0) for i in range(parts))


def build_resnet(spec: ArchSpec, ctx: LayerContext, inputs, *, bl: BigLittleOptions):
    """Builds the feature extractor on ``inputs`` (already in ``ctx.data_format``).

    Returns the C2..C5 feature maps (strides 4, 8, 16, 32 for the plain and bL models).
    """
    block = dict(cardinality=spec.cardinality, base_width=spec.base_width, se=spec.se)
    x = conv_bn(ctx, inputs, STEM_CHANNELS, 7, strides=2, name="stem_conv", bn_name="stem_bn")
    if spec.big_little and bl.branches == 3:
        return _three_branch_stages(spec, ctx, x, bl=bl, **block)
    if spec.big_little:
        layout = MERGE_LAYOUTS[bl.merges]
        x = stem_module(ctx, x, alpha=bl.alpha, merge=bl.merge if layout.stem_merges else None)
        features = []
        for i, (planes, blocks, stride) in enumerate(zip(STAGE_PLANES, spec.blocks, BL_FUSION_STRIDES)):
            runs = split_blocks(blocks, layout.modules[i])
            for k, run in enumerate(runs):
                last = k == len(runs) - 1
                x, merged = bl_module(
                    ctx, x, planes, run, alpha=bl.alpha, beta=bl.beta, stride=stride if last else 1,
                    name=f"stage{i + 2}" if len(runs) == 1 else f"stage{i + 2}_module{k + 1}",
                    merge=bl.merge if layout.stage_merges[i] or not last else None, branches=bl.branches,
                    **block)
            features.append(merged)  # None after an unmerged stage: it has no merged map to tap
        # C2, C3 are the merged full-resolution maps of stage2/3; C4 is stage4's (stride-1) fusion.
        assert not isinstance(x, Unmerged), "every merge layout merges the last bL-module"
        features[-1] = x
        x = stack(ctx, x, STAGE_PLANES[3], spec.blocks[3], stride=2, name="stage5", **block)
        return features + [x]
    if spec.lowres:
        # Table 6's lowres model: the bL stem's big path (3x3/s2 conv, 1x1 conv) before the
        # max-pool, so the plain stages see half-resolution features. This reading gives Table 6's
        # 1.29 / 2.22 GFLOPs exactly (and 25.60M params for ResNet-50-lowres).
        x = conv_bn(ctx, x, STEM_CHANNELS, 3, strides=2, name="stage1_big_conv", bn_name="stage1_big_bn")
        x = conv_bn(ctx, x, STEM_CHANNELS, 1, name="stage1_fusion_conv", bn_name="stage1_fusion_bn")
    x = max_pool_3x3_s2(ctx, x, name="stage1_pool")
    features = []
    for i, (planes, blocks) in enumerate(zip(STAGE_PLANES, spec.blocks)):
        x = stack(ctx, x, planes, blocks, stride=1 if i == 0 else 2, name=f"stage{i + 2}", **block)
        features.append(x)
    return features


def _three_branch_stages(spec: ArchSpec, ctx: LayerContext, x, *, bl: BigLittleOptions, **block):
    """The K=3 network of Table 7 after the 7x7/s2 stem conv (big_little.py explains the reading).

    The three-branch modules run at twice K=2's resolution: stage2's on the 112x112 stem output,
    ending in ResNet-50's 3x3/s2 max-pool instead of a fusion block; stage3's at 56x56 and stage4's
    at 28x28, each ending in the strided fusion bottleneck; then the plain stage5 at 7x7 as K=2.
    Returns C2..C5 at strides 4, 8, 16, 32: the three module outputs and stage5.
    """
    features = []
    for i, (planes, blocks) in enumerate(zip(STAGE_PLANES[:3], spec.blocks[:3])):
        x, _ = three_branch_module(ctx, x, planes, blocks, alpha=bl.alpha, beta=bl.beta, stride=2,
                                   name=f"stage{i + 2}", fusion=i > 0, **block)
        features.append(x)
    x = stack(ctx, x, STAGE_PLANES[3], spec.blocks[3], stride=2, name="stage5", **block)
    return features + [x]


def classifier_head(ctx: LayerContext, x, num_classes: int):
    """Global average pooling and a linear layer to logits (tensorpack's N(0, 0.01) FC init). The
    pooling runs in the compute dtype, the FC layer and the logits in float32 (``LOGITS_DTYPE``)."""
    x = layers.GlobalAveragePooling2D(data_format=ctx.data_format, name="head_pool")(x)
    return layers.Dense(num_classes, kernel_initializer=keras.initializers.RandomNormal(stddev=0.01),
                        dtype=LOGITS_DTYPE, name="head_fc")(x)
