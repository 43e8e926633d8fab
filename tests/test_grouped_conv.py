"""GroupedConv2D is Conv2D(groups=...) with a faster kernel: same results, same weights, same counts."""
import numpy as np
import pytest
import tensorflow as tf
import keras

from bl_net_tf import profile
from bl_net_tf.models.grouped_conv import resolve_implementation
from bl_net_tf.models.layers import LayerContext, conv
from bl_net_tf.models.grouped_conv import Conv2D as GroupedConv2D

GROUPS = 4
IN_CHANNELS = 8
FILTERS = 12


def _pair(data_format, strides, implementation):
    """A Keras grouped Conv2D and a GroupedConv2D built on the same input, sharing one kernel."""
    shape = (IN_CHANNELS, 9, 9) if data_format == "channels_first" else (9, 9, IN_CHANNELS)
    kwargs = dict(filters=FILTERS, kernel_size=3, strides=strides, padding="same" if strides == 1 else "valid",
                  groups=GROUPS, use_bias=True, data_format=data_format)
    reference = keras.layers.Conv2D(name="ref", **kwargs)
    fast = GroupedConv2D(name="fast", implementation=implementation, **kwargs)
    reference.build((None,) + shape)
    fast.build((None,) + shape)
    rng = np.random.default_rng(0)
    fast.set_weights([rng.standard_normal(w.shape).astype("float32") for w in reference.get_weights()])
    reference.set_weights(fast.get_weights())
    x = tf.constant(rng.standard_normal((2,) + shape).astype("float32"))
    return reference, fast, x


def _forward_and_grads(layer, x):
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = layer(x)
        loss = tf.reduce_sum(y * tf.sin(y))  # a non-linear loss so every gradient path matters
    grads = tape.gradient(loss, [x, layer.kernel, layer.bias])
    return [y] + grads


@pytest.mark.parametrize("implementation", ["fused", "split"])
@pytest.mark.parametrize("strides", [1, 2])
@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
def test_matches_keras_grouped_conv(data_format, strides, implementation):
    reference, fast, x = _pair(data_format, strides, implementation)
    expected = _forward_and_grads(reference, x)
    got = _forward_and_grads(fast, x)
    for label, e, g in zip(("output", "d/dx", "d/dkernel", "d/dbias"), expected, got):
        assert g.shape == e.shape, label
        np.testing.assert_allclose(g.numpy(), e.numpy(), rtol=1e-4, atol=1e-4, err_msg=label)


@pytest.mark.parametrize("implementation", ["fused", "split"])
def test_matches_inside_tf_function(implementation):
    reference, fast, x = _pair("channels_last", 1, implementation)
    np.testing.assert_allclose(tf.function(fast)(x).numpy(), reference(x).numpy(), rtol=1e-4, atol=1e-4)


def _three_convs(grouped_layer):
    """dense, grouped, dense: the order a checkpoint's class-name-based paths depend on."""
    return keras.Sequential([keras.Input((9, 9, IN_CHANNELS)), keras.layers.Conv2D(IN_CHANNELS, 1, name="a"),
                             grouped_layer(FILTERS, 3, groups=GROUPS, name="b"), keras.layers.Conv2D(4, 1, name="c")])


def test_same_weights_as_conv2d_and_checkpoints_load_both_ways(tmp_path):
    reference, fast, _ = _pair("channels_last", 1, "auto")
    assert [(w.name, tuple(w.shape)) for w in fast.weights] == [(w.name, tuple(w.shape)) for w in reference.weights]
    assert fast.kernel.shape == (3, 3, IN_CHANNELS // GROUPS, FILTERS)
    keras_model, fast_model = _three_convs(keras.layers.Conv2D), _three_convs(GroupedConv2D)
    for source, target in ((keras_model, fast_model), (fast_model, keras_model)):
        for w in source.weights:
            w.assign(np.random.default_rng(1).standard_normal(w.shape).astype("float32"))
        path = str(tmp_path / "convs.weights.h5")
        source.save_weights(path)
        target.load_weights(path)
        for s, t in zip(source.get_weights(), target.get_weights()):
            np.testing.assert_array_equal(t, s)


def test_serialises_with_its_implementation(tmp_path):
    model = keras.Sequential([keras.Input((9, 9, IN_CHANNELS)),
                              GroupedConv2D(FILTERS, 3, groups=GROUPS, implementation="split", name="conv")])
    path = str(tmp_path / "model.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    assert isinstance(loaded.get_layer("conv"), GroupedConv2D)
    assert loaded.get_layer("conv").implementation == "split"
    x = np.ones((1, 9, 9, IN_CHANNELS), "float32")
    np.testing.assert_allclose(loaded(x).numpy(), model(x).numpy(), rtol=1e-6)


def test_unknown_implementation_fails_at_construction():
    with pytest.raises(ValueError, match="allowed: auto, fused, split, keras"):
        GroupedConv2D(8, 3, groups=2, implementation="winograd")


def test_auto_picks_a_grouped_kernel_on_this_machine():
    assert resolve_implementation("auto") in ("fused", "split")


def test_count_macs_counts_it_as_a_grouped_conv():
    model = keras.Sequential([keras.Input((9, 9, IN_CHANNELS)),
                              GroupedConv2D(FILTERS, 3, groups=GROUPS, padding="same")])
    assert profile.count_macs(model) == 9 * 9 * FILTERS * 3 * 3 * (IN_CHANNELS // GROUPS)
    assert profile.count_params(model) == 3 * 3 * (IN_CHANNELS // GROUPS) * FILTERS + FILTERS


def test_model_builder_uses_it_for_grouped_convs_only():
    ctx = LayerContext(data_format="channels_last")
    x = keras.Input((8, 8, 16))
    grouped = conv(ctx, x, 16, 3, groups=4, name="stage2_big_block1_conv2")
    dense = conv(ctx, x, 16, 3, name="stage2_big_block1_conv1")
    model = keras.Model(x, [grouped, dense])
    layer = model.get_layer("stage2_big_block1_conv2")
    assert isinstance(layer, GroupedConv2D) and layer.groups == 4 and layer.kernel.shape == (3, 3, 4, 16)
    assert type(model.get_layer("stage2_big_block1_conv1")) is keras.layers.Conv2D
