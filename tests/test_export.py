"""bl_net_tf.export: one SavedModel of a channels_first bL-ResNet-50 (10 classes, 64x64), checked
the way TF Serving uses it: loaded in a fresh process, its warm-up requests replayed there, and
through TF's own saved_model_cli. (Limits: test_serving_limits.py; export from a training run:
test_export_from_run.py.)"""
import collections
import io
import json
import os
import re
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image
from skimage import data as skdata
from tensorflow.core.protobuf import saved_model_pb2

from bl_net_tf import create_model
from bl_net_tf.data.recipe import eval_resize_size
from bl_net_tf.export import export_saved_model, main
from bl_net_tf.models.layers import IMAGENET_MEAN_RGB, IMAGENET_STD_RGB, ImageNetNormalization
from bl_net_tf.serving.layout import channels_last_copy
from bl_net_tf.serving.signatures import serving_network

SIZE = 64
NUM_CLASSES = 10
CLASS_NAMES = [f"class_{i}" for i in range(NUM_CLASSES)]
TOLERANCE = 1e-4
# Images whose shorter side already is eval_resize_size(SIZE), so the bicubic resize is the
# identity and serving_default must equal predict_images on a numpy centre crop.
RESIZED = eval_resize_size(SIZE)
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
# TensorFlow's own console script, from the environment that runs the tests (activated or not).
SAVED_MODEL_CLI = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")

# Runs in a fresh interpreter that never imports bl_net_tf, as a serving host would.
FRESH_PROCESS = r"""
import json, sys
import numpy as np
import tensorflow as tf

export_dir, folder = sys.argv[1], sys.argv[2]
model = tf.saved_model.load(export_dir)
results = {}
images = np.load(f"{folder}/batch.npy")
for key, value in model.signatures["predict_images"](images=tf.constant(images)).items():
    results["images_" + key] = value.numpy().astype("S") if value.dtype == tf.string else value.numpy()
encoded = json.load(open(f"{folder}/files.json"))
blobs = [open(f"{folder}/{name}", "rb").read() for name in encoded["valid"]]
for key, value in model.signatures["serving_default"](image_bytes=tf.constant(blobs)).items():
    results["bytes_" + key] = value.numpy().astype("S") if value.dtype == tf.string else value.numpy()
# TF Serving's own path: the TF1 session loader and the signature's tensor names.
with tf.compat.v1.Session(graph=tf.Graph()) as session:
    meta_graph = tf.compat.v1.saved_model.loader.load(session, ["serve"], export_dir)
    signature = meta_graph.signature_def["serving_default"]
    fetched = session.run({key: info.name for key, info in signature.outputs.items()},
                          feed_dict={signature.inputs["image_bytes"].name: blobs})
    # What the session executes for a batch: op types from a full trace (grappler's rewrite applied).
    signature = meta_graph.signature_def["predict_images"]
    metadata = tf.compat.v1.RunMetadata()
    session.run(signature.outputs["probabilities"].name, feed_dict={signature.inputs["images"].name: images},
                options=tf.compat.v1.RunOptions(trace_level=tf.compat.v1.RunOptions.FULL_TRACE),
                run_metadata=metadata)
    executed = [node.timeline_label.split(" = ")[1].split("(")[0] for device in metadata.step_stats.dev_stats
                for node in device.node_stats if " = " in node.timeline_label]
results["session_probabilities"] = fetched["probabilities"]
results["session_op_types"] = np.asarray(executed, dtype="S")
errors = {}
for name in encoded["invalid"]:
    bad = open(f"{folder}/{name}", "rb").read()
    try:
        model.signatures["serving_default"](image_bytes=tf.constant([blobs[0], bad]))
        errors[name] = "no error"
    except Exception as error:
        errors[name] = type(error).__name__
# TF Serving's warm-up: the PredictionLog records, read with TF Serving's own protos, replayed.
from tensorflow_serving.apis import prediction_log_pb2
replayed = []
for record in tf.data.TFRecordDataset(f"{export_dir}/assets.extra/tf_serving_warmup_requests"):
    log = prediction_log_pb2.PredictionLog.FromString(record.numpy())
    request = log.predict_log.request
    inputs = {name: tf.constant(tf.make_ndarray(proto)) for name, proto in request.inputs.items()}
    outputs = model.signatures[request.model_spec.signature_name](**inputs)
    replayed.append({"log_type": log.WhichOneof("log_type"), "signature": request.model_spec.signature_name,
                     "inputs": {name: list(value.shape) for name, value in inputs.items()},
                     "probabilities": list(outputs["probabilities"].shape)})
np.savez(f"{folder}/results.npz", **results)
json.dump({"errors": errors, "warmup": replayed}, open(f"{folder}/errors.json", "w"))
"""


