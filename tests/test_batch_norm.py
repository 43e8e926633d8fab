"""The fused BatchNormalization is keras.layers.BatchNormalization on one FusedBatchNormV3 op: same
outputs, gradients, variables and checkpoints; moving variance updated with the unbiased batch
variance (as Tensorpack and PyTorch)."""
import numpy as np
import pytest
import tensorflow as tf
import keras

import bl_net_tf
from bl_net_tf.models.batch_norm import BatchNormalization as FusedBatchNormalization

MOMENTUM = 0.9
EPSILON = 1e-5


def _pair(data_format):
    """A Keras BatchNormalization and a fused one with the same random variables, and an input."""
    axis = 1 if data_format == "channels_first" else -1
    shape = (2, 6, 5, 7) if data_format == "channels_first" else (2, 5, 7, 6)
    reference = keras.layers.BatchNormalization(axis=axis, momentum=MOMENTUM, epsilon=EPSILON)
    fused = FusedBatchNormalization(axis=axis, momentum=MOMENTUM, epsilon=EPSILON)
    reference.build(shape)
    fused.build(shape)
    rng = np.random.default_rng(0)
    gamma, beta, mean = (rng.standard_normal(6).astype("float32") for _ in range(3))
    variance = rng.uniform(0.5, 2.0, 6).astype("float32")
    for layer in (reference, fused):
        layer.set_weights([gamma, beta, mean, variance])
    x = tf.constant(rng.normal(1.5, 3.0, shape).astype("float32"))
    return reference, fused, x


def _forward_and_grads(layer, x, training):
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = layer(x, training=training)
        loss = tf.reduce_sum(y * tf.sin(y))  # non-linear, so every gradient path matters
    return [y] + tape.gradient(loss, [x, layer.gamma, layer.beta])


@pytest.mark.parametrize("training", [False, True], ids=["inference", "training"])
@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
def test_matches_keras_batch_norm(data_format, training):
    reference, fused, x = _pair(data_format)
    expected = _forward_and_grads(reference, x, training)
    got = _forward_and_grads(fused, x, training)
    assert np.abs(expected[0].numpy()).max() > 0.1
    for label, e, g in zip(("output", "d/dx", "d/dgamma", "d/dbeta"), expected, got):
        np.testing.assert_allclose(g.numpy(), e.numpy(), rtol=1e-4, atol=1e-4, err_msg=label)


@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
def test_training_updates_moving_statistics_with_the_unbiased_variance(data_format):
    _, fused, x = _pair(data_format)
    old_mean, old_variance = fused.moving_mean.numpy(), fused.moving_variance.numpy()
    fused(x, training=True)
    axes = (0, 2, 3) if data_format == "channels_first" else (0, 1, 2)
    values = np.asarray(x, dtype="float64")
    np.testing.assert_allclose(fused.moving_mean.numpy(), MOMENTUM * old_mean + (1 - MOMENTUM) * values.mean(axes),
                               rtol=1e-5, atol=1e-5)
    unbiased = values.var(axes, ddof=1)  # what torch.var and Tensorpack's fused BatchNorm use
    np.testing.assert_allclose(fused.moving_variance.numpy(), MOMENTUM * old_variance + (1 - MOMENTUM) * unbiased,
                               rtol=1e-5, atol=1e-5)


def test_frozen_layer_normalises_with_moving_statistics_when_training():
    reference, fused, x = _pair("channels_last")
    reference.trainable = fused.trainable = False
    np.testing.assert_allclose(fused(x, training=True).numpy(), reference(x, training=True).numpy(),
                               rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(fused.moving_mean.numpy(), reference.moving_mean.numpy())


def test_mixed_bfloat16_keeps_float32_statistics():
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        layer = FusedBatchNormalization(momentum=MOMENTUM, epsilon=EPSILON)
        y = layer(tf.random.normal((4, 3, 3, 8), 2.0, 1.0), training=True)
    finally:
        keras.config.set_dtype_policy(previous)
    assert y.dtype == tf.bfloat16
    assert layer.moving_mean.dtype == "float32" and layer.gamma.dtype == "float32"
    assert np.all(layer.moving_mean.numpy() > 0.1)  # 0.1 x a batch mean of about 2


def test_other_inputs_fall_back_to_keras():
    layer = FusedBatchNormalization(momentum=MOMENTUM, epsilon=EPSILON)
    x = tf.random.normal((8, 5))
    reference = keras.layers.BatchNormalization(momentum=MOMENTUM, epsilon=EPSILON)
    np.testing.assert_allclose(layer(x, training=True).numpy(), reference(x, training=True).numpy(),
                               rtol=1e-4, atol=1e-4)


def test_graph_runs_one_fused_op_per_layer_and_checkpoints_load_both_ways(tmp_path):
    def tiny(bn_class):
        inputs = keras.Input((8, 8, 3))
        x = keras.layers.Conv2D(4, 3, name="conv")(inputs)
        x = bn_class(momentum=MOMENTUM, epsilon=EPSILON, name="bn")(x)
        return keras.Model(inputs, keras.layers.ReLU()(x))

    fused, plain = tiny(FusedBatchNormalization), tiny(keras.layers.BatchNormalization)
    rng = np.random.default_rng(1)
    fused.set_weights([rng.uniform(0.5, 1.5, w.shape).astype("float32") for w in fused.get_weights()])
    fused.save_weights(tmp_path / "fused.weights.h5")
    plain.load_weights(tmp_path / "fused.weights.h5")
    x = rng.standard_normal((2, 8, 8, 3)).astype("float32")
    np.testing.assert_allclose(plain(x, training=False).numpy(), fused(x, training=False).numpy(), rtol=1e-5,
                               atol=1e-5)
    graph = tf.function(lambda images: fused(images, training=False)).get_concrete_function(
        tf.TensorSpec((2, 8, 8, 3))).graph
    op_types = [op.type for op in graph.get_operations()]
    assert op_types.count("FusedBatchNormV3") == 1 and "Rsqrt" not in op_types
    restored = keras.Model.from_config(fused.get_config())
    assert type(restored.get_layer("bn")) is FusedBatchNormalization


def test_model_zoo_uses_the_fused_layer():
    model = bl_net_tf.create_model("bl-resnet50", num_classes=4, input_shape=(64, 64, 3), data_format="channels_last")
    norms = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert norms and all(type(layer) is FusedBatchNormalization for layer in norms)
    keras.backend.clear_session()
