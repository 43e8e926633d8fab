"""Image size from the encoded header, before decoding, and the limits the evaluation transform enforces.

A decoder allocates what the header announces: an 86-byte PNG can announce 2000x1, a 1 MB one
20000x20000 (1.2 GB once decoded), a GIF of a few KB dozens of full-size frames (giflib decodes
every frame before TF returns the first). :func:`read` gets the width and height in TF ops from
the bytes that decide the allocation, and :func:`check` refuses, with an ``InvalidArgumentError``
naming the limit, what :class:`ImageLimits` does not allow. Formats:

* JPEG: ``tf.image.extract_jpeg_shape`` (the frame header);
* PNG: the IHDR chunk, which the format requires first (bytes 16-23, big-endian);
* GIF: the first image descriptor, found by walking the blocks before it; only that first frame is
  handed to the decoder (the file is cut after it), so later frames cost nothing;
* BMP: the info header's width and height (bytes 18-25, little-endian, as TF's decoder reads them);
* WebP: the VP8, VP8L or VP8X chunk header; animated WebP is refused.

Anything else is refused.
"""
from __future__ import annotations

import dataclasses
import math
from typing import NamedTuple

import tensorflow as tf

FORMATS = ("JPEG", "PNG", "GIF", "BMP", "WebP")
JPEG, PNG, GIF, BMP, WEBP = range(len(FORMATS))
_UNKNOWN = len(FORMATS)

# 16.7 MP: a 4096x4096 image; a 12 MP phone picture (4032x3024) passes. The evaluation transform's
# peak memory for one image is a few bytes per pixel (docs/deployment.md).
DEFAULT_MAX_PIXELS = 4096 * 4096
# A 1x2000 strip has aspect ratio 2000; panoramas reach 10.
DEFAULT_MAX_ASPECT_RATIO = 20.0

_HEAD = 32  # bytes read for the format and the size (all but JPEG and GIF)
# Walking a GIF to the end of its first frame takes one step per block, or per run of up to
# _GIF_RUN full (255-byte) data blocks, which is what encoders write. A file that needs more steps
# than one per 256 bytes (plus 1024) is refused rather than walked for seconds (~0.1 ms a step).
_GIF_RUN = 64
_GIF_BYTES_PER_STEP = 256
_GIF_MIN_STEPS = 1024


@dataclasses.dataclass(frozen=True)
class ImageLimits:
    """What the evaluation transform decodes; checked on the header, before decoding.

    Attributes:
      max_pixels: width x height of the image (of a GIF's first frame).
      max_aspect_ratio: longer side / shorter side.
    """

    max_pixels: int = DEFAULT_MAX_PIXELS
    max_aspect_ratio: float = DEFAULT_MAX_ASPECT_RATIO

    def __post_init__(self):
        if isinstance(self.max_pixels, bool) or not isinstance(self.max_pixels, int) or self.max_pixels < 1:
            raise ValueError(f"max_pixels must be an integer >= 1, got {self.max_pixels!r}")
        if (isinstance(self.max_aspect_ratio, bool) or not isinstance(self.max_aspect_ratio, (int, float))
                or not math.isfinite(self.max_aspect_ratio) or self.max_aspect_ratio < 1):
            raise ValueError(f"max_aspect_ratio must be a number >= 1, got {self.max_aspect_ratio!r}")


class Header(NamedTuple):
    """What :func:`read` finds: the format (an index into FORMATS), the size (int64 scalars) and
    the bytes to decode (the file itself, or for a GIF the file cut after its first frame)."""

    format: tf.Tensor
    height: tf.Tensor
    width: tf.Tensor
    data: tf.Tensor


def _padded_bytes(encoded: tf.Tensor) -> tf.Tensor:
    """The bytes as a uint8 vector with 16 zeros after them, so that offsets a little past the end
    read 0 instead of failing."""
    return tf.pad(tf.io.decode_raw(encoded, tf.uint8), [[0, 16]])


def _le(data, offset: int, size: int) -> tf.Tensor:
    return sum(data[offset + i] * (256 ** i) for i in range(size))


def _be(data, offset: int, size: int) -> tf.Tensor:
    return sum(data[offset + i] * (256 ** (size - 1 - i)) for i in range(size))


def _matches(data, offset: int, magic: bytes) -> tf.Tensor:
    return tf.reduce_all(tf.equal(data[offset:offset + len(magic)], list(magic)))