def randomize_batch_norm(model: keras.Model, seed: int = 0) -> keras.Model:
    rng = np.random.RandomState(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            channels = layer.gamma.shape
            layer.set_weights([rng.uniform(0.5, 1.5, channels), rng.normal(0, 0.1, channels),
                               rng.normal(0, 0.1, channels), rng.uniform(0.5, 1.5, channels)])
    return model


# The spread (standard deviation) of an image's logits after `randomize`: a few units, as a trained
# classifier's.
LOGIT_STD = 4.0


def randomize(model: keras.Model, seed: int = 0) -> keras.Model:
    """Random BN statistics and a classifier whose logits spread by a few units (LOGIT_STD).

    A fresh model's zero-gamma blocks and N(0, 0.01) head give near-uniform probabilities, which
    would test little. Random statistics alone make every residual block add to the features, and a
    fixed N(0, 0.05) head then gives logits of several hundred: two classes in a near tie there turn
    float rounding (another data format, folded BatchNorm) into probability differences above the
    tolerance. So the head is scaled on a probe batch of random pixels instead.
    """
    randomize_batch_norm(model, seed)
    rng = np.random.RandomState(seed + 1)
    head = model.get_layer("head_fc")
    kernel, bias = head.get_weights()
    kernel = rng.normal(0, 1, kernel.shape).astype("float32")
    head.set_weights([kernel, np.zeros_like(bias)])
    probe = rng.uniform(0, 255, (4,) + tuple(model.inputs[0].shape[1:])).astype("float32")
    if not any(isinstance(layer, ImageNetNormalization) for layer in model.layers):
        probe = (probe - np.float32(IMAGENET_MEAN_RGB)) / np.float32(IMAGENET_STD_RGB)
    # Softmax ignores a shift common to an image's logits: scale their spread within each image.
    scale = LOGIT_STD / np.std(model(probe, training=False), axis=1).mean()
    head.set_weights([kernel * scale, rng.normal(0, 0.5, bias.shape).astype("float32")])
    return model


def encode(array: np.ndarray, fmt: str) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format=fmt)
    return buffer.getvalue()


def center_crop(array: np.ndarray) -> np.ndarray:
    top, left = (array.shape[0] - SIZE) // 2, (array.shape[1] - SIZE) // 2
    return array[top:top + SIZE, left:left + SIZE]


def keras_probabilities(model: keras.Model, images: np.ndarray) -> np.ndarray:
    """The source model's probabilities: it has no in-graph preprocessing, so normalise here."""
    normalised = (images.astype(np.float32) - np.float32(IMAGENET_MEAN_RGB)) / np.float32(IMAGENET_STD_RGB)
    return tf.nn.softmax(model(normalised, training=False)).numpy()


@pytest.fixture(scope="module")
def source_model():
    """As a GPU trainer would hand it over: channels_first, without in-graph preprocessing."""
    keras.utils.set_random_seed(1)  # the same convolution weights in every run
    return randomize(create_model("bl-resnet50", num_classes=NUM_CLASSES, input_shape=(SIZE, SIZE, 3),
                                  data_format="channels_first"))


