"""TF Serving's warm-up file: ``assets.extra/tf_serving_warmup_requests`` in a SavedModel.

TF Serving replays these requests when it loads a version, before it serves it, so that the first
user request does not pay for the lazy start-up work (graph optimisation, oneDNN kernels for each
batch size). The file is TFRecords of ``tensorflow.serving.PredictionLog`` messages
(tensorflow_serving/apis/prediction_log.proto). Only these fields are written, by hand in protobuf
wire format, so that exporting does not need the tensorflow-serving-api package::

  PredictionLog  { PredictLog predict_log = 6; }
  PredictLog     { PredictRequest request = 1; }
  PredictRequest { ModelSpec model_spec = 1; map<string, TensorProto> inputs = 2; }
  ModelSpec      { string signature_name = 3; }

(a map entry is a message ``{ string key = 1; TensorProto value = 2; }``).
"""
from __future__ import annotations

import os

import numpy as np
import tensorflow as tf

FILE_NAME = "tf_serving_warmup_requests"
_LENGTH_DELIMITED = 2
# An ordinary photo's size (ImageNet's most common one).
PHOTO_HEIGHT, PHOTO_WIDTH = 375, 500


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited field (a string, bytes or an embedded message)."""
    return _varint(number << 3 | _LENGTH_DELIMITED) + _varint(len(payload)) + payload


def prediction_log(signature_name: str, inputs: dict) -> bytes:
    """A serialised PredictionLog holding a PredictRequest of ``inputs`` (name -> array) to
    ``signature_name``."""
    request = _field(1, _field(3, signature_name.encode()))
    for name, value in inputs.items():
        tensor = tf.make_tensor_proto(value).SerializeToString()
        request += _field(2, _field(1, name.encode()) + _field(2, tensor))
    return _field(6, _field(1, request))


def _photo(height: int = PHOTO_HEIGHT, width: int = PHOTO_WIDTH) -> np.ndarray:
    """A smooth, deterministic RGB picture (decoders and resizers take the same paths as for a
    photo of that size; the values do not matter)."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    channels = [128 + 100 * np.sin(x / 37.0 + k) * np.cos(y / 23.0 - k) for k in range(3)]
    return np.clip(np.stack(channels, -1), 0, 255).astype(np.uint8)


def requests(image_size: int) -> list:
    """``(signature_name, inputs)`` pairs: one and two encoded photos (JPEG, and JPEG + PNG) for
    ``serving_default``, one crop for ``predict_images``."""
    photo = _photo()
    jpeg = tf.io.encode_jpeg(photo, quality=90).numpy()
    png = tf.io.encode_png(photo).numpy()
    crop = _photo(image_size, image_size)[None]
    return [("serving_default", {"image_bytes": np.array([jpeg], dtype=object)}),
            ("serving_default", {"image_bytes": np.array([jpeg, png], dtype=object)}),
            ("predict_images", {"images": crop})]


def write(saved_model_dir: str, image_size: int) -> str:
    """Writes the warm-up requests into ``saved_model_dir``; returns the file's path."""
    folder = os.path.join(saved_model_dir, "assets.extra")
    tf.io.gfile.makedirs(folder)
    path = os.path.join(folder, FILE_NAME)
    with tf.io.TFRecordWriter(path) as writer:
        for signature_name, inputs in requests(image_size):
            writer.write(prediction_log(signature_name, inputs))
    return path
