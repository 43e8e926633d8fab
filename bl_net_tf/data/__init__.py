"""ImageNet input pipelines (tf.data and Tensorpack) with the fbresnet augmentation.

See docs/data.md for the supported layouts, the loaders and the demo data set.
"""
from bl_net_tf.data.imagenet import SPLITS, imagenet_dataset
from bl_net_tf.data.skipped import SkippedFiles

__all__ = ["SPLITS", "SkippedFiles", "imagenet_dataset"]
