"""The evaluation transform as TF ops, for the ``image_bytes`` serving signature.

Decode to 3-channel RGB, resize the shorter side to ``eval_resize_size(size)`` (256 for 224)
with bicubic interpolation, centre-crop ``size`` x ``size``. This mirrors the data pipeline's
eval transform (``bl_net_tf.data``); the crop fraction lives in ``bl_net_tf.data.recipe``.
"""
from __future__ import annotations

import tensorflow as tf

from bl_net_tf.data.recipe import eval_resize_size


def resized_shape(height, width, shorter_side: int):
    """``(new_height, new_width)`` int32 scalars: the shorter side at ``shorter_side``, the aspect
    ratio kept, the longer side rounded half up (as tensorpack's ``ResizeShortestEdge``)."""
    height = tf.cast(height, tf.float64)
    width = tf.cast(width, tf.float64)
    side = tf.constant(shorter_side, tf.float64)
    scale = side / tf.minimum(height, width)
    new_height = tf.where(height < width, side, tf.floor(scale * height + 0.5))
    new_width = tf.where(height < width, tf.floor(scale * width + 0.5), side)
    return tf.cast(new_height, tf.int32), tf.cast(new_width, tf.int32)


def decode_center_crop(image_bytes: tf.Tensor, size: int) -> tf.Tensor:
    """One encoded image (scalar string) -> float32 ``[size, size, 3]`` RGB in [0, 255].

    JPEG, PNG, GIF (first frame) and BMP decode; anything else raises ``InvalidArgumentError``
    when the graph runs. Grey and RGBA images become RGB.
    """
    image = tf.io.decode_image(image_bytes, channels=3, expand_animations=False)
    shape = tf.shape(image)
    new_height, new_width = resized_shape(shape[0], shape[1], eval_resize_size(size))
    image = tf.image.resize(image, tf.stack([new_height, new_width]), method="bicubic")
    # Bicubic overshoots at edges. Clip and round as the uint8 pipelines (cv2, PIL) do, so this
    # signature feeds the network what a client sending uint8 crops to `predict_images` would.
    image = tf.round(tf.clip_by_value(image, 0.0, 255.0))
    top = (new_height - size) // 2
    left = (new_width - size) // 2
    image = image[top:top + size, left:left + size]
    image.set_shape([size, size, 3])
    return image


def decode_batch(image_bytes: tf.Tensor, size: int) -> tf.Tensor:
    """A ``[N]`` string tensor of encoded images -> float32 ``[N, size, size, 3]``."""
    return tf.map_fn(lambda data: decode_center_crop(data, size), image_bytes,
                     fn_output_signature=tf.TensorSpec([size, size, 3], tf.float32))
