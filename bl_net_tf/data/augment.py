"""The fbresnet training and evaluation transforms (``recipe.py``) in TF ops.

Training: Inception-style random crop (decoding only the crop of a JPEG), bicubic
resize, the colour augmentation of ``color.py``, horizontal flip. Evaluation:
bicubic resize of the shorter side, centre crop. Randomness is stateless: each
example carries its own ``seed`` (an int64 ``[2]`` tensor, see
``tfdata_loader.py``), so a seeded pipeline gives the same images whatever the
parallelism. Images stay float32 from the resize on and are rounded to uint8 once.
"""
import tensorflow as tf

from bl_net_tf.data import recipe
from bl_net_tf.data.color import color_jitter
from bl_net_tf.data.decode import decode_rgb, decode_window_rgb


def sample_crop_window(height_width: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """Samples the Inception-style crop ``[offset_y, offset_x, height, width]``.

    As Tensorpack's ``GoogleNetRandomCropAndResize``: up to 10 attempts of a crop of
    8-100% of the area with aspect ratio in [3/4, 4/3] (either orientation); the
    first attempt that fits is used, and if none fits, the central square (what
    resizing the shorter side and centre cropping amounts to).
    """
    hw = tf.cast(height_width, tf.float32)
    height, width = hw[0], hw[1]
    # Per attempt: area, aspect ratio, orientation, vertical and horizontal offset.
    draws = tf.random.stateless_uniform([5, recipe.CROP_ATTEMPTS], seed)
    area = (recipe.CROP_AREA_RANGE[0]
            + (recipe.CROP_AREA_RANGE[1] - recipe.CROP_AREA_RANGE[0]) * draws[0]) * height * width
    aspect = (recipe.CROP_ASPECT_RANGE[0]
              + (recipe.CROP_ASPECT_RANGE[1] - recipe.CROP_ASPECT_RANGE[0]) * draws[1])
    crop_w = tf.maximum(tf.floor(tf.sqrt(area * aspect) + 0.5), 1.0)
    crop_h = tf.maximum(tf.floor(tf.sqrt(area / aspect) + 0.5), 1.0)
    swap = draws[2] < 0.5
    crop_w, crop_h = tf.where(swap, crop_h, crop_w), tf.where(swap, crop_w, crop_h)
    fits = tf.logical_and(crop_h <= height, crop_w <= width)
    first = tf.argmax(tf.cast(fits, tf.int32))
    h, w = crop_h[first], crop_w[first]
    random_window = tf.stack([
        tf.floor(draws[3][first] * (height - h + 1.0)),
        tf.floor(draws[4][first] * (width - w + 1.0)),
        h, w,
    ])
    side = tf.minimum(height, width)
    central_square = tf.stack([
        tf.floor((height - side) / 2.0), tf.floor((width - side) / 2.0), side, side])
    return tf.cast(tf.where(tf.reduce_any(fits), random_window, central_square), tf.int32)


def _resize_bicubic(image: tf.Tensor, size) -> tf.Tensor:
    # Float32 out; no antialiasing, like cv2.INTER_CUBIC.
    return tf.image.resize(image, size, method=tf.image.ResizeMethod.BICUBIC)


def _to_uint8(image: tf.Tensor) -> tf.Tensor:
    """Rounds to the nearest level and saturates."""
    return tf.cast(tf.clip_by_value(image + 0.5, 0.0, 255.0), tf.uint8)


def train_image(encoded, is_complete_jpeg, seed, image_size: int) -> tf.Tensor:
    """Decodes and augments one training image to uint8 ``[image_size, image_size, 3]``."""
    crop_seed, color_seed, flip_seed = tf.unstack(
        tf.random.experimental.stateless_split(seed, 3))
    crop = decode_window_rgb(
        encoded, is_complete_jpeg, lambda hw: sample_crop_window(hw, crop_seed))
    # The bicubic overshoot is clipped only at the end, with the colour jitter's.
    image = _to_uint8(color_jitter(_resize_bicubic(crop, [image_size, image_size]), color_seed))
    flip = tf.random.stateless_uniform([], flip_seed) < recipe.FLIP_PROBABILITY
    image = tf.cond(flip, lambda: tf.reverse(image, axis=[1]), lambda: image)
    return tf.ensure_shape(image, [image_size, image_size, 3])


def eval_image(encoded, is_complete_jpeg, eval_size: int) -> tf.Tensor:
    """Resizes the shorter side to ``eval_size / 0.875`` and centre crops ``eval_size``.

    Rounding follows Tensorpack's ``ResizeShortestEdge`` and ``CenterCrop``.
    """
    image = decode_rgb(encoded, is_complete_jpeg)
    hw = tf.cast(tf.shape(image)[:2], tf.float32)
    short = float(recipe.eval_resize_size(eval_size))
    scaled = tf.floor(hw * short / tf.reduce_min(hw) + 0.5)
    # Tensorpack pins the height when h < w and the width otherwise.
    new_hw = tf.where(hw[0] < hw[1], tf.stack([short, scaled[1]]), tf.stack([scaled[0], short]))
    resized = _resize_bicubic(image, tf.cast(new_hw, tf.int32))
    offset = tf.cast(tf.floor((new_hw - eval_size) * 0.5), tf.int32)
    crop = resized[offset[0]:offset[0] + eval_size, offset[1]:offset[1] + eval_size]
    return tf.ensure_shape(_to_uint8(crop), [eval_size, eval_size, 3])