def _format(head) -> tf.Tensor:
    checks = [
        _matches(head, 0, b"\xff\xd8\xff"),
        _matches(head, 0, b"\x89PNG\r\n\x1a\n"),
        tf.logical_or(_matches(head, 0, b"GIF87a"), _matches(head, 0, b"GIF89a")),
        _matches(head, 0, b"BM"),
        tf.logical_and(_matches(head, 0, b"RIFF"), _matches(head, 8, b"WEBP")),
    ]
    found = tf.cast(tf.stack(checks), tf.int32)
    return tf.where(tf.reduce_any(checks), tf.argmax(found, output_type=tf.int32), _UNKNOWN)


def refuse(condition, label, message: str, *values):
    """An assertion that fails with ``<label>: <message>``, each ``{}`` in ``message`` replaced by
    one of ``values`` (number or string tensors); ``label`` is a string or string tensor naming the
    image."""
    parts = (": " + message).split("{}")
    pieces = [label, parts[0]]
    for value, part in zip(values, parts[1:]):
        value = tf.convert_to_tensor(value)
        pieces += [value if value.dtype == tf.string else tf.strings.as_string(value), part]
    return tf.debugging.Assert(condition, [tf.strings.join(pieces)])


def _with(checks, height, width, data):
    with tf.control_dependencies(checks):
        return tf.identity(height), tf.identity(width), tf.identity(data)


def _jpeg(encoded, head, label):
    shape = tf.cast(tf.image.extract_jpeg_shape(encoded), tf.int64)
    return shape[0], shape[1], encoded


def _png(encoded, head, label):
    ihdr = refuse(_matches(head, 12, b"IHDR"), label, "PNG without an IHDR chunk first")
    return _with([ihdr], _be(head, 20, 4), _be(head, 16, 4), encoded)


def _bmp(encoded, head, label):
    width, height = _le(head, 18, 4), _le(head, 22, 4)
    # Signed 32-bit; a negative height means rows stored top-down.
    height = tf.where(height >= 2 ** 31, 2 ** 32 - height, height)
    width = tf.where(width >= 2 ** 31, tf.zeros_like(width), width)
    return height, width, encoded


