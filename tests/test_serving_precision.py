"""Reduced-precision exports (bfloat16, float16) keep the float32 export's top-1 class on real photos.

A random-weight network's logits are nearly tied, so agreeing on them would prove little. The model
here is trained-ish instead, cheaply and deterministically: bL-ResNet-50's convolutions keep their
random init, its BatchNorm statistics are calibrated on the images (one training-mode pass, as
after training), the last BatchNorm of each residual branch is small (trained ResNets' are; the
zero-init ones grow to about 0.1-0.3) and the others near 1, and the classifier is fitted by ridge
regression on the pooled features of half the images: 18 classes, the 8 scikit-image photographs
(random crops) and the 10 demo digits. On the other half it is right 99% of the time with a median
top-1 margin of about 7 logits, so a precision that changed its answers would show. bfloat16 flips
0.1-0.5% of the answers here (as it does for trained ImageNet models), so agreement is counted over
1,000 images: a few more borderline images flipping on another CPU's bf16 kernels stay clear of the
1% the acceptance allows.
"""
import glob
import json
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from bl_net_tf import create_model
from bl_net_tf.data import demo, sample_photos
from bl_net_tf.export import main as export_main
from bl_net_tf.models.layers import IMAGENET_MEAN_RGB, IMAGENET_STD_RGB
from bl_net_tf.serving.signatures import serving_network

SIZE = 64
VIEWS_PER_PHOTO = 60
DIGITS_PER_CLASS = 52
CALIBRATION_IMAGES = 200
NUM_CLASSES = len(sample_photos.PHOTOS) + 10
MIN_AGREEMENT = 0.99
REQUEST_SIZE = 100  # images per predict_images request (the export's --max_batch)

FRESH_PROCESS = r"""
import json, sys
import numpy as np
import tensorflow as tf

export_dir, folder, request_size = sys.argv[1], sys.argv[2], int(sys.argv[3])
model = tf.saved_model.load(export_dir)
images = np.load(f"{folder}/images.npy")
outputs = [model.signatures["predict_images"](images=tf.constant(images[i:i + request_size]))["probabilities"]
           for i in range(0, len(images), request_size)]
np.save(f"{folder}/probabilities.npy", np.concatenate([o.numpy() for o in outputs]))
json.dump({"probabilities": outputs[0].dtype.name,
           "variables": sorted({v.dtype.name for v in model.network_variables})}, open(f"{folder}/dtypes.json", "w"))
"""


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """(uint8 images, labels, held-out mask): 480 photo crops and 520 digit JPEGs, shuffled."""
    rng = np.random.default_rng(0)
    images, labels = [], []
    for label, name in enumerate(sample_photos.PHOTOS):
        source = sample_photos.photo(name)
        images += [sample_photos.random_view(source, (SIZE, SIZE), rng) for _ in range(VIEWS_PER_PHOTO)]
        labels += [label] * VIEWS_PER_PHOTO
    root = demo.prepare(str(tmp_path_factory.mktemp("demo") / "digits"))
    for digit in range(10):
        for path in sorted(glob.glob(f"{root}/*/{demo.class_folder(digit)}/*.JPEG"))[:DIGITS_PER_CLASS]:
            images.append(tf.io.decode_jpeg(tf.io.read_file(path), channels=3).numpy())
            labels.append(len(sample_photos.PHOTOS) + digit)
    order = rng.permutation(len(images))
    held_out = np.arange(len(images)) % 2 == 1
    return np.stack(images)[order], np.asarray(labels)[order], held_out


def normalise(images: np.ndarray) -> np.ndarray:
    return (images.astype(np.float32) - np.float32(IMAGENET_MEAN_RGB)) / np.float32(IMAGENET_STD_RGB)


