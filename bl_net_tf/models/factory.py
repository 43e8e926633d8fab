"""``create_model``: validates the request, then builds a Keras functional model from the registry."""
from __future__ import annotations

from typing import Optional

import keras
from keras import layers

from bl_net_tf.models import registry, shufflenet, speech
from bl_net_tf.models.big_little import BRANCH_COUNTS, MERGE_KINDS
from bl_net_tf.models.layers import UPSAMPLE_MODES, ImageNetNormalization, LayerContext
from bl_net_tf.models.resnet import (DEFAULT_MERGES, MERGE_LAYOUTS, MIN_INPUT_SIZE, STAGE_PLANES, SUPPORTED_MERGES,
                                     BigLittleOptions, build_resnet, classifier_head)

DATA_FORMATS = ("channels_first", "channels_last")
MERGES = MERGE_KINDS
DEFAULT_IMAGE_SIZE = 224
# Feature-extractor builder per registry family: (spec, ctx, inputs, bl=...) -> [C2, C3, C4, C5].
BUILDERS = {"resnet": build_resnet, "resnext": build_resnet, "seresnext": build_resnet,
            "speech": speech.build_speech, "shufflenetv2": shufflenet.build_shufflenet}
# Per-family departures from the ImageNet defaults (224x224x3 in, 1000 classes, GAP + FC head, MERGES).
DEFAULT_INPUT_SHAPES = {"speech": speech.INPUT_SHAPE}
DEFAULT_NUM_CLASSES = {"speech": speech.NUM_CLASSES}
HEADS = {"speech": speech.speech_head}
FAMILY_MERGES = {"speech": speech.MERGES, "shufflenetv2": ("add",)}


def default_data_format() -> str:
    """channels_first where a GPU is visible (cuDNN's native layout), channels_last otherwise
    (TF's CPU kernels)."""
    import tensorflow as tf

    return "channels_first" if tf.config.list_physical_devices("GPU") else "channels_last"


