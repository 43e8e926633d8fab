"""Decoding encoded images to 3-channel RGB uint8 tensors, for tf.data.

Complete JPEGs (see ``integrity.py``) take libjpeg-turbo's fast paths: for training,
``decode_and_crop_jpeg`` decodes only the rows and columns of the crop. Grayscale and
CMYK JPEGs come out as RGB (``channels=3``; TF converts Adobe CMYK itself). Anything
else that decodes at all (a PNG named ``.JPEG``, a JPEG with data past its end
marker, GIF, BMP) goes through ``decode_image``.
"""
import tensorflow as tf

# Accurate integer DCT, as libjpeg, OpenCV and Pillow use by default, so that both
# loaders see the same pixels (TF's own default is the faster, coarser IFAST).
_DCT_METHOD = "INTEGER_ACCURATE"


def _decode_any(encoded: tf.Tensor) -> tf.Tensor:
    image = tf.io.decode_image(encoded, channels=3, expand_animations=False)
    image.set_shape([None, None, 3])
    return image


def decode_rgb(encoded: tf.Tensor, is_complete_jpeg: tf.Tensor) -> tf.Tensor:
    """Decodes a whole image to uint8 ``[H, W, 3]`` RGB."""
    return tf.cond(
        is_complete_jpeg,
        lambda: tf.io.decode_jpeg(encoded, channels=3, dct_method=_DCT_METHOD),
        lambda: _decode_any(encoded),
    )


def decode_window_rgb(encoded: tf.Tensor, is_complete_jpeg: tf.Tensor, window_fn) -> tf.Tensor:
    """Decodes the window ``window_fn(height_width)`` of an image to uint8 RGB.

    ``window_fn`` maps the int32 ``[height, width]`` of the image to an int32
    ``[offset_y, offset_x, crop_height, crop_width]`` window; for a JPEG the shape
    is read from its header, so only the window is decoded.
    """
    def jpeg():
        window = window_fn(tf.image.extract_jpeg_shape(encoded)[:2])
        return tf.image.decode_and_crop_jpeg(
            encoded, window, channels=3, dct_method=_DCT_METHOD)

    def other():
        image = _decode_any(encoded)
        y, x, h, w = tf.unstack(window_fn(tf.shape(image)[:2]))
        return image[y:y + h, x:x + w]

    return tf.cond(is_complete_jpeg, jpeg, other)


def can_decode(encoded: bytes) -> bool:
    """Whether TF decodes ``encoded`` fully, run eagerly (outside the graph).

    The tf.data loader calls this through ``tf.py_function`` for suspect files only.
    """
    try:
        tf.io.decode_image(encoded, channels=3, expand_animations=False)
    except (tf.errors.InvalidArgumentError, tf.errors.UnknownError):
        return False
    return True
