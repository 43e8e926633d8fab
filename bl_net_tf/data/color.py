"""fbresnet's colour augmentation: brightness, contrast, saturation and PCA lighting.

Tensorpack applies the four ops in a random order (``RandomOrderAug``). Each maps a
pixel ``x`` to ``a x + g grey(x) + c``, with ``grey(x) = w . x`` put in every
channel and ``c`` a colour; such maps compose into another one because the grey
weights ``w`` sum to 1. So the sampled ops are composed on scalars first and
applied to the pixels in one pass. That is the float arithmetic of
fb.resnet.torch; Tensorpack's uint8 version differs only in clipping and
truncating after each op.
"""
from typing import NamedTuple

import tensorflow as tf

from bl_net_tf.data import recipe

# The ops, by the index that ``JitterParams.order`` uses.
OPS = ("brightness", "contrast", "saturation", "lighting")


class JitterParams(NamedTuple):
    """One draw of the colour augmentation."""
    brightness: tf.Tensor  # factor in BRIGHTNESS_RANGE
    contrast: tf.Tensor  # blend factor with the image's mean grey, in CONTRAST_RANGE
    saturation: tf.Tensor  # blend factor with each pixel's grey, 1 +- SATURATION_DELTA
    lighting: tf.Tensor  # RGB colour added to every pixel
    order: tf.Tensor  # int32 [4]: indices into OPS, in the order they apply


def sample_jitter(seed: tf.Tensor) -> JitterParams:
    """Draws the parameters of the colour augmentation from a stateless ``seed``."""
    seeds = tf.random.experimental.stateless_split(seed, 5)

    def uniform(i, low, high):
        return tf.random.stateless_uniform([], seeds[i], minval=low, maxval=high)

    # AlexNet lighting: eigenvectors scaled by N(0, std) times their eigenvalues.
    alpha = tf.random.stateless_normal([3], seeds[3], stddev=recipe.LIGHTING_STD)
    return JitterParams(
        brightness=uniform(0, *recipe.BRIGHTNESS_RANGE),
        contrast=uniform(1, *recipe.CONTRAST_RANGE),
        saturation=1.0 + uniform(2, -recipe.SATURATION_DELTA, recipe.SATURATION_DELTA),
        lighting=tf.linalg.matvec(recipe.PCA_EIGVEC_RGB, alpha * recipe.PCA_EIGVAL_RGB),
        order=tf.argsort(tf.random.stateless_uniform([len(OPS)], seeds[4])),
    )


def _grey(colour: tf.Tensor) -> tf.Tensor:
    return tf.tensordot(recipe.GREY_WEIGHTS_RGB, colour, 1)


def apply_jitter(image: tf.Tensor, params: JitterParams) -> tf.Tensor:
    """Applies ``params`` to float32 RGB ``image`` in [0, 255]; the result is not clipped."""
    zero, no_shift, ones = tf.constant(0.0), tf.zeros([3]), tf.ones([3])
    ops = [  # in OPS order; each maps the current mean colour to the op's (a, g, c)
        lambda mean: (params.brightness, zero, no_shift),
        # contrast blends with the mean grey level of the image as it is at that point
        lambda mean: (params.contrast, zero, (1.0 - params.contrast) * _grey(mean) * ones),
        lambda mean: (params.saturation, 1.0 - params.saturation, no_shift),
        lambda mean: (tf.constant(1.0), zero, params.lighting),
    ]
    a, g, c = tf.constant(1.0), zero, no_shift
    mean = tf.reduce_mean(tf.reshape(image, [-1, 3]), axis=0)
    for position in range(len(ops)):
        a_k, g_k, c_k = (tf.gather(tf.stack(values), params.order[position])
                         for values in zip(*(op(mean) for op in ops)))
        # (a_k, g_k, c_k) after (a, g, c); grey(a x + g grey(x) + c) = (a + g) grey(x) + grey(c)
        a, g, c = a_k * a, a_k * g + g_k * (a + g), a_k * c + g_k * _grey(c) + c_k
        mean = a_k * mean + g_k * _grey(mean) + c_k
    # x -> a x + g grey(x) + c as one [3, 3] matrix: TF's CPU kernels are much faster
    # at a matmul over [pixels, 3] than at broadcasting along the channel axis.
    matrix = a * tf.eye(3) + g * tf.tensordot(ones, recipe.GREY_WEIGHTS_RGB, axes=0)
    pixels = tf.linalg.matmul(tf.reshape(image, [-1, 3]), matrix, transpose_b=True)
    return tf.reshape(tf.nn.bias_add(pixels, c), tf.shape(image))


def color_jitter(image: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """The colour augmentation of float32 RGB ``image`` in [0, 255]; not clipped."""
    return apply_jitter(image, sample_jitter(seed))
