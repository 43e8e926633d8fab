"""The ``image_bytes`` signature's preprocessing: a request of encoded images, within limits, through
the evaluation transform of the data pipeline (``bl_net_tf.data.augment.eval_image``).

What one request may cost is bounded by :class:`ServingLimits`: at most ``max_batch`` images,
each refused on its header above ``max_pixels`` or ``max_aspect_ratio``, and
:data:`PARALLEL_DECODES` of them decoded at a time; each decodes only the window its crop reads.
"""
from __future__ import annotations

import dataclasses

import tensorflow as tf

from bl_net_tf.data import headers, recipe
from bl_net_tf.data.augment import eval_image

# Images per request (per batch, with TF Serving's batching). A bL-ResNet-50 at 224 takes 10-13 MB
# per image of a batch; 16 photos raised a fresh server's peak memory by 140-190 MB, 32 by 330-415 MB
# (docs/deployment.md).
DEFAULT_MAX_BATCH = 16
# tf.map_fn's parallel_iterations: how many images of a request are decoded at the same time, and
# so a factor of a request's peak memory (its default in a graph is 10).
PARALLEL_DECODES = 2


@dataclasses.dataclass(frozen=True)
class ServingLimits:
    """What one ``image_bytes`` request may hold; refused with an ``InvalidArgumentError`` naming
    the limit. Defaults: docs/deployment.md.

    Attributes:
      max_batch: images per request.
      max_pixels, max_aspect_ratio: per image, from its header (``bl_net_tf.data.headers``).
    """

    max_batch: int = DEFAULT_MAX_BATCH
    max_pixels: int = headers.DEFAULT_MAX_PIXELS
    max_aspect_ratio: float = headers.DEFAULT_MAX_ASPECT_RATIO

    def __post_init__(self):
        if isinstance(self.max_batch, bool) or not isinstance(self.max_batch, int) or self.max_batch < 1:
            raise ValueError(f"max_batch must be an integer >= 1, got {self.max_batch!r}")
        headers.ImageLimits(self.max_pixels, self.max_aspect_ratio)  # raises ValueError on a bad one

    @property
    def image_limits(self) -> headers.ImageLimits:
        return headers.ImageLimits(self.max_pixels, self.max_aspect_ratio)


def check_batch(count: tf.Tensor, limits: ServingLimits) -> tf.Operation:
    """The assertion that a request of ``count`` images is within ``limits.max_batch``."""
    return headers.refuse(count <= limits.max_batch, "request", f"{{}} images, more than max_batch={limits.max_batch}",
                          count)


def decode_batch(image_bytes: tf.Tensor, size: int, *, protocol: str = recipe.DEFAULT_EVAL_PROTOCOL,
                 limits: ServingLimits = ServingLimits()) -> tf.Tensor:
    """A ``[N]`` string tensor of encoded images -> float32 ``[N, size, size, 3]`` RGB in [0, 255].

    Raises (when the graph runs):
      InvalidArgumentError: more than ``limits.max_batch`` images, or an image that is refused or
        does not decode (the message names it by its position in the request).
    """
    count = tf.size(image_bytes)
    with tf.control_dependencies([check_batch(count, limits)]):
        positions = tf.range(count)

    def transform(args):
        position, encoded = args
        label = tf.strings.format("image {} of the request", position)
        return eval_image(encoded, size, protocol=protocol, limits=limits.image_limits, label=label)

    images = tf.map_fn(transform, (positions, image_bytes), parallel_iterations=PARALLEL_DECODES,
                       fn_output_signature=tf.TensorSpec([size, size, 3], tf.uint8))
    return tf.cast(images, tf.float32)
