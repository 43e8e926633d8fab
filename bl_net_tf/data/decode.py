"""Decoding encoded images to 3-channel RGB uint8 tensors, for tf.data and the serving graph.

JPEGs take libjpeg-turbo's fast path, ``decode_and_crop_jpeg``, which decodes only the rows and
columns of a window: the training crop (``decode_window_rgb``, for complete JPEGs, see
``integrity.py``) and the evaluation crop (``decode_window``, size from ``headers.py``). Grayscale and
CMYK JPEGs come out as RGB (``channels=3``; TF converts Adobe CMYK itself). Anything
else that decodes at all (a PNG named ``.JPEG``, a JPEG with data past its end
marker, GIF, BMP) goes through ``decode_image``.
"""
import tensorflow as tf

from bl_net_tf.data import headers

# Accurate integer DCT, as libjpeg, OpenCV and Pillow use by default, so that both
# loaders see the same pixels (TF's own default is the faster, coarser IFAST).
_DCT_METHOD = "INTEGER_ACCURATE"


def _decode_any(encoded: tf.Tensor) -> tf.Tensor:
    image = tf.io.decode_image(encoded, channels=3, expand_animations=False)
    image.set_shape([None, None, 3])
    return image


def _crop(image: tf.Tensor, window) -> tf.Tensor:
    y, x, h, w = tf.unstack(window)
    return image[y:y + h, x:x + w]


def decode_window(data: tf.Tensor, fmt: tf.Tensor, window: tf.Tensor) -> tf.Tensor:
    """Decodes the window ``[offset_y, offset_x, height, width]`` of an image whose format and size
    came from its header (``headers.read``: ``data`` and ``fmt`` are its fields) to uint8 RGB.

    A JPEG decodes only the window; other formats decode whole (their size was checked), then the
    window is cut. WebP keeps its colour channels, dropping alpha (as PNG's ``channels=3`` does).

    Raises (when the graph runs):
      InvalidArgumentError: the data does not decode, or decodes to another size than its header's.
    """
    def jpeg():
        return tf.image.decode_and_crop_jpeg(data, window, channels=3, dct_method=_DCT_METHOD)

    def other():
        # TF's WebP decoder gives RGBA for images with alpha (decode_image fails on those).
        image = tf.cond(tf.equal(fmt, headers.WEBP), lambda: tf.io.decode_webp(data)[0], lambda: _decode_any(data))
        fits = tf.debugging.assert_less_equal(window[:2] + window[2:], tf.shape(image)[:2],
                                              message="the image decodes smaller than its header says")
        with tf.control_dependencies([fits]):
            y, x, h, w = tf.unstack(window)
            return tf.ensure_shape(image[y:y + h, x:x + w, :3], [None, None, 3])  # one copy: window, colours

    return tf.cond(tf.equal(fmt, headers.JPEG), jpeg, other)


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
        return _crop(image, window_fn(tf.shape(image)[:2]))

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
