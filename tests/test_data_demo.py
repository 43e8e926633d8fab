"""The demo data set: scikit-learn's handwritten digits in the ImageNet folder layout."""
import os

import numpy as np
import pytest
import tensorflow as tf
from sklearn.datasets import load_digits

from bl_net_tf.data import demo, folder, imagenet_dataset


@pytest.fixture(scope="module")
def digits_root(tmp_path_factory):
    return demo.prepare(str(tmp_path_factory.mktemp("cache") / "demo_digits"))


def test_every_digit_is_written_once_with_a_stratified_split(digits_root):
    train = folder.list_images(digits_root, "train")
    val = folder.list_images(digits_root, "val")
    assert train.class_names == [f"digit_{d}" for d in range(10)]
    assert len(train.paths) + len(val.paths) == 1797
    names = {os.path.basename(p) for p in train.paths + val.paths}
    assert len(names) == 1797
    per_class = np.bincount(load_digits().target)
    np.testing.assert_array_equal(np.bincount(val.labels), per_class // demo.VAL_EVERY)
    np.testing.assert_array_equal(np.bincount(train.labels), per_class - per_class // 5)


def test_images_are_rgb_jpegs_of_the_digits(digits_root):
    val = folder.list_images(digits_root, "val")
    image = tf.io.decode_jpeg(tf.io.read_file(val.paths[0]), channels=0).numpy()
    assert image.shape == (demo.IMAGE_SIZE, demo.IMAGE_SIZE, 3)
    # Dark ink on white paper: both are present.
    assert image.min() < 64 and image.max() > 200
    index = int(os.path.basename(val.paths[0])[len("digit_"):-len(".JPEG")])
    assert load_digits().target[index] == val.labels[0]


def test_prepare_is_idempotent(digits_root):
    marker = os.path.join(digits_root, "train", "digit_0")
    before = os.stat(marker).st_mtime_ns
    assert demo.prepare(digits_root) == digits_root
    assert os.stat(marker).st_mtime_ns == before


def test_a_concurrent_writer_that_finishes_first_wins(tmp_path, monkeypatch):
    root = str(tmp_path / "demo_digits")

    def other_process_finishes_first(target):
        os.makedirs(os.path.join(root, "train"))
        os.makedirs(os.path.join(target, "train"))

    monkeypatch.setattr(demo, "_write", other_process_finishes_first)
    assert demo.prepare(root) == root
    assert os.listdir(tmp_path) == ["demo_digits"]  # the loser's copy is gone


def test_cache_location_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv(demo.CACHE_ENV, str(tmp_path))
    assert demo.default_root() == os.path.join(str(tmp_path), "demo_digits")
    monkeypatch.delenv(demo.CACHE_ENV)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    assert demo.default_root() == os.path.join(str(tmp_path), ".cache", "bl_net_tf",
                                               "demo_digits")


def test_the_loader_reads_the_demo_set(digits_root):
    images, labels = next(iter(imagenet_dataset(digits_root, "train", 8, image_size=32)))
    assert images.shape == (8, 32, 32, 3) and images.dtype == tf.uint8
    assert labels.dtype == tf.int32 and 0 <= labels.numpy().min() and labels.numpy().max() <= 9
