"""A cheap structural check of encoded image bytes, before any decoding.

ImageNet's training set is known to hold a PNG named ``.JPEG``, CMYK and grayscale
JPEGs (the TF Inception converter ``build_imagenet_data.py`` lists them), and copies
made by users add empty or truncated files. The check below reads only the first
and the last bytes of a file:

* a complete JPEG starts with ``FF D8 FF`` and has the end-of-image marker
  ``FF D9`` near its end; only such files take the fast ``decode_and_crop_jpeg`` path;
* a complete PNG starts with the PNG signature and ends with its ``IEND`` chunk;
* anything else (empty, truncated, another format) is *suspect*: the loader then
  tries one full decode and skips the file, naming it, if that fails.

``FF D9`` cannot occur inside JPEG entropy-coded data (a coded ``FF`` is always
followed by ``00`` or a restart marker), so finding it in the tail is a reliable
sign that the scan was written to the end. The same rule is written twice, once in
TF ops for tf.data and once in Python for the Tensorpack loader; the tests check
that both agree.
"""
import tensorflow as tf

JPEG_MAGIC = b"\xff\xd8\xff"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
JPEG_END = b"\xff\xd9"
PNG_END = b"IEND"
# Bytes at the end of a file searched for the end marker: some writers pad after it.
TAIL_BYTES = 64

EMPTY = "empty file"
UNKNOWN_FORMAT = "neither a JPEG nor a PNG file"
JPEG_TRUNCATED = "JPEG without end-of-image marker (truncated?)"
PNG_TRUNCATED = "PNG without IEND chunk (truncated?)"
# A file that passes the check but that the decoder still rejects (corrupt data inside).
CORRUPT = "corrupt image data (the decoder rejects it)"


def inspect_bytes(data: bytes) -> tuple:
    """Returns ``(is_complete_jpeg, problem)`` for encoded image ``data``.

    ``problem`` is "" when the file looks complete, else one of the module's reasons.
    """
    tail = data[-TAIL_BYTES:]
    if not data:
        return False, EMPTY
    if data.startswith(JPEG_MAGIC):
        return (True, "") if JPEG_END in tail else (False, JPEG_TRUNCATED)
    if data.startswith(PNG_MAGIC):
        return False, "" if PNG_END in tail else PNG_TRUNCATED
    return False, UNKNOWN_FORMAT


def _contains(haystack: tf.Tensor, needle: bytes) -> tf.Tensor:
    """Whether the uint8 vector ``haystack`` contains the byte string ``needle``."""
    k = len(needle)
    matches = [
        tf.equal(haystack[i: i - (k - 1) if i < k - 1 else None], byte)
        for i, byte in enumerate(needle)
    ]
    return tf.reduce_any(tf.reduce_all(tf.stack(matches), axis=0))


def inspect_tensor(encoded: tf.Tensor) -> tuple:
    """TF version of :func:`inspect_bytes` for a scalar string tensor.

    Returns ``(is_complete_jpeg, problem)`` as a bool and a string scalar tensor.
    """
    length = tf.strings.length(encoded)
    head = tf.strings.substr(encoded, 0, len(PNG_MAGIC))
    tail = tf.io.decode_raw(
        tf.strings.substr(encoded, tf.maximum(length - TAIL_BYTES, 0), TAIL_BYTES), tf.uint8)
    is_jpeg = tf.equal(tf.strings.substr(head, 0, len(JPEG_MAGIC)), JPEG_MAGIC)
    is_png = tf.equal(head, PNG_MAGIC)
    jpeg_ended = _contains(tail, JPEG_END)
    png_ended = _contains(tail, PNG_END)
    problem = tf.where(
        tf.equal(length, 0), EMPTY,
        tf.where(is_jpeg, tf.where(jpeg_ended, "", JPEG_TRUNCATED),
                 tf.where(is_png, tf.where(png_ended, "", PNG_TRUNCATED), UNKNOWN_FORMAT)))
    return tf.logical_and(is_jpeg, jpeg_ended), problem