@pytest.fixture(scope="module")
def export_dir(source_model, tmp_path_factory):
    path = tmp_path_factory.mktemp("serving") / "bl_resnet50" / "1"
    assert export_saved_model(source_model, str(path), class_names=CLASS_NAMES) == str(path)
    return str(path)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """Encoded files and a uint8 batch (random pixels + the centre crops of the exact-size PNGs)."""
    folder = tmp_path_factory.mktemp("inputs")
    landscape = skdata.chelsea()[:RESIZED, :RESIZED + 27]
    portrait = skdata.astronaut()[:RESIZED + 27, 100:100 + RESIZED]
    files = {
        "astronaut.jpg": encode(skdata.astronaut(), "JPEG"),
        "chelsea.png": encode(skdata.chelsea(), "PNG"),
        "camera_grey.jpg": encode(skdata.camera(), "JPEG"),
        "landscape.png": encode(landscape, "PNG"),
        "portrait.png": encode(portrait, "PNG"),
        "garbage.jpg": b"this is not an image",
        "empty.png": b"",
    }
    files["truncated.jpg"] = files["astronaut.jpg"][: len(files["astronaut.jpg"]) // 2]
    for name, blob in files.items():
        (folder / name).write_bytes(blob)
    valid = ["astronaut.jpg", "chelsea.png", "camera_grey.jpg", "landscape.png", "portrait.png"]
    invalid = ["garbage.jpg", "empty.png", "truncated.jpg"]
    (folder / "files.json").write_text(json.dumps({"valid": valid, "invalid": invalid}))
    random_images = np.random.RandomState(1).randint(0, 256, (2, SIZE, SIZE, 3)).astype(np.uint8)
    batch = np.concatenate([random_images, center_crop(landscape)[None], center_crop(portrait)[None]])
    np.save(folder / "batch.npy", batch)
    return folder, batch


@pytest.fixture(scope="module")
def fresh_process(export_dir, inputs):
    folder, _ = inputs
    subprocess.run([sys.executable, "-c", FRESH_PROCESS, export_dir, str(folder)], check=True, env=ENV)
    results = dict(np.load(folder / "results.npz"))
    results.update(json.loads((folder / "errors.json").read_text()))
    return results


@pytest.fixture(scope="module")
def expected(source_model, inputs):
    probabilities = keras_probabilities(source_model, inputs[1])
    # Far from uniform (0.1), so a wrong weight or preprocessing step shows above the tolerance.
    assert probabilities.max(axis=1).min() > 0.3
    return probabilities


def test_uint8_signature_matches_keras_in_fresh_process(fresh_process, expected):
    difference = np.abs(fresh_process["images_probabilities"] - expected).max()
    print(f"max abs difference of probabilities, SavedModel vs Keras: {difference:.2e}")
    assert difference < TOLERANCE


def check_outputs(results: dict, prefix: str, count: int):
    probabilities = results[prefix + "probabilities"]
    assert probabilities.shape == (count, NUM_CLASSES)
    assert (probabilities >= 0).all()
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    top5 = np.argsort(-probabilities, axis=1, kind="stable")[:, :5]
    np.testing.assert_array_equal(results[prefix + "classes"], top5)
    np.testing.assert_allclose(results[prefix + "scores"], np.take_along_axis(probabilities, top5, axis=1), rtol=1e-6)
    names = np.vectorize(bytes.decode)(results[prefix + "class_names"])
    np.testing.assert_array_equal(names, np.asarray(CLASS_NAMES)[top5])


def test_both_signatures_return_probabilities_top5_and_names(fresh_process):
    check_outputs(fresh_process, "images_", 4)
    check_outputs(fresh_process, "bytes_", 5)  # JPEG, PNG, grey JPEG, two exact-size PNGs


def test_image_bytes_center_crops_like_predict_images(fresh_process):
    """Landscape and portrait PNGs at the resize size: the graph's crop equals the numpy one."""
    np.testing.assert_allclose(fresh_process["bytes_probabilities"][3:5], fresh_process["images_probabilities"][2:4],
                               atol=1e-5)


def test_tf1_session_loader_serves_image_bytes(fresh_process):
    """TF Serving loads SavedModels into a session; variables must be restored on that path too."""
    np.testing.assert_allclose(fresh_process["session_probabilities"], fresh_process["bytes_probabilities"], atol=1e-6)


def test_tf1_session_loader_runs_every_addition_inside_a_convolution(fresh_process):
    """In TF Serving's session too, grappler fuses each residual and merge addition and its ReLU into
    a convolution (serving/signatures.py gives the network a static image shape inside the empty-batch
    cond; without it the stem module's merge, stage 2's first block and stage 2's merge ran as 3
    AddV2 and 3 Relu ops, 3.5% of bL-ResNet-50's op time at 224x224)."""
    executed = collections.Counter(op.decode() for op in fresh_process["session_op_types"])
    assert executed["_MklNativeFusedConv2D"] + executed["_FusedConv2D"] > 50  # the trace saw the network
    assert executed["AddV2"] == executed["Add"] == executed["Relu"] == 0, executed


def test_non_image_bytes_raise_invalid_argument(fresh_process):
    assert fresh_process["errors"] == {"garbage.jpg": "InvalidArgumentError", "empty.png": "InvalidArgumentError",
                                       "truncated.jpg": "InvalidArgumentError"}


def test_warmup_requests_replay_against_the_saved_model(fresh_process):
    """TF Serving replays assets.extra/tf_serving_warmup_requests at load: real-shaped requests to both
    signatures (a photo-sized JPEG, JPEG + PNG, one crop), each answered."""
    assert fresh_process["warmup"] == [
        {"log_type": "predict_log", "signature": "serving_default", "inputs": {"image_bytes": [1]},
         "probabilities": [1, NUM_CLASSES]},
        {"log_type": "predict_log", "signature": "serving_default", "inputs": {"image_bytes": [2]},
         "probabilities": [2, NUM_CLASSES]},
        {"log_type": "predict_log", "signature": "predict_images", "inputs": {"images": [1, SIZE, SIZE, 3]},
         "probabilities": [1, NUM_CLASSES]},
    ]


def test_saved_model_cli_show_lists_the_signatures(export_dir):
    shown = subprocess.run([SAVED_MODEL_CLI, "show", "--dir", export_dir, "--all"], check=True, env=ENV,
                           capture_output=True, text=True).stdout
    signatures = dict(re.findall(r"signature_def\['(\w+)'\]:(.*?)(?=signature_def\[|\Z)", shown, re.S))
    default = re.sub(r"\s+", " ", signatures["serving_default"])
    assert "inputs['image_bytes'] tensor_info: dtype: DT_STRING shape: (-1)" in default
    assert "outputs['probabilities'] tensor_info: dtype: DT_FLOAT shape: (-1, 10)" in default
    assert "outputs['classes'] tensor_info: dtype: DT_INT32 shape: (-1, 5)" in default
    assert "outputs['scores'] tensor_info: dtype: DT_FLOAT shape: (-1, 5)" in default
    images = re.sub(r"\s+", " ", signatures["predict_images"])
    assert f"inputs['images'] tensor_info: dtype: DT_UINT8 shape: (-1, {SIZE}, {SIZE}, 3)" in images


def test_saved_model_cli_run_on_predict_images(export_dir, inputs, expected, tmp_path):
    folder, _ = inputs
    subprocess.run([SAVED_MODEL_CLI, "run", "--dir", export_dir, "--tag_set", "serve", "--signature_def",
                    "predict_images", "--inputs", f"images={folder / 'batch.npy'}", "--outdir", str(tmp_path)],
                   check=True, env=ENV, capture_output=True)
    assert np.abs(np.load(tmp_path / "probabilities.npy") - expected).max() < TOLERANCE


def test_export_of_a_channels_first_model_is_channels_last(source_model, export_dir):
    assert source_model.get_layer("stem_conv").data_format == "channels_first"  # what a GPU trainer hands over
    proto = saved_model_pb2.SavedModel()
    with open(os.path.join(export_dir, "saved_model.pb"), "rb") as handle:
        proto.ParseFromString(handle.read())
    formats = [node.attr["data_format"].s for function in proto.meta_graphs[0].graph_def.library.function
               for node in function.node_def if node.op in ("Conv2D", "_FusedConv2D")]
    assert formats and set(formats) <= {b"NHWC", b""}  # "" is the op's default, NHWC


def test_in_graph_preprocessing_is_not_applied_twice():
    """``include_preprocessing=True`` models keep their ImageNetNormalization; others get one."""
    plain = tiny_classifier(3)
    images = keras.Input((32, 32, 3), name="images")
    with_preprocessing = keras.Model(images, plain(ImageNetNormalization(name="normalize")(images)))
    batch = np.random.RandomState(0).uniform(0, 255, (2, 32, 32, 3)).astype(np.float32)
    expected = plain((batch - np.float32(IMAGENET_MEAN_RGB)) / np.float32(IMAGENET_STD_RGB))
    for model in (plain, with_preprocessing):
        np.testing.assert_allclose(serving_network(model, 32)(batch), expected, atol=1e-5)


def test_cli_exports_a_weights_file(source_model, inputs, expected, tmp_path, capsys):
    weights = tmp_path / "bl_resnet50.weights.h5"
    source_model.save_weights(weights)
    names = tmp_path / "names.txt"
    names.write_text("\n".join(CLASS_NAMES) + "\n")
    export = tmp_path / "models" / "bl_resnet50" / "7"
    argv = ["--arch", "bl-resnet50", "--alpha", "2", "--beta", "4", "--weights", str(weights), "--num_classes",
            str(NUM_CLASSES), "--image_size", str(SIZE), "--class_names", str(names), "--export_dir", str(export)]
    assert main(argv) == 0
    assert os.listdir(export.parent) == ["7"]  # the staging folder is gone
    outputs = tf.saved_model.load(str(export)).signatures["predict_images"](images=tf.constant(inputs[1]))
    assert np.abs(outputs["probabilities"].numpy() - expected).max() < TOLERANCE
    capsys.readouterr()
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err == f"bl-net-export: error: export_dir {export} is not empty; pass overwrite=True (--overwrite) to " \
                  f"replace it\n"


def test_cli_errors_are_one_line(source_model, tmp_path, capsys):
    weights = tmp_path / "bl_resnet50.weights.h5"
    source_model.save_weights(weights)
    base = ["--num_classes", str(NUM_CLASSES), "--image_size", str(SIZE), "--export_dir", str(tmp_path / "out" / "1")]
    assert main(["--arch", "bl-resnext50", "--weights", str(weights)] + base) == 1
    assert re.fullmatch(r"bl-net-export: error: .*bl_resnet50.weights.h5 does not fit bl-resnext50.*\n", capsys.readouterr().err)
    assert main(["--arch", "bl-resnet50", "--weights", str(tmp_path / "missing.weights.h5")] + base) == 1
    assert re.fullmatch(r"bl-net-export: error: no weights file .*missing.weights.h5\n", capsys.readouterr().err)
    assert main(["--arch", "no-such-net", "--weights", str(weights)] + base) == 1
    assert re.fullmatch(r"bl-net-export: error: unknown arch 'no-such-net'; allowed: .*\n", capsys.readouterr().err)
    assert main(["--arch", "bl-resnet50", "--weights", str(weights)]) == 2  # usage: no --export_dir
    assert capsys.readouterr().err == ("bl-net-export: error: flag --export_dir=None: Flag --export_dir must have a "
                                       "value other than None.\n")
    # (a checkpoint's network against the model flags: tests/test_weights.py)
    assert main(["--arch", "bl-resnet50", "--pytorch_checkpoint", "x.pth.tar"] + base) == 1
    assert capsys.readouterr().err == "bl-net-export: error: no weights file or run folder at x.pth.tar\n"
    assert not (tmp_path / "out").exists()


def tiny_classifier(num_classes: int, input_shape=(32, 32, 3)) -> keras.Model:
    """A small functional classifier: exports in a second, for the contract's corner cases."""
    images = keras.Input(input_shape, name="images")
    x = keras.layers.Conv2D(4, 3, name="conv")(images)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    return keras.Model(images, keras.layers.Dense(num_classes, name="head_fc")(x))


def test_overwrite_replaces_an_export(tmp_path):
    target = tmp_path / "tiny" / "1"
    export_saved_model(tiny_classifier(3), str(target))
    with pytest.raises(FileExistsError, match="not empty"):
        export_saved_model(tiny_classifier(3), str(target))
    export_saved_model(tiny_classifier(2), str(target), overwrite=True)
    outputs = tf.saved_model.load(str(target)).signatures["predict_images"](images=tf.zeros([1, 32, 32, 3], tf.uint8))
    # Fewer classes than 5: top-k is all of them.
    assert outputs["probabilities"].shape == (1, 2) and outputs["classes"].shape == (1, 2)
    assert sorted(os.listdir(tmp_path / "tiny")) == ["1"]


def test_channels_last_copy_converts_channel_axes():
    """BN and Concatenate on axis 1, the NCHW transpose, pooling: the copy computes the same."""
    images = keras.Input((32, 32, 3))
    x = keras.layers.Permute((3, 1, 2))(images)
    a = keras.layers.Conv2D(4, 3, data_format="channels_first")(x)
    b = keras.layers.Conv2D(2, 3, data_format="channels_first")(x)
    x = keras.layers.Concatenate(axis=1)([a, b])
    x = keras.layers.BatchNormalization(axis=1)(x)
    x = keras.layers.GlobalAveragePooling2D(data_format="channels_first")(x)
    model = randomize_batch_norm(keras.Model(images, keras.layers.Dense(3)(x)))
    copy = channels_last_copy(model)
    assert all(getattr(layer, "data_format", "channels_last") == "channels_last" for layer in copy.layers)
    batch = np.random.RandomState(0).standard_normal((2, 32, 32, 3)).astype(np.float32)
    np.testing.assert_allclose(copy(batch, training=False), model(batch, training=False), atol=1e-5)


def test_mixed_precision_model_is_served_in_float32(tmp_path):
    images = keras.Input((32, 32, 3))
    x = keras.layers.Conv2D(4, 3, dtype="mixed_float16", name="conv")(images)
    x = keras.layers.GlobalAveragePooling2D(dtype="mixed_float16", name="pool")(x)
    model = keras.Model(images, keras.layers.Dense(3, dtype="mixed_float16", name="head_fc")(x))
    network = serving_network(model, 32)
    assert {layer.compute_dtype for layer in network.layers} == {"float32"}
    batch = np.random.RandomState(0).uniform(0, 255, (2, 32, 32, 3)).astype(np.float32)
    normalised = (batch - np.float32(IMAGENET_MEAN_RGB)) / np.float32(IMAGENET_STD_RGB)
    np.testing.assert_allclose(network(batch), np.float32(model(normalised)), atol=2e-2)


def test_contract_errors(tmp_path):
    with pytest.raises(ValueError, match="pass image_size"):
        export_saved_model(tiny_classifier(3, (None, None, 3)), str(tmp_path / "a"))
    with pytest.raises(ValueError, match="2 class names for a model with 3 classes"):
        export_saved_model(tiny_classifier(3), str(tmp_path / "b"), class_names=["x", "y"])
    features = create_model("bl-resnet50", input_shape=(SIZE, SIZE, 3), features_only=True)
    with pytest.raises(ValueError, match="features_only"):
        export_saved_model(features, str(tmp_path / "c"))
    assert not any((tmp_path / name).exists() for name in "abc")
