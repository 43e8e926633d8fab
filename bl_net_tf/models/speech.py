"""ResNet-22 acoustic models and their Big-Little versions (paper Section 4.2, Appendix B, Table 12).

Input contract: ``[batch, 64 mel bins, T frames, 3]`` (log-mel, delta, delta-delta; NHWC with
frequency as height and time as width, whatever ``data_format`` is: a channels_first model
transposes to ``[batch, 3, 64, T]`` inside, the paper's ``batch x 3 x 64 x 49``). With the
paper's T = 49 the model predicts the central frame: logits ``[batch, num_classes]``; a longer
(or dynamic, ``None``) T gives one prediction per frame, ``[batch, T - 48, num_classes]``: the
network is a sliding window over the utterance (no padding in time), so running it on a whole
utterance equals running it on each 49-frame window.

What differs from the image models (Appendix B.2):
  * every convolution strides and pads in frequency only; time is never padded, so a k-wide
    convolution shortens time by k - 1 (T = 49 -> 45 after the 5x5 stem, 1 at the end);
  * residual blocks are two (or one) 3x3 convolutions; shortcuts are cropped in time by the
    block's shrinkage (Saon et al. 2017) and projected by a 1x1 conv + BN (stride 2 in frequency)
    where the shape changes;
  * a Big-Little module's branches are cropped in time to the deepest branch before merging, and
    the Big-Branch is upsampled (bilinearly, by default) in frequency only: the time sizes agree
    by then;
  * between bL-modules a transition layer (a residual block of one 3x3 convolution, stride 2)
    halves the frequency; the last block of each preceding stage gives up one convolution for it;
  * the head is a 4x1 convolution (the remaining 4 frequency bins) to 512, then a 1x1 one to the
    32k context-dependent states.

Layer names:
  stem_conv, stem_bn                          5x5 / s2 convolution (64 -> 32 bins, 49 -> 45 frames)
  stage{n}_block{j}_conv{k}, _bn{k}           plain stages (all four of ResNet-22)
  stage{n}_{branch}_block{j}_conv{k}, _bn{k}  bL-module branches: big, little (mid1, mid2 in the
                                              pyramid, from low to high resolution)
  ..._shortcut_crop / _shortcut_conv / _shortcut_bn / _add / _out
  stage{n}_{branch}_crop                      time crop to the deepest branch
  stage{n}_{branch}_expand_conv / _expand_bn  1x1 conv to the module's width before an add-merge
  stage{n}_{branch}_upsample                  frequency upsampling
  stage{n}_merge, stage{n}_merge_relu         add or concat (big_little.merge_branches)
  stage{n}_fuse_conv / _fuse_bn / _fuse_conv_relu   after a concat: 1x1 conv back to the width
  stage{n}_transition_conv1, ...              the transition layer after module n
  head_conv, head_bn                          4x1 convolution to 512
  head_fc                                     1x1 convolution (with bias) to the logits
"""
from __future__ import annotations

import dataclasses

from keras import layers

from bl_net_tf import constants
from bl_net_tf.models.big_little import little_depth, merge_branches
from bl_net_tf.models.layers import CONV_INIT, LOGITS_DTYPE, LayerContext, batch_norm, conv_bn
from bl_net_tf.models.registry import ArchSpec

# (mel bins, frames, log-mel/delta/delta-delta), NHWC
INPUT_SHAPE = (constants.SPEECH_MEL_BINS, constants.SPEECH_CONTEXT_FRAMES, 3)
CONTEXT = constants.SPEECH_CONTEXT_FRAMES - 1  # frames consumed by the network: T_out = T_in - 48
STEM_CHANNELS = 64
STAGE_CHANNELS = (64, 128, 256, 512)
RESNET22_BLOCKS = (3, 3, 3, 2)  # two-convolution residual blocks per stage
HEAD_CHANNELS = 512
HEAD_BINS = 4  # frequency bins left after the stem's and three stages' stride 2: 64 / 16


