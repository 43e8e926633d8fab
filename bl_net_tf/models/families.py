"""Model families: what ``create_model`` needs to know about each family of the registry.

A :class:`Family` says how its archs are built (feature extractor and head), what they take by
default (input shape, classes), which options they allow (merge kinds, the ablations of Tables 7
and 8), the family's own limits (``check``) and the stride of each feature map ``features_only``
returns. :func:`bl_net_tf.models.factory.validate_model_options` runs the checks every family
shares, then the family's; nothing is built before all of them pass.
"""
from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Callable

from bl_net_tf import constants
from bl_net_tf.models import resnet, shufflenet, speech

if TYPE_CHECKING:  # the checks take the request create_model validates
    from bl_net_tf.models.factory import ModelOptions

# The stride of the C2..C5 feature maps of an image network (detection's convention).
FEATURE_STRIDES = (4, 8, 16, 32)


@dataclasses.dataclass(frozen=True)
class Family:
    """One family of architectures (registry.ArchSpec.family names it).

    Attributes:
      build: ``(spec, ctx, inputs, *, bl) -> [feature maps]`` on ``inputs`` already in
        ``ctx.data_format``; the last map is the head's input.
      head: ``(ctx, x, num_classes) -> logits``.
      check: ``(options) -> None``: the family's own limits on a request (α against the widths,
        the input size, the ablations), raising ValueError in one line.
      feature_strides: ``(options) -> (stride, ...)``: input size / size of each feature map.
      input_shape: the default ``(height, width, channels)``, NHWC.
      num_classes: the default number of logits.
      merges: the merge kinds its bL archs take.
      ablations: its bL archs take Tables 7 and 8's ``branches`` and ``merges``.
      shortcuts: the projection shortcuts its bottlenecks take (``constants.SHORTCUT_KINDS``);
        empty: the family has no such option.
      default_shortcut: ``(spec) -> kind``: an arch's faithful shortcut (None without the option).
    """

    build: Callable
    head: Callable
    check: Callable
    feature_strides: Callable
    input_shape: tuple = (constants.DEFAULT_IMAGE_SIZE, constants.DEFAULT_IMAGE_SIZE, 3)
    num_classes: int = constants.IMAGENET_CLASSES
    merges: tuple = constants.MERGE_KINDS
    ablations: bool = False
    shortcuts: tuple = ()
    default_shortcut: Callable = lambda spec: None


def check_image_size(input_shape: tuple) -> None:
    """Raises ValueError unless each known side is at least the networks' total stride (32)."""
    for size in input_shape[:2]:
        if size is not None and size < constants.MIN_INPUT_SIZE:
            raise ValueError(f"input size {input_shape[:2]} is too small for the network's stride of 32: "
                             f"the minimum is {constants.MIN_INPUT_SIZE}x{constants.MIN_INPUT_SIZE}")


def _check_stem_alpha(options: ModelOptions, stem_channels: int) -> None:
    if options.spec.big_little and stem_channels % options.alpha:
        raise ValueError(f"alpha must divide the {stem_channels} stem channels (1, 2, 4, 8, ...), got {options.alpha}")


