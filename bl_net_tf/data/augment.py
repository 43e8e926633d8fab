"""The fbresnet training and evaluation transforms (``recipe.py``) in TF ops.

Training: Inception-style random crop (decoding only the crop of a JPEG), bicubic
resize, the colour augmentation of ``color.py``, horizontal flip. Evaluation
(:func:`eval_image`, also the serving graph's): bicubic resize of the shorter side, centre crop,
computed on the window of the original image that the crop reads. Randomness is stateless: each
example carries its own ``seed`` (an int64 ``[2]`` tensor, see
``tfdata_loader.py``), so a seeded pipeline gives the same images whatever the
parallelism. Images stay float32 from the resize on and are rounded to uint8 once.
"""
import tensorflow as tf

from bl_net_tf.data import headers, recipe
from bl_net_tf.data.color import color_jitter
from bl_net_tf.data.decode import decode_window, decode_window_rgb


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


# Source pixels kept around the window: the bicubic kernel reaches 2 pixels out, plus one for rounding.
_KERNEL_MARGIN = 3


def center_window(height, width, eval_size: int, resize: int):
    """Where "resize the shorter side to ``resize``, centre crop ``eval_size``" samples the image.

    The resized size and the crop offset round as Tensorpack's ``ResizeShortestEdge`` and
    ``CenterCrop``. Returns, in the original image's coordinates, the int32 window
    ``[offset_y, offset_x, height, width]`` that the crop's pixels read from (with the bicubic
    kernel's reach), and the float32 ``scale`` and ``translation`` (``[y, x]``) that make
    ``ScaleAndTranslate`` of that window give exactly the crop of the whole resized image.
    """
    hw = tf.cast(tf.stack([height, width]), tf.float64)
    short = float(resize)
    scaled = tf.floor(hw * short / tf.reduce_min(hw) + 0.5)
    # Tensorpack pins the height when h < w and the width otherwise.
    new_hw = tf.where(hw[0] < hw[1], tf.stack([short, scaled[1]]), tf.stack([scaled[0], short]))
    offset = tf.floor((new_hw - eval_size) * 0.5)
    scale = new_hw / hw
    # Half-pixel centres: output pixel i of the resize reads around source (i + 0.5) / scale - 0.5.
    first = tf.floor((offset + 0.5) / scale - 0.5) - _KERNEL_MARGIN
    last = tf.math.ceil((offset + eval_size - 0.5) / scale - 0.5) + _KERNEL_MARGIN
    start = tf.maximum(first, 0.0)
    stop = tf.minimum(last + 1.0, hw)
    window = tf.cast(tf.concat([start, stop - start], 0), tf.int32)
    return window, tf.cast(scale, tf.float32), tf.cast(scale * start - offset, tf.float32)


def eval_image(encoded, eval_size: int, *, protocol: str = recipe.DEFAULT_EVAL_PROTOCOL,
               limits: headers.ImageLimits = headers.ImageLimits(), label="image") -> tf.Tensor:
    """The evaluation transform: resize the shorter side (``recipe.eval_resize_size``), centre crop.

    The one transform of the tf.data evaluation and of the serving graph. It reads the size from
    the encoded header and refuses what ``limits`` does not allow before decoding; then it decodes
    only the window that the crop reads (a JPEG's window is all libjpeg decodes) and resamples that
    window straight to ``eval_size`` x ``eval_size``: the same pixels as resizing the whole image
    and cropping (bicubic, Keys a = -0.5, half-pixel centres; differences below 0.1 grey level
    before rounding). Nothing is larger than the decoded image (``limits.max_pixels``), whatever
    its aspect ratio; the resampling's intermediates are a few ``eval_size`` x ``eval_size``.
    ``label`` (e.g. the file name) starts the error messages.

    Returns:
      uint8 ``[eval_size, eval_size, 3]`` RGB.

    Raises (when the graph runs):
      InvalidArgumentError: not a JPEG, PNG, GIF, BMP or WebP; above a limit; undecodable.
    """
    resize = recipe.eval_resize_size(eval_size, protocol)
    header = headers.read(encoded, label)
    with tf.control_dependencies(headers.check(header, limits, label)):
        window, scale, translation = center_window(header.height, header.width, eval_size, resize)
        crop = decode_window(header.data, header.format, window)
    resized = tf.raw_ops.ScaleAndTranslate(
        images=crop[None], size=[eval_size, eval_size], scale=scale, translation=translation,
        kernel_type="keyscubic", antialias=False)[0]
    return tf.ensure_shape(_to_uint8(resized), [eval_size, eval_size, 3])