@pytest.fixture(scope="module")
def model(photos):
    images, labels, held_out = photos
    keras.utils.set_random_seed(0)  # the same convolution weights in every run
    model = create_model("bl-resnet50", input_shape=(SIZE, SIZE, 3), num_classes=NUM_CLASSES,
                         data_format="channels_last")
    rng = np.random.RandomState(0)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            last_of_branch = not np.asarray(layer.gamma).any()  # create_model zero-inits exactly these
            low, high = (0.0, 0.3) if last_of_branch else (0.5, 1.0)
            layer.gamma.assign(rng.uniform(low, high, layer.gamma.shape))
            layer.beta.assign(rng.normal(0, 0.1, layer.beta.shape))
            layer.momentum = 0.0  # the next training-mode pass sets the moving statistics to its own
    train = normalise(images[~held_out])
    model(train[:CALIBRATION_IMAGES], training=True)
    pooled = keras.Model(model.input, model.get_layer("head_pool").output)
    features = pooled.predict(train, batch_size=100, verbose=0).astype(np.float64)
    mean = features.mean(axis=0)
    centred = features - mean
    targets = np.eye(NUM_CLASSES)[labels[~held_out]] * 10
    ridge = 0.1 * np.trace(centred.T @ centred) / centred.shape[1]
    kernel = np.linalg.solve(centred.T @ centred + ridge * np.eye(centred.shape[1]),
                             centred.T @ (targets - targets.mean(axis=0)))
    model.get_layer("head_fc").set_weights([kernel, targets.mean(axis=0) - mean @ kernel])
    return model


@pytest.fixture(scope="module")
def logits(model, photos):
    """Each precision's logits for every image."""
    batch = photos[0].astype(np.float32)
    return {precision: serving_network(model, SIZE, precision).predict(batch, batch_size=100, verbose=0)
            for precision in ("float32", "bfloat16", "float16")}


def test_float32_export_is_the_model_and_classifies(model, photos, logits):
    images, labels, held_out = photos
    got = np.float32(logits["float32"][held_out])
    expected = model.predict(normalise(images[held_out]), batch_size=100, verbose=0)
    np.testing.assert_allclose(got, expected, atol=1e-3 * np.abs(expected).max())
    top2 = np.sort(got, axis=1)[:, -2:]
    accuracy = (got.argmax(axis=1) == labels[held_out]).mean()
    print(f"float32: accuracy {accuracy:.3f}, median margin {np.median(top2[:, 1] - top2[:, 0]):.2f} "
          f"on {held_out.sum()} held-out images")
    assert accuracy > 0.9 and np.median(top2[:, 1] - top2[:, 0]) > 3


@pytest.mark.parametrize("precision", ["bfloat16", "float16"])
def test_reduced_precision_keeps_the_top1_class(logits, precision):
    agreement = (logits[precision].argmax(axis=1) == logits["float32"].argmax(axis=1)).mean()
    print(f"{precision}: top-1 agrees with float32 on {agreement:.2%} of {len(logits[precision])} images")
    assert agreement >= MIN_AGREEMENT


def test_bfloat16_export_serves_float32_from_bfloat16_weights(model, photos, logits, tmp_path):
    """Through the command line and a fresh process, as TF Serving would load it."""
    images, _, held_out = photos
    weights = str(tmp_path / "model.weights.h5")
    model.save_weights(weights)
    export_dir = str(tmp_path / "bl_resnet50" / "1")
    assert export_main(["--arch", "bl-resnet50", "--weights", weights, "--num_classes", str(NUM_CLASSES),
                        "--image_size", str(SIZE), "--export_dir", export_dir, "--precision", "bfloat16",
                        "--max_batch", str(REQUEST_SIZE)]) == 0
    np.save(tmp_path / "images.npy", images[held_out])
    subprocess.run([sys.executable, "-c", FRESH_PROCESS, export_dir, str(tmp_path), str(REQUEST_SIZE)], check=True)
    dtypes = json.loads((tmp_path / "dtypes.json").read_text())
    assert dtypes == {"probabilities": "float32", "variables": ["bfloat16"]}
    probabilities = np.load(tmp_path / "probabilities.npy")
    agreement = (probabilities.argmax(axis=1) == logits["float32"][held_out].argmax(axis=1)).mean()
    assert agreement >= MIN_AGREEMENT
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
