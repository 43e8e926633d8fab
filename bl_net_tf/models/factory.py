"""``create_model``: validates the request, then builds a Keras functional model from the registry."""
from __future__ import annotations

from typing import Optional

import keras
from keras import layers

from bl_net_tf.models import registry
from bl_net_tf.models.layers import UPSAMPLE_MODES, ImageNetNormalization, LayerContext
from bl_net_tf.models.resnet import MIN_INPUT_SIZE, BigLittleOptions, build_resnet, classifier_head

DATA_FORMATS = ("channels_first", "channels_last")
MERGES = ("add",)
DEFAULT_IMAGE_SIZE = 224
# Feature-extractor builder per registry family: (spec, ctx, inputs, bl=...) -> [C2, C3, C4, C5].
BUILDERS = {"resnet": build_resnet, "resnext": build_resnet, "seresnext": build_resnet}


def default_data_format() -> str:
    """channels_first where a GPU is visible (cuDNN's native layout), channels_last otherwise
    (TF's CPU kernels)."""
    import tensorflow as tf

    return "channels_first" if tf.config.list_physical_devices("GPU") else "channels_last"


def _check_positive_int(label: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{label} must be an integer >= 1, got {value!r}")


def _check_input_shape(input_shape) -> tuple:
    if input_shape is None:
        return (DEFAULT_IMAGE_SIZE, DEFAULT_IMAGE_SIZE, 3)
    input_shape = tuple(input_shape)
    if len(input_shape) != 3 or input_shape[-1] not in (1, 3, None):
        raise ValueError(f"input_shape must be (height, width, 3) (images are NHWC whatever the data_format), "
                         f"got {input_shape}")
    for size in input_shape[:2]:
        if size is not None and size < MIN_INPUT_SIZE:
            raise ValueError(f"input size {input_shape[:2]} is too small for the network's stride of 32: "
                             f"the minimum is {MIN_INPUT_SIZE}x{MIN_INPUT_SIZE}")
    return input_shape


def create_model(arch: str, *, alpha: int = 2, beta: int = 4, num_classes: int = 1000, input_shape=None,
                 data_format: Optional[str] = None, include_preprocessing: bool = False, merge: str = "add",
                 upsample: str = "bilinear", cardinality: Optional[int] = None,
                 base_width: Optional[int] = None, features_only: bool = False) -> keras.Model:
    """Builds a registered architecture as a Keras 3 functional model that outputs logits.

    Args:
      arch: a name from :func:`list_models` (or a short alias such as ``bl-resnext101``).
      alpha, beta: the Little-Branch's width and depth divisors (bL archs only; ignored otherwise).
      num_classes: logits per image.
      input_shape: ``(height, width, 3)``; images are NHWC whatever ``data_format`` is (a
        channels_first model transposes on the device, as tensorpack did). Default 224x224.
      data_format: ``channels_first`` | ``channels_last`` | None (channels_first when a GPU is
        visible). Weights have the same shapes in both formats.
      include_preprocessing: inputs are RGB in [0, 255] (uint8 or float) and are normalised with
        the ImageNet mean/std inside the graph.
      merge: how branches are merged: ``add`` (the paper's choice).
      upsample: ``bilinear`` (the paper) or ``nearest`` (the official release; its weights need it).
      cardinality, base_width: ResNeXt width overrides (default 32x4d for the short names).
      features_only: output the stride-4/8/16/32 feature maps (C2..C5) instead of logits.

    Raises:
      ValueError: an unknown name or option, or a value outside what the architecture allows.
    """
    spec = registry.get_spec(arch, cardinality, base_width)
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
    if merge not in MERGES:
        raise ValueError(f"unknown merge {merge!r}; allowed: {', '.join(MERGES)}")
    if upsample not in UPSAMPLE_MODES:
        raise ValueError(f"unknown upsample {upsample!r}; allowed: {', '.join(UPSAMPLE_MODES)}")
    if data_format is None:
        data_format = default_data_format()
    if data_format not in DATA_FORMATS:
        raise ValueError(f"unknown data_format {data_format!r}; allowed: {', '.join(DATA_FORMATS)} or None")
    input_shape = _check_input_shape(input_shape)

    ctx = LayerContext(data_format=data_format, upsample=upsample)
    inputs = keras.Input(shape=input_shape, name="images")
    x = ImageNetNormalization(name="normalize")(inputs) if include_preprocessing else inputs
    if data_format == "channels_first":
        x = layers.Permute((3, 1, 2), name="to_channels_first")(x)
    features = BUILDERS[spec.family](spec, ctx, x, bl=BigLittleOptions(alpha=alpha, beta=beta))
    name = spec.name.replace("-", "_") + (f"_a{alpha}_b{beta}" if spec.big_little else "")
    if features_only:
        return keras.Model(inputs, features, name=name + "_features")
    return keras.Model(inputs, classifier_head(ctx, features[-1], num_classes), name=name)