@dataclasses.dataclass(frozen=True)
class Branch:
    """One branch of a speech module.

    Attributes:
      name: ``big`` / ``little`` / ``mid{i}``; empty for a plain (one-branch) stage.
      channels: width of every convolution in the branch.
      scale: frequency downsampling inside the branch (1: the module's resolution); the first
        convolution carries the stride and the output is upsampled back.
      blocks: 3x3 convolutions per residual block, e.g. ``(2, 2, 1)``.
    """

    name: str
    channels: int
    scale: int
    blocks: tuple

    @property
    def convs(self) -> int:
        return sum(self.blocks)


@dataclasses.dataclass(frozen=True)
class Stage:
    """One stage: a plain ResNet stage (one branch) or a Big-Little module (several).

    ``stride`` is a plain stage's first-convolution stride; ``transition`` appends a one-convolution
    stride-2 residual block at ``channels`` after the module.
    """

    channels: int
    branches: tuple
    stride: int = 1
    transition: bool = False


def split_convs(convs: int) -> tuple:
    """Residual blocks of two 3x3 convolutions, the last one single if ``convs`` is odd
    (Appendix B.2: "one residual block with two 3x3 convolutions and one with one")."""
    return (2,) * (convs // 2) + (1,) * (convs % 2)


def resnet22_layout(channels: tuple = STAGE_CHANNELS) -> tuple:
    """ResNet-22: (3x3, 64) x 3; (3x3, 128, s2) x 3; (3x3, 256, s2) x 3; (3x3, 512, s2) x 2
    (``channels`` scales the widths, e.g. for a tiny test model)."""
    return tuple(Stage(c, (Branch("", c, 1, (2,) * n),), stride=1 if i == 0 else 2)
                 for i, (c, n) in enumerate(zip(channels, RESNET22_BLOCKS)))


def bl_resnet22_layout(alpha: int, beta: int, pyramid: bool = False, channels: tuple = STAGE_CHANNELS) -> tuple:
    """bL-ResNet-22 (Table 12) and bL-PYR-ResNet-22 (Appendix B.2).

    Each stage becomes a bL-module followed by a transition layer (none after the last). The
    Big-Branch (stride 2, full width) has the stage's six convolutions minus the one moved into the
    transition layer, as residual blocks (2, 2, 1); the last stage keeps all four, (2, 2). The
    Little-Branch (full resolution, width / α) has ceil(L / β) of the Big-Branch's L, as blocks
    of two and a single one. Table 12 keeps ResNet-22's last stage for α = 2 and branches it for
    α = 4; we keep it plain whenever α <= 2. The pyramid has 4, 3 and 2 branches in stages 1-3
    (:func:`pyramid_branches`) and ResNet-22's last stage.
    """
    stages = []
    last = len(channels) - 1
    for i, (c, n) in enumerate(zip(channels, RESNET22_BLOCKS)):
        if i == last and (pyramid or alpha <= 2):
            stages.append(Stage(c, (Branch("", c, 1, (2,) * n),)))
            continue
        big_convs = 2 * n - (i < last)
        little = split_convs(little_depth(big_convs, beta))
        if pyramid and i < 2:
            branches = pyramid_branches(c, 4 - i, split_convs(big_convs), little, alpha)
        else:
            branches = (Branch("big", c, 2, split_convs(big_convs)), Branch("little", c // alpha, 1, little))
        stages.append(Stage(c, branches, transition=i < last))
    return tuple(stages)


def pyramid_branches(channels: int, count: int, big: tuple, little: tuple, alpha: int) -> tuple:
    """``count`` branches, branch k (k = 0 the Big-Branch) at 1/2^(count-1-k) resolution and α^k
    times thinner than the Big-Branch; every branch but the Big-Branch has the Little-Branch's
    depth. Stage 1's smallest branch would have 1 channel with α = 4, so the widths are scaled up
    until it has 4 (Appendix B.2: 256, 64, 16, 4). The module still merges at ``channels``, so
    every branch of another width gets a 1x1 conv (the Big-Branch's 256 included)."""
    top = channels
    while top // alpha ** (count - 1) < 4:
        top *= alpha
    names = ["big"] + [f"mid{k}" for k in range(1, count - 1)] + ["little"]
    return tuple(Branch(name, top // alpha ** k, 2 ** (count - 1 - k), big if k == 0 else little)
                 for k, name in enumerate(names))


def freq_conv(ctx: LayerContext, x, filters: int, kernel, *, name: str, stride: int = 1, pad: bool = True):
    """A convolution padded by k//2 (``pad``) and strided in frequency only; 'valid' in time."""
    kf, kt = (kernel, kernel) if isinstance(kernel, int) else kernel
    if pad and kf > 1:
        x = layers.ZeroPadding2D(((kf // 2, kf // 2), (0, 0)), data_format=ctx.data_format, name=f"{name}_pad")(x)
    return layers.Conv2D(filters, (kf, kt), strides=(stride, 1), padding="valid", use_bias=False,
                         data_format=ctx.data_format, kernel_initializer=CONV_INIT, name=name)(x)


def crop_time(ctx: LayerContext, x, frames: int, *, name: str):
    """Drops ``frames`` frames at each end (the centre is what the deeper path still sees)."""
    if frames == 0:
        return x
    return layers.Cropping2D(((0, 0), (frames, frames)), data_format=ctx.data_format, name=name)(x)


def residual_block(ctx: LayerContext, x, channels: int, convs: int, *, name: str, stride: int = 1,
                   last_relu: bool = True):
    """``convs`` 3x3 convolutions (the first with ``stride`` in frequency) and a shortcut cropped by
    one frame per convolution at each end."""
    y = x
    for k in range(1, convs + 1):
        y = freq_conv(ctx, y, channels, 3, stride=stride if k == 1 else 1, name=f"{name}_conv{k}")
        y = batch_norm(ctx, y, name=f"{name}_bn{k}", zero_gamma=k == convs)
        if k < convs:
            y = layers.ReLU(name=f"{name}_relu{k}")(y)
    residual = crop_time(ctx, x, convs, name=f"{name}_shortcut_crop")
    if stride != 1 or ctx.channels(x) != channels:
        residual = freq_conv(ctx, residual, channels, 1, stride=stride, name=f"{name}_shortcut_conv")
        residual = batch_norm(ctx, residual, name=f"{name}_shortcut_bn")
    y = layers.Add(name=f"{name}_add")([y, residual])
    if last_relu:
        y = layers.ReLU(name=f"{name}_out")(y)
    return y


def branch(ctx: LayerContext, x, spec: Branch, *, name: str, stride: int = 1, last_relu: bool = True):
    """The branch's residual blocks; the first convolution strides by ``spec.scale`` (a
    low-resolution branch of a bL-module) or ``stride`` (a plain stage) in frequency."""
    for j, convs in enumerate(spec.blocks):
        x = residual_block(ctx, x, spec.channels, convs, stride=(spec.scale * stride) if j == 0 else 1,
                           name=f"{name}_block{j + 1}", last_relu=last_relu or j < len(spec.blocks) - 1)
    return x


def bl_module(ctx: LayerContext, x, stage: Stage, *, merge: str, name: str):
    """Branches on the same input, each cropped in time to the deepest (as the shortcuts are, before
    their projection), then merged at the module's resolution and width (big_little.merge_branches:
    a 1x1 conv + BN where a branch has another width, upsampling in frequency, add, ReLU). ``concat``
    (Appendix B.2) concatenates, then a 1x1 conv + BN + ReLU back to the module's width fuses the
    maps; its branches end in their own ReLU, so the merge's ReLU keeps them as they are."""
    deepest = max(b.convs for b in stage.branches)
    branches = {b.name: crop_time(ctx, branch(ctx, x, b, name=f"{name}_{b.name}", last_relu=merge != "add"),
                                  deepest - b.convs, name=f"{name}_{b.name}_crop")
                for b in stage.branches}
    y = merge_branches(ctx, branches, kind=merge, channels=stage.channels, name=name,
                       expand=[b.name for b in stage.branches if b.channels != stage.channels])
    if merge == "concat":
        y = conv_bn(ctx, y, stage.channels, 1, name=f"{name}_fuse_conv", bn_name=f"{name}_fuse_bn")
    return y


def build_speech_layout(ctx: LayerContext, inputs, layout: tuple, *, merge: str = "add",
                        stem_channels: int = STEM_CHANNELS) -> list:
    """The feature extractor: stem, stages, transitions. Returns each stage's output (after its
    transition layer, if any)."""
    x = freq_conv(ctx, inputs, stem_channels, 5, stride=2, name="stem_conv")
    x = batch_norm(ctx, x, name="stem_bn")
    x = layers.ReLU(name="stem_relu")(x)
    features = []
    for n, stage in enumerate(layout, start=1):
        if len(stage.branches) == 1:
            x = branch(ctx, x, stage.branches[0], stride=stage.stride, name=f"stage{n}")
        else:
            x = bl_module(ctx, x, stage, merge=merge, name=f"stage{n}")
        if stage.transition:
            x = residual_block(ctx, x, stage.channels, 1, stride=2, name=f"stage{n}_transition")
        features.append(x)
    return features


def speech_head(ctx: LayerContext, x, num_classes: int, channels: int = HEAD_CHANNELS):
    """4x1 conv + BN + ReLU to 512, a 1x1 conv to the logits; [batch, classes] when one frame is
    left, else [batch, frames, classes]. The 1x1 conv and what follows it run in float32
    (``LOGITS_DTYPE``; a layer casts its input to its own dtype, so all of them are set)."""
    x = freq_conv(ctx, x, channels, (HEAD_BINS, 1), pad=False, name="head_conv")
    x = batch_norm(ctx, x, name="head_bn")
    x = layers.ReLU(name="head_relu")(x)
    x = layers.Conv2D(num_classes, 1, use_bias=True, data_format=ctx.data_format, dtype=LOGITS_DTYPE,
                      name="head_fc")(x)
    if ctx.data_format == "channels_first":
        x = layers.Permute((2, 3, 1), dtype=LOGITS_DTYPE, name="head_to_channels_last")(x)
    frames = x.shape[2]
    if frames == 1:
        return layers.Reshape((num_classes,), dtype=LOGITS_DTYPE, name="logits")(x)
    return layers.Reshape((-1, num_classes), dtype=LOGITS_DTYPE, name="logits")(x)


def layout_for(spec: ArchSpec, alpha: int, beta: int) -> tuple:
    """The stage layout of a registered speech arch."""
    if not spec.big_little:
        return resnet22_layout()
    return bl_resnet22_layout(alpha, beta, pyramid=spec.pyramid)


def check_input_shape(input_shape) -> None:
    """Raises ValueError unless ``input_shape`` is (64 mel bins, >= 49 frames or None, channels)."""
    bins, frames = input_shape[0], input_shape[1]
    if bins != INPUT_SHAPE[0] or (frames is not None and frames < CONTEXT + 1):
        raise ValueError(f"speech models take ({INPUT_SHAPE[0]} mel bins, frames >= {CONTEXT + 1} or None, 3) inputs "
                         f"(frequency x time x log-mel/delta/delta-delta), got {tuple(input_shape)}")


def build_speech(spec: ArchSpec, ctx: LayerContext, inputs, *, bl):
    """Builds the acoustic model's feature extractor on ``inputs`` (already in ``ctx.data_format``);
    ``bl`` carries α, β and the merge (bL archs only), validated with :func:`check_input_shape` by
    models/families.py. Returns each stage's output; the head is :func:`speech_head`."""
    merge = bl.merge if spec.big_little else "add"
    return build_speech_layout(ctx, inputs, layout_for(spec, bl.alpha, bl.beta), merge=merge)