def _webp(encoded, head, label):
    lossy = _matches(head, 12, b"VP8 ")
    lossless = _matches(head, 12, b"VP8L")
    extended = _matches(head, 12, b"VP8X")
    bits = _le(head, 21, 4)  # VP8L: 14 bits width - 1, 14 bits height - 1
    width = tf.where(lossy, _le(head, 26, 2) % 16384,
                     tf.where(lossless, bits % 16384 + 1, _le(head, 24, 3) + 1))
    height = tf.where(lossy, _le(head, 28, 2) % 16384,
                      tf.where(lossless, (bits // 16384) % 16384 + 1, _le(head, 27, 3) + 1))
    known = refuse(tf.reduce_any([lossy, lossless, extended]), label, "WebP without a VP8, VP8L or VP8X chunk first")
    animated = tf.logical_and(extended, tf.equal(tf.bitwise.bitwise_and(head[20], 2), 2))
    still = refuse(tf.logical_not(animated), label, "animated WebP is not accepted")
    return _with([known, still], height, width, encoded)


# GIF walk states: expecting a record, inside an extension's data blocks, inside the first image's
# data blocks, past the first image, and a byte that starts no record.
_RECORD, _EXTENSION, _IMAGE, _DONE, _BAD = range(5)


def _colour_table(flags):
    """Bytes of the colour table that follows a GIF screen or image descriptor with these flags."""
    return tf.where(flags >= 128, 3 * tf.bitwise.left_shift(tf.constant(2, tf.int64), flags % 8),
                    tf.zeros_like(flags))


def _gif(encoded, head, label):
    """The first frame's size and the file cut after that frame, plus the trailer byte."""
    raw = _padded_bytes(encoded)  # uint8: the file's size once more, not 8 times

    def data(position):
        return tf.cast(raw[position], tf.int64)

    length = tf.cast(tf.strings.length(encoded), tf.int64)
    colour_table = _colour_table(head[10])
    max_steps = length // _GIF_BYTES_PER_STEP + _GIF_MIN_STEPS
    last = tf.size(raw, out_type=tf.int64) - 1
    run_offsets = 256 * tf.range(_GIF_RUN, dtype=tf.int64)

    # While walking, pos < length, and `raw` has 16 bytes of padding: pos + 9 is always readable.
    def step(pos, state, height, width, steps):
        byte = data(pos)
        in_blocks = tf.logical_or(tf.equal(state, _EXTENSION), tf.equal(state, _IMAGE))
        # Inside data blocks: a size byte, 0 ending the sequence; a run of full blocks in one step.
        full = tf.equal(tf.gather(raw, tf.minimum(pos + run_offsets, last)), 255)
        run = tf.reduce_sum(tf.math.cumprod(tf.cast(full, tf.int64)))
        block_pos = tf.where(run > 0, pos + 256 * run, pos + 1 + byte)
        block_state = tf.where(tf.equal(byte, 0), tf.where(tf.equal(state, _IMAGE), _DONE, _RECORD), state)
        # A record: 0x21 extension, 0x2C image descriptor (10 bytes, a local colour table, the LZW
        # code size byte), anything else ends the walk.
        packed = data(pos + 9)
        local_table = _colour_table(packed)
        is_image = tf.equal(byte, 0x2C)
        record_pos = tf.where(tf.equal(byte, 0x21), pos + 2, tf.where(is_image, pos + 11 + local_table, pos))
        record_state = tf.where(tf.equal(byte, 0x21), _EXTENSION, tf.where(is_image, _IMAGE, _BAD))
        take = tf.logical_and(tf.logical_not(in_blocks), is_image)
        return (tf.where(in_blocks, block_pos, record_pos), tf.where(in_blocks, block_state, record_state),
                tf.where(take, data(pos + 7) + 256 * data(pos + 8), height),
                tf.where(take, data(pos + 5) + 256 * data(pos + 6), width), steps + 1)

    def running(pos, state, height, width, steps):
        return tf.logical_and(tf.logical_and(state < _DONE, pos < length), steps < max_steps)

    zero = tf.constant(0, tf.int64)
    pos, state, height, width, steps = tf.while_loop(
        running, step, (13 + colour_table, tf.constant(_RECORD), zero, zero, zero))
    reason = tf.where(steps >= max_steps, tf.strings.join(["more than ", tf.strings.as_string(max_steps),
                                                           " blocks before its end"]), "truncated or malformed")
    complete = refuse(tf.equal(state, _DONE), label, "GIF without a readable first image ({})", reason)
    first_frame = tf.strings.substr(encoded, tf.constant(0, tf.int64), pos) + b"\x3b"  # the trailer byte
    return _with([complete], height, width, first_frame)


def _unknown(encoded, head, label):
    refused = refuse(False, label, f"not a {', '.join(FORMATS[:-1])} or {FORMATS[-1]} image")
    zero = tf.constant(0, tf.int64)
    return _with([refused], zero, zero, encoded)


def read(encoded: tf.Tensor, label="image") -> Header:
    """The format, height and width of one encoded image (scalar string), from its header only.
    ``label`` (a string or string tensor, e.g. the file name) starts the error messages.

    Raises (when the graph runs):
      InvalidArgumentError: not one of FORMATS, or a header that cannot be read.
    """
    head = tf.cast(_padded_bytes(tf.strings.substr(encoded, 0, _HEAD)), tf.int64)
    fmt = _format(head)
    branches = [_jpeg, _png, _gif, _bmp, _webp, _unknown]
    height, width, data = tf.switch_case(fmt, [lambda b=b: b(encoded, head, label) for b in branches])
    return Header(fmt, height, width, data)


def check(header: Header, limits: ImageLimits, label="image") -> list:
    """Assertions (run them before decoding) that the header's size is within ``limits``;
    ``label`` as for :func:`read`."""
    height, width = header.height, header.width
    pixels = height * width
    longer, shorter = tf.maximum(height, width), tf.minimum(height, width)
    return [
        refuse(shorter >= 1, label, "the header gives a size of {}x{} pixels", width, height),
        refuse(pixels <= limits.max_pixels, label,
               f"{{}}x{{}} is {{}} pixels, more than max_pixels={limits.max_pixels}", width, height, pixels),
        refuse(tf.cast(longer, tf.float64) <= limits.max_aspect_ratio * tf.cast(shorter, tf.float64), label,
               f"{{}}x{{}}: the longer side is more than max_aspect_ratio={limits.max_aspect_ratio:g} times the "
               f"shorter", width, height),
    ]
