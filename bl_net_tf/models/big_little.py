"""The Big-Little module (paper Section 3.1, Appendix A.2; official models/blresnet.py).

Two branches see the same input: the Big-Branch (the original network's blocks minus the one
shared transition block, at half resolution) and the Little-Branch (about 1/β of the blocks at
1/α of the width, at full resolution). The big output is upsampled, the little one widened by a
1x1 conv + BN, the two are added and passed through a ReLU (:func:`merge_branches`, the merge of
every family: ShuffleNetV2 and the speech models use it too), and one fusion bottleneck (which
also carries the module's stride) mixes them.

The paper's ablations (Appendix A.4, Tables 7 and 8) are options of the same two functions:

``merge="concat"`` (Table 7). A.4: with concatenation "the number of kernels in the Big-Branch
  would be only 1 - 1/α" of the backbone's. Read as: the whole Big-Branch is built at C(1 - 1/α)
  output channels (its bottlenecks C(1 - 1/α)/4 wide), the Little-Branch keeps C/α and drops its
  1x1 expansion, and the concatenation is back at the backbone's C. Section 3.2's "1x1 convolution
  ... to reduce the number of feature maps" is the fusion bottleneck's first 1x1, not an extra
  layer; the stem module concatenates its 3x3/s2 big conv (C(1 - 1/α)) with the little's second
  conv (C/α) the same way before its fusion conv. bL-ResNet-50 α=2 β=4: 2.011 GFLOPs, 20.570M
  params (paper 2.01, 20.57). Also measured and rejected: an extra 1x1 conv after the concat
  (2.63 / 21.95), only the Big-Branch's last 1x1 at C(1 - 1/α) (2.32 / 23.94), only its last
  block's output narrowed (2.54 / 26.50), an add-merged stem (2.08 / 20.59).

``merge=None``: an unmerged module (Table 8's fewer merges). The branches leave the module
  separately as :class:`Unmerged`: the Little-Branch without its 1x1 expansion (it only exists to
  align channels for the add), the Big-Branch through the module's fusion layer run on the big
  alone, at the Big-Branch's own resolution and without stride (the Big-Branch is already at the
  next module's resolution). The next module's Big-Branch strides on as usual; its Little-Branch's
  first block takes over the transition's stride. Seen across modules, the Big-Branch is then
  ResNet at half resolution and the Little-Branch a thin ResNet at full resolution, merged once at
  the end.

``branches=3`` (Table 7, K=3, scales [1/4, 1/2, 1]). Section 3.1 with K=3: branch k works at 1/2^k
  of the module's input, more and wider layers for larger k: a little branch at full resolution
  (C/α² wide, max(1, L//β² - 1) blocks), a middle one at 1/2 (C/α, max(1, L//β - 1) blocks, first
  block strided) and the Big-Branch at 1/4 (the input average-pooled by 2, then the K=2 Big-Branch:
  L - 1 blocks, the first strided). S_k: the middle is widened by a 1x1 conv + BN at its own
  resolution and then upsampled (as the speech pyramid model), the little by a 1x1 conv + BN, the big
  upsampled; all three are added at full resolution and width, then a ReLU.
  A.4 says K=3 costs *more* than K=2 (3.91 vs 2.85 GFLOPs, "the overhead in merging more branches")
  and calls the Big-Branch "ResNet-50 ... at ... 56 x 56". Read: the K=3 modules run at twice K=2's
  resolution, so each branch sits one scale above its K=2 counterpart: the little at 112/56/28 (new),
  the middle at 56/28/14 (where K=2's Little-Branch works), the Big-Branch at 28/14/7 (where K=2's
  works; its stage2 input is the 56x56 map A.4 names). The stem is the 7x7/s2 conv alone (the first
  module needs its 112x112 output, so there is no stem bL-module), and ResNet-50's own parameter-free
  3x3/s2 max-pool, which the K=2 stem module replaces, comes back after the first module's merge in
  place of its fusion block (``fusion=False``); stage3 and stage4 end in the K=2 strided fusion
  bottleneck. See models/resnet.py for the network. Stage2 thus has only its Big-Branch's 2 of
  ResNet-50's 3 full-width bottlenecks: that one choice is made by the fit, not by the paper's text.
  bL-ResNet-50 α=2 β=4: 27.178M params, 3.907 GFLOPs (paper 27.23, 3.91: -0.19%, -0.07%). Also
  measured (tests/test_ablations.py has the table): the same with a strided fusion bottleneck in
  stage2 too, 27.25M / 4.28 GFLOPs (+9.5%); the modules at K=2's resolutions after the K=2 stem
  module (the Big-Branch at 14/7/4), 27.32M / 2.31 (-41%).

Layer names: ``{stage}_big_*``, ``{stage}_little_*``, ``{stage}_middle_*`` (K=3),
``{stage}_big_pool``; the merge's ``{stage}_{branch}_expand_conv/bn`` (a 1x1 conv + BN widening a
thinner branch), ``{stage}_{branch}_upsample``, ``{stage}_merge`` (Add or Concatenate) and
``{stage}_merge_relu``; ``{stage}_fusion_block1_*``, ``stage2_pool`` (K=3: the first module's max-pool).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Optional

from keras import layers

from bl_net_tf.models.blocks import stack
from bl_net_tf.models.layers import LayerContext, ResizeLike, avg_pool_3x3_s2, conv_bn, max_pool_3x3_s2


@dataclasses.dataclass(frozen=True)
class Unmerged:
    """The two branch outputs of a module that does not merge (see the module docstring).

    ``little_stride`` is the stride the next module's Little-Branch needs to reach its resolution:
    2 after a stage module (the little is still at the old resolution), 1 after the stem module
    (both of its branches stride).
    """

    big: Any
    little: Any
    little_stride: int


def little_blocks(blocks: int, beta: int) -> int:
    """Blocks in the Little-Branch: max(1, L // β - 1) for a stage of L blocks, as blresnet.py."""
    return max(1, blocks // beta - 1)


def little_depth(depth: int, beta: int) -> int:
    """ceil(L / β): the Little-Branch's depth in the speech models (convolutions, Appendix B.2) and
    in bL-ShuffleNetV2 (units), for a Big-Branch of depth L."""
    return -(-depth // beta)


def _thin(cardinality: int, base_width: int, divisor: int) -> dict:
    """Block widths for a branch ``divisor`` times thinner than the big one: ResNeXt keeps the group
    width by using cardinality/divisor groups of base_width*divisor channels."""
    if cardinality > 1:
        return dict(cardinality=cardinality // divisor, base_width=base_width * divisor)
    return dict(cardinality=1, base_width=base_width)


def merge_branches(ctx: LayerContext, branches: dict, *, kind: str, channels: int, name: str, expand=None,
                   resize: bool = True):
    """The Big-Little merge of every family (Section 3.1's S_k; official blresnet.py), of two or more
    branches, by addition or concatenation.

    For an addition the branches named in ``expand`` get a 1x1 conv + BN to ``channels`` at their own
    resolution (``{name}_{branch}_expand_conv`` / ``_expand_bn``; a concatenation keeps each branch's
    width); each branch but the last is resized onto the last one's grid (``{name}_{branch}_upsample``,
    ``ctx.upsample``; ``resize=False`` when they all are on it already, as in the stem module); then
    they are added or concatenated along the channels (``{name}_merge``) and pass a ReLU
    (``{name}_merge_relu``).

    Args:
      branches: ``{branch name: map}`` in the order they are merged: the Big-Branch first, the
        full-resolution Little-Branch last.
      kind: ``"add"`` (the paper) or ``"concat"`` (Table 7).
      channels: the module's width, which an addition brings the expanded branches to.
      expand: the branches widened for an addition; default every one but the Big-Branch (the
        official ``little_e``, there even when α = 1).
    """
    names = list(branches)
    expand = names[1:] if expand is None else expand
    merged = []
    for i, (branch, y) in enumerate(branches.items()):
        if kind == "add" and branch in expand:
            y = conv_bn(ctx, y, channels, 1, name=f"{name}_{branch}_expand_conv", bn_name=f"{name}_{branch}_expand_bn",
                        relu=False)
        if resize and i < len(names) - 1:
            y = ResizeLike(ctx.upsample, ctx.data_format, name=f"{name}_{branch}_upsample")([y, branches[names[-1]]])
        merged.append(y)
    if kind == "add":
        y = layers.Add(name=f"{name}_merge")(merged)
    else:
        y = layers.Concatenate(axis=ctx.channel_axis, name=f"{name}_merge")(merged)
    return layers.ReLU(name=f"{name}_merge_relu")(y)


def stem_module(ctx: LayerContext, x, *, alpha: int, name: str = "stage1", merge: Optional[str] = "add"):
    """The first bL-module on the 112x112 stem output (Table 4, row 2).

    big: 3x3/s2 conv + BN; little: 3x3 conv at C/α, 3x3/s2 conv, 1x1 conv back to C (each + BN; the
    official ``l_conv0..2``, so the 1x1 is the branch's own ``{name}_little_conv3`` here, not an
    expand conv); the merge, then a 1x1 conv + BN + ReLU that fuses them. Both branches stride, so
    nothing is resized. ``merge="concat"``: the big conv gives C(1 - 1/α), the little drops its 1x1;
    ``merge=None`` returns :class:`Unmerged` with the fusion conv applied to the big alone.
    """
    channels = ctx.channels(x)
    big_channels = channels - channels // alpha if merge == "concat" else channels
    big = conv_bn(ctx, x, big_channels, 3, strides=2, name=f"{name}_big_conv", bn_name=f"{name}_big_bn",
                  relu=merge is None)
    little = conv_bn(ctx, x, channels // alpha, 3, name=f"{name}_little_conv1", bn_name=f"{name}_little_bn1")
    little = conv_bn(ctx, little, channels // alpha, 3, strides=2, name=f"{name}_little_conv2",
                     bn_name=f"{name}_little_bn2", relu=merge != "concat")
    if merge is None:
        big = conv_bn(ctx, big, channels, 1, name=f"{name}_fusion_conv", bn_name=f"{name}_fusion_bn")
        return Unmerged(big, little, little_stride=1)
    if merge == "add":
        little = conv_bn(ctx, little, channels, 1, name=f"{name}_little_conv3", bn_name=f"{name}_little_bn3",
                         relu=False)
    y = merge_branches(ctx, {"big": big, "little": little}, kind=merge, channels=channels, name=name, expand=(),
                       resize=False)
    return conv_bn(ctx, y, channels, 1, name=f"{name}_fusion_conv", bn_name=f"{name}_fusion_bn")


def bl_module(ctx: LayerContext, x, planes: int, blocks: int, *, alpha: int, beta: int, stride: int, name: str,
              merge: Optional[str] = "add", branches: int = 2, cardinality: int = 1, base_width: int = 64,
              se: bool = False):
    """One Big-Little module replacing a stage of ``blocks`` bottlenecks with ``planes`` outputs.

    ``x`` is a tensor, or the :class:`Unmerged` branches of the previous module. Returns
    ``(output, merged)``: ``merged`` is the full-resolution map after the merge (a detection
    feature tap), ``output`` the fusion block's result at the module's ``stride``. With
    ``merge=None`` (two branches, a stride-2 transition: models/resnet.py's MERGE_LAYOUTS) it
    returns ``(Unmerged(...), None)`` instead (see the module docstring).
    """
    block = dict(cardinality=cardinality, base_width=base_width, se=se)
    if branches == 3:
        return three_branch_module(ctx, x, planes, blocks, alpha=alpha, beta=beta, stride=stride, name=name,
                                   **block)
    big_in, little_in, little_stride = (x.big, x.little, x.little_stride) if isinstance(x, Unmerged) else (x, x, 1)
    # Big: blocks-1 bottlenecks, the first at stride 2; no ReLU at its end (the merge has one).
    big_planes = planes - planes // alpha if merge == "concat" else planes
    big = stack(ctx, big_in, big_planes, blocks - 1, stride=2, last_relu=merge is None, name=f"{name}_big",
                **block)
    # Little: C/α wide; ResNeXt keeps the group width by using base_width*α and cardinality/α groups.
    little = stack(ctx, little_in, planes // alpha, little_blocks(blocks, beta), stride=little_stride,
                   name=f"{name}_little", se=se, **_thin(cardinality, base_width, alpha))
    if merge is None:
        big = stack(ctx, big, planes, 1, name=f"{name}_fusion", **block)
        return Unmerged(big, little, little_stride=2), None
    merged = merge_branches(ctx, {"big": big, "little": little}, kind=merge, channels=planes, name=name)
    out = stack(ctx, merged, planes, 1, stride=stride, name=f"{name}_fusion", **block)
    return out, merged


def three_branch_module(ctx: LayerContext, x, planes: int, blocks: int, *, alpha: int, beta: int, stride: int,
                        name: str, fusion: bool = True, cardinality: int = 1, base_width: int = 64,
                        se: bool = False):
    """A K=3 bL-module (Table 7): branches at 1, 1/2 and 1/4 of ``x``'s resolution, merged by addition.

    Returns ``(output, merged)`` as :func:`bl_module`. ``fusion=False`` (the first module of the K=3
    network) replaces the fusion bottleneck by ResNet-50's parameter-free 3x3/s2 max-pool
    (``{name}_pool``) when ``stride`` is 2, and by nothing when it is 1.
    """
    block = dict(cardinality=cardinality, base_width=base_width, se=se)
    pooled = avg_pool_3x3_s2(ctx, x, name=f"{name}_big_pool")
    big = stack(ctx, pooled, planes, blocks - 1, stride=2, last_relu=False, name=f"{name}_big", **block)
    middle = stack(ctx, x, planes // alpha, little_blocks(blocks, beta), stride=2, name=f"{name}_middle", se=se,
                   **_thin(cardinality, base_width, alpha))
    little = stack(ctx, x, planes // alpha ** 2, little_blocks(blocks, beta ** 2), name=f"{name}_little", se=se,
                   **_thin(cardinality, base_width, alpha ** 2))
    merged = merge_branches(ctx, {"big": big, "middle": middle, "little": little}, kind="add", channels=planes,
                            name=name)
    if fusion:
        return stack(ctx, merged, planes, 1, stride=stride, name=f"{name}_fusion", **block), merged
    if stride == 1:
        return merged, merged
    return max_pool_3x3_s2(ctx, merged, name=f"{name}_pool"), merged
