"""Miniatures of each model family: the registry's builders at a few channels and blocks, for
preflight checks (``python -m bl_net_tf.doctor``) and the layout and precision tests.

A full bL-ResNet-50 takes 30-40 s to XLA-compile on a 2-core CPU; a miniature takes seconds and
still contains every kind of layer whose dtype or data format matters, built by the same functions:

``resnet``      the bL-ResNet/ResNeXt/SE-ResNeXt builders: a module that does not merge (Table 8's
                fewer merges), then a concat-merged one (Table 7) that takes both of its inputs,
                with ResNeXt groups and SE, then a K=3 module (Table 7; an add merge of three
                bilinearly upsampled branches); the 3x3/s2 average-pooling shortcuts, the grouped
                convolutions, the fused BatchNorm, the classifier head.
``speech``      a three-branch and a two-branch speech bL-module (frequency-only strides and bilinear
                upsampling, time crops, 1x1 expand convs, transitions), a plain stage and the speech
                head; it reads just enough frames for one prediction.
``shufflenet``  a bL-ShuffleNetV2 stage (average-pooled Big-Branch, Little-Branch, bilinear
                upsampling, add), a plain stage (depthwise convolutions, channel split and shuffle)
                and the 1x1 head conv.

Image miniatures take RGB images in [0, 255] (NHWC, as the trainer feeds them), speech ones
log-mel features; all return float32 logits ``[batch, num_classes]``.
"""
from __future__ import annotations

import keras
from keras import layers

from bl_net_tf.models import big_little, blocks, resnet, shufflenet, speech
from bl_net_tf.models.factory import TO_CHANNELS_FIRST_DIMS
from bl_net_tf.models.layers import ImageNetNormalization, LayerContext, conv_bn, max_pool_3x3_s2

FAMILIES = ("resnet", "speech", "shufflenet")
IMAGE_SIZE = 32
ALPHA, BETA = 2, 4
# Each module's output channels: wide enough for ResNeXt groups of 2 channels and an SE reduction
# of 16 in the Little-Branch, small enough to compile in seconds.
PLANES = 32
RESNEXT = dict(cardinality=4, base_width=16)
# Not 8 channels in the speech stem: with an 8-channel stem before a pyramid module, TF 2.21's oneDNN
# bfloat16 CPU kernels corrupted memory in the backward pass (a segfault or "malloc(): unaligned
# tcache chunk" within 3 steps, on an AVX512-BF16 Xeon; not with TF_ENABLE_ONEDNN_OPTS=0, not in
# float32, not with the registry models' 64-channel stems).
SPEECH_CHANNELS = 16
SPEECH_LAYOUT = (
    speech.Stage(SPEECH_CHANNELS, (speech.Branch("big", 32, 4, (1,)), speech.Branch("mid1", 16, 2, (1,)),
                                   speech.Branch("little", 8, 1, (2,))), transition=True),
    speech.Stage(2 * SPEECH_CHANNELS, (speech.Branch("big", 32, 2, (2,)), speech.Branch("little", 16, 1, (1,))),
                 transition=True),
    speech.Stage(2 * SPEECH_CHANNELS, (speech.Branch("", 32, 1, (2,)),), stride=2),
)
SHUFFLE_CHANNELS = (16, 32, 64)


def speech_frames() -> int:
    """Frames the speech miniature reads for one prediction: its stem's and each stage's time
    context (a module's is its deepest branch's) plus one."""
    convs = sum(max(b.convs for b in stage.branches) + stage.transition for stage in SPEECH_LAYOUT)
    return 1 + 4 + 2 * convs


def input_shape(family: str, image_size: int = IMAGE_SIZE) -> tuple:
    """The NHWC input shape of ``family``'s miniature."""
    if family == "speech":
        return (speech.INPUT_SHAPE[0], speech_frames(), speech.INPUT_SHAPE[2])
    return (image_size, image_size, 3)


def _resnet(ctx: LayerContext, x):
    x = conv_bn(ctx, x, PLANES // 2, 7, strides=2, name="stem_conv", bn_name="stem_bn")
    x, _ = big_little.bl_module(ctx, x, PLANES, 2, alpha=ALPHA, beta=BETA, stride=2, name="stage2", merge=None)
    x, _ = big_little.bl_module(ctx, x, PLANES, 2, alpha=ALPHA, beta=BETA, stride=2, name="stage3", merge="concat",
                                se=True, **RESNEXT)
    x, _ = big_little.three_branch_module(ctx, x, PLANES, 2, alpha=ALPHA, beta=BETA, stride=2, name="stage4")
    return x


def _shufflenet(ctx: LayerContext, x):
    x = conv_bn(ctx, x, SHUFFLE_CHANNELS[0] // 2, 3, strides=2, name="stem_conv", bn_name="stem_bn")
    x = max_pool_3x3_s2(ctx, x, name="stage1_pool")
    x = shufflenet.bl_shuffle_stage(ctx, x, SHUFFLE_CHANNELS[0], 1, alpha=ALPHA, beta=2, name="stage2")
    x = shufflenet.shuffle_stack(ctx, x, SHUFFLE_CHANNELS[1], 2, stride=2, name="stage3")
    return conv_bn(ctx, x, SHUFFLE_CHANNELS[2], 1, name="head_conv", bn_name="head_bn")


def build(family: str, *, data_format: str, num_classes: int = 10, image_size: int = IMAGE_SIZE,
          name=None) -> keras.Model:
    """``family``'s miniature (see the module docstring) under the current dtype policy.

    Raises:
      ValueError: an unknown family.
    """
    if family not in FAMILIES:
        raise ValueError(f"unknown miniature family {family!r}; allowed: {', '.join(FAMILIES)}")
    ctx = LayerContext(data_format=data_format)
    inputs = keras.Input(input_shape(family, image_size), name="images")
    x = inputs if family == "speech" else ImageNetNormalization(name="normalize")(inputs)
    if data_format == "channels_first":
        x = layers.Permute(TO_CHANNELS_FIRST_DIMS, name="to_channels_first")(x)
    if family == "speech":
        x = speech.build_speech_layout(ctx, x, SPEECH_LAYOUT, stem_channels=SPEECH_CHANNELS)[-1]
        logits = speech.speech_head(ctx, x, num_classes, channels=SPEECH_CHANNELS)
    else:
        x = _resnet(ctx, x) if family == "resnet" else _shufflenet(ctx, x)
        logits = resnet.classifier_head(ctx, x, num_classes)
    return keras.Model(inputs, logits, name=name or f"miniature_{family}")