def _check_resnet(options: ModelOptions) -> None:
    """bL-ResNet/ResNeXt/SE-ResNeXt: α against the stem and the groups, and Tables 7-8's ablations
    (at most one of them is on: validate_model_options checked it)."""
    spec, alpha = options.spec, options.alpha
    check_image_size(options.input_shape)
    _check_stem_alpha(options, resnet.STEM_CHANNELS)
    if spec.big_little and spec.cardinality > 1 and spec.cardinality % alpha:
        raise ValueError(f"cardinality {spec.cardinality} must be divisible by alpha {alpha}: the "
                         f"Little-Branch uses cardinality/alpha groups")
    if spec.cardinality > 1 and spec.base_width < 4:
        raise ValueError(f"base_width {spec.base_width} is too small: each group needs at least one channel "
                         f"(base_width >= 4)")
    allowed = resnet.SUPPORTED_MERGES[spec.depth] if spec.big_little else (resnet.DEFAULT_MERGES,)
    if options.merges not in allowed:
        raise ValueError(f"merges={options.merges} is not defined for depth {spec.depth}; allowed: "
                         f"{', '.join(map(str, allowed))} (Table 8)")
    if options.merge == "concat" and alpha < 2:
        raise ValueError(f"merge='concat' needs alpha >= 2 (the Big-Branch keeps 1 - 1/alpha of the channels), "
                         f"got {alpha}")
    if options.branches == 3 and (resnet.STAGE_PLANES[0] % alpha ** 2
                                  or spec.cardinality > 1 and spec.cardinality % alpha ** 2):
        raise ValueError(f"branches=3 makes the little branch 1/alpha**2 as wide: alpha**2 = {alpha ** 2} must "
                         f"divide {resnet.STAGE_PLANES[0]} channels (and a ResNeXt cardinality), got alpha={alpha}")
    if options.features_only and not all(resnet.MERGE_LAYOUTS[options.merges].stage_merges):
        merged = [m for m in allowed if all(resnet.MERGE_LAYOUTS[m].stage_merges)]
        raise ValueError(f"features_only needs every stage to end in a merge (merges="
                         f"{', '.join(map(str, merged))}), got merges={options.merges}")


def _resnet_shortcut(spec) -> str:
    """Each arch's shortcut as the paper's models were trained: ``"conv"`` for the plain baselines
    (lowres included), which the paper trained with Tensorpack, whose ``resnet_shortcut`` is a
    strided 1x1 conv + BN (examples/ResNet/resnet_model.py); ``"avgpool"`` for the bL models and
    their ablations, the official release's ``downsample`` (AvgPool2d(3, 2, padding=1), then a 1x1
    conv + BN; models/blresnet.py, blresnext.py, blseresnext.py), which its weights need. The
    parameter counts are the same either way; the pooled one usually gains a few tenths of a point
    (ResNet-D), which on the baselines would narrow the gap the paper reports."""
    return "avgpool" if spec.big_little else "conv"


def _resnet_strides(options: ModelOptions) -> tuple:
    """Table 6's lowres models run every stage at twice the stride (the bL stem before the max-pool)."""
    return tuple(2 * s for s in FEATURE_STRIDES) if options.spec.lowres else FEATURE_STRIDES


def _check_speech(options: ModelOptions) -> None:
    speech.check_input_shape(options.input_shape)
    _check_stem_alpha(options, speech.STEM_CHANNELS)


def _speech_strides(options: ModelOptions) -> tuple:
    """In frequency (time is cropped, never strided): the stem's 2, then each plain stage's stride
    and each transition layer's 2, stage by stage."""
    stride, strides = 2, []
    for stage in speech.layout_for(options.spec, options.alpha, options.beta):
        stride *= stage.stride * (2 if stage.transition else 1)
        strides.append(stride)
    return tuple(strides)


def _check_shufflenet(options: ModelOptions) -> None:
    check_image_size(options.input_shape)
    if options.spec.big_little:
        shufflenet.check_alpha(options.spec, options.alpha)


RESNET = Family(build=resnet.build_resnet, head=resnet.classifier_head, check=_check_resnet,
                feature_strides=_resnet_strides, ablations=True, shortcuts=constants.SHORTCUT_KINDS,
                default_shortcut=_resnet_shortcut)
SPEECH = Family(build=speech.build_speech, head=speech.speech_head, check=_check_speech,
                feature_strides=_speech_strides, input_shape=speech.INPUT_SHAPE,
                num_classes=constants.SPEECH_NUM_CLASSES)
SHUFFLENET = Family(build=shufflenet.build_shufflenet, head=resnet.classifier_head, check=_check_shufflenet,
                    feature_strides=lambda options: FEATURE_STRIDES, merges=("add",))
# registry.ArchSpec.family -> Family; ResNet, ResNeXt and SE-ResNeXt differ only in their bottleneck.
FAMILIES = {"resnet": RESNET, "resnext": RESNET, "seresnext": RESNET, "speech": SPEECH, "shufflenetv2": SHUFFLENET}
