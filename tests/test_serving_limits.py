"""What one request may cost: hostile requests against exported SavedModels, each measured in a
fresh process that never imports bl_net_tf (peak RSS growth during the request; serving_probe.py).

The network is a small one at 32x32: the preprocessing is what a hostile request attacks. The
full-size check (bL-ResNet-50, 224) is documented in docs/deployment.md.
"""
import os

import keras
import numpy as np
import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, text_format, wrappers_pb2

from bl_net_tf.export import export_saved_model
from bl_net_tf.serving.preprocess import DEFAULT_MAX_BATCH, ServingLimits
from serving_probe import at_limit, encode, jpeg_with_size, measure, photo_jpeg, png_of_zeros

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIZE = 32
CLASSES = 3
# Peak growth allowed for a request that is refused or holds small images; the unbounded transform
# took 1.6 GB for the 86-byte strip and more than 3 GB for 1000 one-pixel JPEGs.
SMALL_MB = 40
STRIP_1XN = encode(np.zeros((1, 2000, 3), np.uint8), "PNG")  # 86 bytes
STRIP_NX1 = encode(np.zeros((2000, 1, 3), np.uint8), "PNG")
ONE_PIXEL = encode(np.zeros((1, 1, 3), np.uint8), "JPEG")


def tiny_classifier() -> keras.Model:
    images = keras.Input((SIZE, SIZE, 3), name="images")
    x = keras.layers.Conv2D(4, 3, name="conv")(images)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    return keras.Model(images, keras.layers.Dense(CLASSES, name="head_fc")(x))


@pytest.fixture(scope="module")
def default_limits(tmp_path_factory):
    """Hostile requests against an export with the default limits, in one fresh process."""
    export_dir = export_saved_model(tiny_classifier(), str(tmp_path_factory.mktemp("default") / "tiny" / "1"))
    good = photo_jpeg()
    return measure(export_dir, {
        "strip 1xN": [STRIP_1XN],
        "strip Nx1": [STRIP_NX1],
        "header claims 60000x60000": [png_of_zeros(60000, 60000, rows=2)],
        "jpeg header claims 65000x65000": [jpeg_with_size(65000, 65000)],
        "1000 one-pixel jpegs": [ONE_PIXEL] * 1000,
        "17 images": [ONE_PIXEL] * 17,
        "empty": [],
        "mixed good and bad": [good, b"not an image", good],
        "16 photos": [good] * 16,
        # Last: what a request at the pixel limit costs, so the measurement is seen to work after
        # the others (a 4096x4096 PNG decodes to 48 MB).
        "png at the pixel limit": [at_limit("PNG")],
    })


# Request -> the one line of its refusal.
REFUSALS = {
    "strip 1xN": "image 0 of the request: 2000x1: the longer side is more than max_aspect_ratio=20 times the shorter",
    "strip Nx1": "image 0 of the request: 1x2000: the longer side is more than max_aspect_ratio=20 times the shorter",
    "header claims 60000x60000": "image 0 of the request: 60000x60000 is 3600000000 pixels, more than "
                                 "max_pixels=16777216",
    "jpeg header claims 65000x65000": "image 0 of the request: 65000x65000 is 4225000000 pixels, more than "
                                      "max_pixels=16777216",
    "1000 one-pixel jpegs": "request: 1000 images, more than max_batch=16",
    "17 images": "request: 17 images, more than max_batch=16",
    "mixed good and bad": "image 1 of the request: not a JPEG, PNG, GIF, BMP or WebP image",
}


@pytest.mark.parametrize("name", REFUSALS)
def test_hostile_requests_are_refused_before_they_cost_memory(default_limits, name):
    result = default_limits[name]
    assert (result["outcome"], result["message"]) == ("InvalidArgumentError", f"assertion failed: [{REFUSALS[name]}]")
    assert result["growth_mb"] < SMALL_MB


def test_an_empty_request_gets_empty_outputs(default_limits):
    assert default_limits["empty"]["outcome"] == "answered"
    assert default_limits["empty"]["message"] == f"probabilities [0, {CLASSES}]"


def test_requests_within_the_limits_are_answered_after_refused_ones(default_limits):
    assert default_limits["16 photos"]["outcome"] == "answered"
    assert default_limits["16 photos"]["growth_mb"] < SMALL_MB
    at_the_limit = default_limits["png at the pixel limit"]
    assert at_the_limit["outcome"] == "answered"
    # The decoded image (48 MB) and its window (the centre 87.5%, ~37 MB).
    assert 48 <= at_the_limit["growth_mb"] < 150, at_the_limit


def test_raised_limits_still_decode_only_the_window(tmp_path):
    """With the aspect-ratio limit raised, a strip is answered: only the pixels its crop reads are
    resampled, where resizing the whole strip took 1.6 GB."""
    limits = ServingLimits(max_batch=2, max_aspect_ratio=30000)
    export_dir = export_saved_model(tiny_classifier(), str(tmp_path / "raised" / "1"), limits=limits)
    results = measure(export_dir, {
        "strips": [STRIP_1XN, STRIP_NX1],
        "jpeg strip 1x20000": [encode(np.zeros((1, 20000, 3), np.uint8), "JPEG")],
        "3 images": [ONE_PIXEL] * 3,
    })
    for name in ("strips", "jpeg strip 1x20000"):
        assert results[name]["outcome"] == "answered" and results[name]["growth_mb"] < SMALL_MB, results[name]
    assert results["3 images"]["message"] == "assertion failed: [request: 3 images, more than max_batch=2]"


def batching_parameters_class():
    """tensorflow.serving.BatchingParameters as TF Serving declares it
    (tensorflow_serving/servables/tensorflow/session_bundle_config.proto; the tensorflow-serving-api
    package does not ship it): four Int64Value fields, a StringValue, the repeated allowed sizes."""
    pool = descriptor_pool.DescriptorPool()
    pool.AddSerializedFile(wrappers_pb2.DESCRIPTOR.serialized_pb)
    proto = descriptor_pb2.FileDescriptorProto(name="batching.proto", package="tensorflow.serving", syntax="proto3",
                                               dependency=["google/protobuf/wrappers.proto"])
    message = proto.message_type.add(name="BatchingParameters")
    wrapped = [("max_batch_size", "Int64Value"), ("batch_timeout_micros", "Int64Value"),
               ("max_enqueued_batches", "Int64Value"), ("num_batch_threads", "Int64Value"),
               ("thread_pool_name", "StringValue")]
    for number, (name, kind) in enumerate(wrapped, 1):
        message.field.add(name=name, number=number, type=descriptor_pb2.FieldDescriptorProto.TYPE_MESSAGE,
                          type_name=f".google.protobuf.{kind}", label=descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL)
    message.field.add(name="allowed_batch_sizes", number=6, type=descriptor_pb2.FieldDescriptorProto.TYPE_INT64,
                      label=descriptor_pb2.FieldDescriptorProto.LABEL_REPEATED)
    pool.Add(proto)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("tensorflow.serving.BatchingParameters"))


def test_the_shipped_batching_file_parses_and_fits_the_default_limit():
    with open(os.path.join(REPO, "docker", "batching_parameters.txt")) as handle:
        parameters = text_format.Parse(handle.read(), batching_parameters_class()())
    # A merged batch above the export's max_batch would be refused by the graph.
    assert parameters.max_batch_size.value == DEFAULT_MAX_BATCH
    assert parameters.num_batch_threads.value >= 1 and parameters.max_enqueued_batches.value >= 1
