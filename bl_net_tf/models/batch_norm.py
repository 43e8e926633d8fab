"""BatchNorm on TensorFlow's fused kernel: ``keras.layers.BatchNormalization`` with the same
variables, run as one ``FusedBatchNormV3`` op.

Keras 3 dropped tf.keras 2's ``fused=True``: on the TensorFlow backend its BatchNorm is a chain of
elementwise ops (``tf.nn.moments`` in training; a multiply and an add per element in inference).
The fused op is what Tensorpack's ``BatchNorm`` ran and what TF's graph optimiser recognises: at
inference on CPU, grappler's remapper folds Conv2D + FusedBatchNorm + ReLU into one oneDNN
convolution, and in training one op computes the statistics, the normalisation and (in the
backward pass) all three gradients. A Big-Little Net has more, thinner layers per FLOP than a
ResNet (the Little-Branch), so it loses more to unfused BatchNorm: with this layer bL-ResNet-50 runs
1.18x faster at inference and 1.3x per training step on a 2-core CPU (docs/benchmarks.md).

Same numbers, with one documented difference: the moving variance is updated with the *unbiased*
batch variance (the fused kernel's output, as in Tensorpack and PyTorch, whose weights we load)
where Keras uses the biased one; at ImageNet sizes the two differ by n/(n-1) with n >= 32*7*7.

Named ``BatchNormalization`` on purpose, as ``grouped_conv.Conv2D``: Keras addresses weights in
``.weights.h5`` files by the snake-cased class name, so checkpoints load with either class.
Inputs the fused kernel does not take (masks, renorm, synchronized statistics, ranks other than 4,
another backend) run Keras's own code.

:func:`freeze_statistics` (``--freeze_bn``, for fine-tuning) makes the layers normalise by their
moving statistics in training too and leave them as they are, while gamma and beta still train:
Tensorpack's ``FreezeBN`` (examples/FasterRCNN, ``BACKBONE.NORM``), unlike Keras's
``trainable = False``, which also freezes gamma and beta and changes the trainable variables (and so
what a checkpoint's optimizer state holds).
"""
from __future__ import annotations

import keras
from keras import layers

_FUSED_DTYPES = ("float16", "bfloat16", "float32")


@keras.saving.register_keras_serializable(package="bl_net_tf")
class BatchNormalization(layers.BatchNormalization):
    """``keras.layers.BatchNormalization`` on ``FusedBatchNormV3`` for 4-D NHWC/NCHW inputs."""

    # Set by freeze_statistics: normalise by the moving statistics and keep them, also in training.
    frozen_statistics = False

    def _data_format(self, inputs, mask):
        """"NHWC"/"NCHW" when the fused kernel applies, else None."""
        if (keras.backend.backend() != "tensorflow" or mask is not None or self.renorm or self.synchronized
                or not (self.scale and self.center) or len(inputs.shape) != 4
                or keras.backend.standardize_dtype(inputs.dtype) not in _FUSED_DTYPES):
            return None
        return {3: "NHWC", 1: "NCHW"}.get(self.axis % 4)

    def call(self, inputs, training=None, mask=None):
        import tensorflow as tf

        training = training and not self.frozen_statistics
        data_format = self._data_format(inputs, mask)
        if data_format is None:
            return super().call(inputs, training=training, mask=mask)
        # The kernel takes float16/bfloat16 activations with float32 statistics and computes in float32.
        common = dict(x=inputs, scale=tf.cast(self.gamma, "float32"), offset=tf.cast(self.beta, "float32"),
                      epsilon=self.epsilon, data_format=data_format)
        if training and self.trainable:
            empty = tf.constant([], "float32")
            y, batch_mean, batch_variance, *_ = tf.raw_ops.FusedBatchNormV3(
                mean=empty, variance=empty, is_training=True, **common)
            self.moving_mean.assign(self.moving_mean * self.momentum + batch_mean * (1.0 - self.momentum))
            self.moving_variance.assign(
                self.moving_variance * self.momentum + batch_variance * (1.0 - self.momentum))
        else:
            y, *_ = tf.raw_ops.FusedBatchNormV3(
                mean=tf.cast(self.moving_mean, "float32"), variance=tf.cast(self.moving_variance, "float32"),
                is_training=False, **common)
        return tf.cast(y, self.compute_dtype)


def freeze_statistics(model: keras.Model) -> int:
    """Freezes the statistics of every :class:`BatchNormalization` layer of ``model`` (see the module
    docstring); returns how many there are. Call it before the training step is traced."""
    frozen = [layer for layer in model.layers if isinstance(layer, BatchNormalization)]
    for layer in frozen:
        layer.frozen_statistics = True
    return len(frozen)
