"""A folder of real photographs in the ImageNet layout, for tests and benchmarks.

The photographs are the colour ones that scikit-image ships (no download); each
class is one photograph, and its images are random crops of it resized to the
size of a typical ImageNet JPEG (500x375, landscape or portrait). Needs
scikit-image (the ``test`` extra).

    python -m bl_net_tf.data.sample_photos --data_dir=DIR [--per_class=50] [--val_per_class=10]
"""
import os
import sys

import numpy as np

# Colour photographs bundled with scikit-image; one class each.
PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field",
          "immunohistochemistry", "retina", "motorcycle_left")
LANDSCAPE = (375, 500)  # height, width of a typical ImageNet JPEG


def photo(name: str) -> np.ndarray:
    """The scikit-image photograph ``name`` as uint8 RGB."""
    import skimage.data

    if name == "motorcycle_left":
        return skimage.data.stereo_motorcycle()[0]
    return getattr(skimage.data, name)()[..., :3]


def class_folder(index: int) -> str:
    """An ImageNet-like wnid for class ``index``."""
    return f"n{index:08d}"


def random_view(image: np.ndarray, size, rng: np.random.Generator) -> np.ndarray:
    """A random crop of 50-100% of each side of ``image``, resized to ``size`` (h, w)."""
    import tensorflow as tf

    height, width = image.shape[:2]
    aspect = size[1] / size[0]
    crop_h = int(min(height, width / aspect) * rng.uniform(0.5, 1.0))
    crop_w = int(crop_h * aspect)
    y = rng.integers(0, height - crop_h + 1)
    x = rng.integers(0, width - crop_w + 1)
    resized = tf.image.resize(image[y:y + crop_h, x:x + crop_w], size, antialias=True)
    return tf.saturate_cast(tf.round(resized), tf.uint8).numpy()


def write(root: str, *, classes: int = len(PHOTOS), per_class: int = 50, val_per_class: int = 10,
          size=LANDSCAPE, quality: int = 90, seed: int = 0) -> str:
    """Writes ``train/<wnid>/*.JPEG`` and ``val/<wnid>/*.JPEG`` under ``root``; returns it.

    A quarter of the images are portrait (``size`` transposed), as in ImageNet.
    """
    import tensorflow as tf

    if not 1 <= classes <= len(PHOTOS):
        raise ValueError(f"classes must be in [1, {len(PHOTOS)}], got {classes}.")
    rng = np.random.default_rng(seed)
    for index, name in enumerate(PHOTOS[:classes]):
        source = photo(name)
        for split, count in (("train", per_class), ("val", val_per_class)):
            folder = os.path.join(root, split, class_folder(index))
            os.makedirs(folder, exist_ok=True)
            for number in range(count):
                shape = size if rng.uniform() < 0.75 else size[::-1]
                view = random_view(source, shape, rng)
                tf.io.write_file(os.path.join(folder, f"{class_folder(index)}_{number}.JPEG"),
                                 tf.io.encode_jpeg(view, quality=quality))
    return root


def main(argv=None) -> int:
    """Runs the command on ``argv`` (default ``sys.argv[1:]``); returns the exit status."""
    from absl import flags

    from bl_net_tf import cli

    def define(flag_values):
        cli.define_shared(flag_values, {"data_dir": None}, {"data_dir": "Written here: train/ and val/."})
        cli.define(flag_values, {"classes": (int, f"Classes, one photograph each (at most {len(PHOTOS)})."),
                                 "per_class": (int, "Training images per class."),
                                 "val_per_class": (int, "Validation images per class.")},
                   cli.defaults_of(write, ("classes", "per_class", "val_per_class")))
        flags.mark_flag_as_required("data_dir", flag_values=flag_values)

    def run(args):
        print(write(args.data_dir, classes=args.classes, per_class=args.per_class, val_per_class=args.val_per_class))

    return cli.main("bl_net_tf.data.sample_photos", __doc__, define, run, argv)


if __name__ == "__main__":
    sys.exit(main())
