"""A small real data set in the ImageNet folder layout, made on first use, offline.

scikit-learn ships the UCI handwritten digits (1,797 scanned 8x8 images of the
digits 0-9, ``sklearn.datasets.load_digits``). ``prepare`` upscales them to 64x64
RGB JPEGs in ``train/digit_<d>/`` and ``val/digit_<d>/``: in each class every fifth
image (by its order in the data set) goes to val, a deterministic, stratified 80/20
split (1,442 train and 355 val images).
"""
import os
import shutil
import tempfile

import numpy as np

CACHE_ENV = "BL_NET_TF_CACHE"
FOLDER = "demo_digits"
IMAGE_SIZE = 64
VAL_EVERY = 5  # every 5th image of a class goes to val
_QUALITY = 95


def cache_root() -> str:
    """Where the demo data sets live: ``$BL_NET_TF_CACHE``, else ``~/.cache/bl_net_tf``."""
    return os.environ.get(CACHE_ENV) or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"),
        "bl_net_tf")


def default_root() -> str:
    """``$BL_NET_TF_CACHE/demo_digits``, else ``~/.cache/bl_net_tf/demo_digits``."""
    return os.path.join(cache_root(), FOLDER)


def class_folder(digit: int) -> str:
    return f"digit_{digit}"


def _write(target: str) -> None:
    import tensorflow as tf
    from sklearn.datasets import load_digits

    digits = load_digits()
    # 0..16 ink levels -> dark ink on white paper, as a scanned page looks.
    paper = 255.0 - digits.images[..., None] * (255.0 / 16.0)
    large = tf.image.resize(paper.astype(np.float32), [IMAGE_SIZE, IMAGE_SIZE],
                            method="bicubic")
    rgb = tf.image.grayscale_to_rgb(tf.saturate_cast(tf.round(large), tf.uint8))
    seen = {}
    for index, (image, digit) in enumerate(zip(rgb, digits.target)):
        rank = seen.get(digit, 0)
        seen[digit] = rank + 1
        split = "val" if rank % VAL_EVERY == VAL_EVERY - 1 else "train"
        folder = os.path.join(target, split, class_folder(int(digit)))
        os.makedirs(folder, exist_ok=True)
        tf.io.write_file(os.path.join(folder, f"digit_{index:04d}.JPEG"),
                         tf.io.encode_jpeg(image, quality=_QUALITY))


def prepare(root=None) -> str:
    """Writes the digits data set under ``root`` unless it is there; returns ``root``.

    ``root`` defaults to :func:`default_root`. The files are written to a temporary
    folder beside ``root`` and renamed into place, so a reader never sees a partial
    data set and two processes preparing at once both end up with the same one.
    """
    root = os.path.abspath(root or default_root())
    if os.path.isdir(root):
        return root
    parent = os.path.dirname(root)
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=f".{FOLDER}-", dir=parent)
    os.chmod(staging, 0o755)  # mkdtemp's 0700 would make the shared cache private
    try:
        _write(staging)
        os.rename(staging, root)
    except OSError:
        # Another process renamed its copy first: use that one.
        if not os.path.isdir(root):
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return root
