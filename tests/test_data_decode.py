"""Byte checks and decoding of ImageNet's odd files: PNG named .JPEG, CMYK, grayscale."""
import io

import numpy as np
import pytest
import skimage.data
import tensorflow as tf
from PIL import Image

from bl_net_tf.data import decode, headers, integrity

PHOTO = skimage.data.astronaut()[::8, ::8]  # 64x64 RGB


def _encode(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


JPEG = _encode(Image.fromarray(PHOTO), "JPEG", quality=95)
PNG = _encode(Image.fromarray(PHOTO), "PNG")
CMYK = _encode(Image.fromarray(PHOTO).convert("CMYK"), "JPEG", quality=95)
GREY = _encode(Image.fromarray(PHOTO).convert("L"), "JPEG", quality=95)
GIF = _encode(Image.fromarray(PHOTO).convert("P"), "GIF")

CASES = {  # bytes -> (is complete JPEG, problem)
    "jpeg": (JPEG, True, ""),
    "cmyk jpeg": (CMYK, True, ""),
    "grey jpeg": (GREY, True, ""),
    "png": (PNG, False, ""),
    "jpeg with trailer": (JPEG + b"\0" * 16, True, ""),
    "empty": (b"", False, integrity.EMPTY),
    "truncated jpeg": (JPEG[: len(JPEG) // 2], False, integrity.JPEG_TRUNCATED),
    "truncated png": (PNG[: len(PNG) // 2], False, integrity.PNG_TRUNCATED),
    "gif": (GIF, False, integrity.UNKNOWN_FORMAT),
    "text": (b"not an image at all", False, integrity.UNKNOWN_FORMAT),
}


@pytest.mark.parametrize("name", CASES)
def test_python_and_tf_byte_checks_agree(name):
    data, complete_jpeg, problem = CASES[name]
    assert integrity.inspect_bytes(data) == (complete_jpeg, problem)
    is_jpeg, tf_problem = integrity.inspect_tensor(tf.constant(data))
    assert (bool(is_jpeg), tf_problem.numpy().decode()) == (complete_jpeg, problem)


def _mad(a, b):
    return np.abs(np.asarray(a, float) - np.asarray(b, float)).mean()


def _whole(data: bytes) -> tf.Tensor:
    """The whole image, as the evaluation transform decodes it (format and size from the header)."""
    header = headers.read(tf.constant(data))
    window = tf.cast(tf.stack([0, 0, header.height, header.width]), tf.int32)
    return decode.decode_window(header.data, header.format, window)


def test_odd_files_decode_to_rgb():
    png = _whole(PNG)
    np.testing.assert_array_equal(png, PHOTO)  # lossless, though named .JPEG in ImageNet
    cmyk = _whole(CMYK)
    assert cmyk.shape == PHOTO.shape and _mad(cmyk, PHOTO) < 4
    grey = _whole(GREY).numpy()
    assert grey.shape == PHOTO.shape
    assert (grey[..., 0] == grey[..., 1]).all() and (grey[..., 1] == grey[..., 2]).all()
    gif = _whole(GIF)
    assert gif.shape == PHOTO.shape


def test_window_decoding_crops_jpegs_and_other_formats_alike():
    def window(hw):
        return tf.constant([8, 4, 40, 32])

    from_png = decode.decode_window_rgb(tf.constant(PNG), tf.constant(False), window)
    np.testing.assert_array_equal(from_png, PHOTO[8:48, 4:36])
    for jpeg in (JPEG, CMYK, GREY):
        # Only the window is decoded; it matches the same window of the whole image.
        whole = _whole(jpeg)
        cropped = decode.decode_window_rgb(tf.constant(jpeg), tf.constant(True), window)
        assert cropped.shape == (40, 32, 3)
        assert _mad(cropped, whole[8:48, 4:36]) < 1


def test_full_decode_decides_on_suspect_files():
    assert decode.can_decode(GIF) and decode.can_decode(JPEG + b"\0" * 500)
    assert not decode.can_decode(JPEG[: len(JPEG) // 2])
    assert not decode.can_decode(b"not an image at all")
