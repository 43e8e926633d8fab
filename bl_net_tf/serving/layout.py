"""A channels_last, float32 copy of a trained Keras model, for serving on CPU hosts.

A model trained channels_first (GPU) or in mixed precision runs slowly or not at all on a CPU
server. The copy is rebuilt from the functional config with every layout-dependent setting
switched to channels_last, then gets the original's weights by layer name: variables have the same
shapes in both layouts (Keras stores conv kernels as (kh, kw, in, out) whatever the data format).
"""
from __future__ import annotations

import copy

import keras

from bl_net_tf.constants import CHANNELS_FIRST, CHANNELS_LAST
from bl_net_tf.models.factory import TO_CHANNELS_FIRST_DIMS
# Layers whose ``axis`` means "the channel axis"; with channels_first it is 1.
_CHANNEL_AXIS_LAYERS = ("BatchNormalization", "LayerNormalization", "GroupNormalization", "Concatenate")


def _to_channels_last(layer_config: dict) -> dict:
    layer_config = copy.deepcopy(layer_config)
    # Recorded input shapes are in the old layout; the functional rebuild builds every layer anyway.
    layer_config.pop("build_config", None)
    config = layer_config["config"]
    if config.get("data_format") == CHANNELS_FIRST:
        config["data_format"] = CHANNELS_LAST
    if layer_config["class_name"] in _CHANNEL_AXIS_LAYERS and config.get("axis") in (1, [1]):
        config["axis"] = -1
    if layer_config["class_name"] == "Permute" and tuple(config["dims"]) == TO_CHANNELS_FIRST_DIMS:
        # Keep the layer (and so the graph's wiring), make it a no-op.
        layer_config.update(class_name="Identity", module="keras.layers", registered_name=None)
        layer_config["config"] = {"name": config["name"], "trainable": config.get("trainable", True)}
        config = layer_config["config"]
    # Serve in float32 whatever policy (mixed_float16, mixed_bfloat16) the model trained with.
    if "dtype" in config:
        config["dtype"] = "float32"
    return layer_config


def channels_last_copy(model: keras.Model, image_size=None) -> keras.Model:
    """Returns a channels_last float32 functional copy of ``model`` with its weights.

    Args:
      model: a functional model from :func:`bl_net_tf.create_model` (any data format, with or
        without ``include_preprocessing``), or any functional model with NHWC image inputs.
      image_size: if given, the copy's input is ``[None, image_size, image_size, 3]``.

    Raises:
      ValueError: ``model`` is not a functional model with a single NHWC image input.
    """
    config = model.get_config() if isinstance(model, keras.Model) else {}
    if "input_layers" not in config or len(model.inputs) != 1 or len(model.inputs[0].shape) != 4:
        raise ValueError("export needs a functional Keras model with one NHWC image input "
                         f"(bl_net_tf.create_model builds one), got {type(model).__name__}")
    config["layers"] = [_to_channels_last(layer) for layer in config["layers"]]
    if image_size is not None:
        (input_layer,) = [layer for layer in config["layers"] if layer["class_name"] == "InputLayer"]
        input_layer["config"]["batch_shape"] = [None, image_size, image_size, 3]
    # A layout setting this module does not know about (e.g. in a nested model) must not pass silently.
    leftover = [layer["name"] for layer in config["layers"]
                if CHANNELS_FIRST in repr({k: v for k, v in layer["config"].items() if k != "name"})]
    if leftover:
        raise ValueError(f"cannot convert layers {leftover} to channels_last")
    # Layer-by-name assignment so that the new layers' creation order plays no part.
    result = keras.Model.from_config(config)
    for layer in result.layers:
        if layer.weights:
            layer.set_weights(model.get_layer(layer.name).get_weights())
    return result