def _check_positive_int(label: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{label} must be an integer >= 1, got {value!r}")


def _check_input_shape(input_shape, default=None) -> tuple:
    if input_shape is None:
        return default or (DEFAULT_IMAGE_SIZE, DEFAULT_IMAGE_SIZE, 3)
    input_shape = tuple(input_shape)
    if len(input_shape) != 3 or input_shape[-1] not in (1, 3, None):
        raise ValueError(f"input_shape must be (height, width, 3) (images are NHWC whatever the data_format), "
                         f"got {input_shape}")
    for size in input_shape[:2]:
        if size is not None and size < MIN_INPUT_SIZE:
            raise ValueError(f"input size {input_shape[:2]} is too small for the network's stride of 32: "
                             f"the minimum is {MIN_INPUT_SIZE}x{MIN_INPUT_SIZE}")
    return input_shape


def _check_ablations(spec: registry.ArchSpec, *, alpha: int, merge: str, branches: int, merges: Optional[int],
                      features_only: bool) -> int:
    """Validates the Table 7 / Table 8 ablations (bL-ResNet family only); returns the merge count."""
    if isinstance(branches, bool) or branches not in BRANCH_COUNTS:
        raise ValueError(f"branches must be one of {', '.join(map(str, BRANCH_COUNTS))} (Table 7's K), "
                         f"got {branches!r}")
    if merges is not None and (isinstance(merges, bool) or not isinstance(merges, int)):
        raise ValueError(f"merges must be an integer or None (= {DEFAULT_MERGES}), got {merges!r}")
    merges = DEFAULT_MERGES if merges is None else merges
    resnet_family = BUILDERS[spec.family] is build_resnet
    ablations = [label for label, on in (("merge='concat'", resnet_family and merge != "add"),
                                         (f"branches={branches}", branches != 2),
                                         (f"merges={merges}", merges != DEFAULT_MERGES)) if on]
    if not ablations:
        return merges
    if not (resnet_family and spec.big_little):
        raise ValueError(f"{ablations[0]} is an ablation of the bL-ResNet/ResNeXt/SE-ResNeXt archs, "
                         f"not of {spec.name!r}")
    if len(ablations) > 1:
        raise ValueError(f"{' and '.join(ablations)} are separate ablations (Tables 7, 8); choose one at a time")
    allowed = SUPPORTED_MERGES[spec.depth]
    if merges not in allowed:
        raise ValueError(f"merges={merges} is not defined for depth {spec.depth}; allowed: "
                         f"{', '.join(map(str, allowed))} (Table 8)")
    if merge == "concat" and alpha < 2:
        raise ValueError(f"merge='concat' needs alpha >= 2 (the Big-Branch keeps 1 - 1/alpha of the channels), "
                         f"got {alpha}")
    if branches == 3 and (STAGE_PLANES[0] % alpha ** 2 or spec.cardinality > 1 and spec.cardinality % alpha ** 2):
        raise ValueError(f"branches=3 makes the little branch 1/alpha**2 as wide: alpha**2 = {alpha ** 2} must "
                         f"divide {STAGE_PLANES[0]} channels (and a ResNeXt cardinality), got alpha={alpha}")
    if features_only and not all(MERGE_LAYOUTS[merges].stage_merges):
        raise ValueError(f"features_only needs every stage to end in a merge (merges="
                         f"{', '.join(str(m) for m in allowed if all(MERGE_LAYOUTS[m].stage_merges))}), got "
                         f"merges={merges}")
    return merges


def create_model(arch: str, *, alpha: int = 2, beta: int = 4, num_classes: Optional[int] = None, input_shape=None,
                 data_format: Optional[str] = None, include_preprocessing: bool = False, merge: str = "add",
                 branches: int = 2, merges: Optional[int] = None, upsample: str = "bilinear",
                 cardinality: Optional[int] = None, base_width: Optional[int] = None,
                 features_only: bool = False) -> keras.Model:
    """Builds a registered architecture as a Keras 3 functional model that outputs logits.

    Args:
      arch: a name from :func:`list_models` (or a short alias such as ``bl-resnext101``).
      alpha, beta: the Little-Branch's width and depth divisors (bL archs only; ignored otherwise).
      num_classes: logits per image (default 1000; 32000 context-dependent states for speech).
      input_shape: ``(height, width, 3)``; images are NHWC whatever ``data_format`` is (a
        channels_first model transposes on the device, as tensorpack did). Default 224x224.
        Speech archs take ``(64 mel bins, frames, 3)``, default (64, 49, 3) (see models/speech.py).
      data_format: ``channels_first`` | ``channels_last`` | None (channels_first when a GPU is
        visible). Weights have the same shapes in both formats.
      include_preprocessing: inputs are RGB in [0, 255] (uint8 or float) and are normalised with
        the ImageNet mean/std inside the graph.
      merge: how branches are merged: ``add`` (the paper's choice) or ``concat`` (Table 7; bL
        image and speech archs).
      branches: branches per bL-module, 2 or 3 (Table 7's K; bL-ResNet family only).
      merges: how many times the branches merge (Table 8): None (= 4), or 1, 2 on depth 50 and 7 on
        depth 101 (bL-ResNet family only). The ablations are exclusive: one per model.
      upsample: ``bilinear`` (the paper) or ``nearest`` (the official release; its weights need it).
      cardinality, base_width: ResNeXt width overrides (default 32x4d for the short names).
      features_only: output the stride-4/8/16/32 feature maps (C2..C5) instead of logits.

    Raises:
      ValueError: an unknown name or option, or a value outside what the architecture allows.
    """
    spec = registry.get_spec(arch, cardinality, base_width)
    if num_classes is None:
        num_classes = DEFAULT_NUM_CLASSES.get(spec.family, 1000)
    _check_positive_int("alpha", alpha)
    _check_positive_int("beta", beta)
    _check_positive_int("num_classes", num_classes)
    if spec.big_little and 64 % alpha:
        raise ValueError(f"alpha must divide the 64 stem channels (1, 2, 4, 8, ...), got {alpha}")
    if spec.big_little and spec.cardinality > 1 and spec.cardinality % alpha:
        raise ValueError(f"cardinality {spec.cardinality} must be divisible by alpha {alpha}: the "
                         f"Little-Branch uses cardinality/alpha groups")
    if spec.cardinality > 1 and (64 * spec.base_width // 64) // 4 < 1:
        raise ValueError(f"base_width {spec.base_width} is too small: each group needs at least one channel "
                         f"(base_width >= 4)")
    merge_kinds = FAMILY_MERGES.get(spec.family, MERGES)
    if merge not in merge_kinds:
        raise ValueError(f"unknown merge {merge!r} for {spec.name}; allowed: {', '.join(map(str, merge_kinds))}")
    merges = _check_ablations(spec, alpha=alpha, merge=merge, branches=branches, merges=merges,
                              features_only=features_only)
    if include_preprocessing and spec.task != "image":
        raise ValueError(f"include_preprocessing (ImageNet mean/std) applies to image models, not {arch!r}")
    if upsample not in UPSAMPLE_MODES:
        raise ValueError(f"unknown upsample {upsample!r}; allowed: {', '.join(UPSAMPLE_MODES)}")
    if data_format is None:
        data_format = default_data_format()
    if data_format not in DATA_FORMATS:
        raise ValueError(f"unknown data_format {data_format!r}; allowed: {', '.join(DATA_FORMATS)} or None")
    input_shape = _check_input_shape(input_shape, DEFAULT_INPUT_SHAPES.get(spec.family))

    ctx = LayerContext(data_format=data_format, upsample=upsample)
    inputs = keras.Input(shape=input_shape, name="images")
    x = ImageNetNormalization(name="normalize")(inputs) if include_preprocessing else inputs
    if data_format == "channels_first":
        x = layers.Permute((3, 1, 2), name="to_channels_first")(x)
    bl = BigLittleOptions(alpha=alpha, beta=beta, merge=merge, branches=branches, merges=merges)
    features = BUILDERS[spec.family](spec, ctx, x, bl=bl)
    name = spec.name.replace("-", "_") + (f"_a{alpha}_b{beta}" if spec.big_little else "")
    name += (f"_{merge}" if merge != "add" else "") + (f"_k{branches}" if branches != 2 else "")
    name += f"_m{merges}" if merges != DEFAULT_MERGES else ""
    if features_only:
        return keras.Model(inputs, features, name=name + "_features")
    head = HEADS.get(spec.family, classifier_head)
    return keras.Model(inputs, head(ctx, features[-1], num_classes), name=name)
