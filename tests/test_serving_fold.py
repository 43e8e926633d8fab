"""serving/fold.py: BatchNorm folded into the convolutions computes what the unfolded model computes,
for every family. The BatchNorm statistics and affine parameters are random, so a fold that drops
or misplaces any of them (wrong axis, depthwise layout, existing bias) changes the outputs."""
import keras
import numpy as np
import pytest
import tensorflow as tf

from bl_net_tf import create_model
from bl_net_tf.models.layers import ResizeLike
from bl_net_tf.serving.fold import batch_norm_pairs, fold_batch_norm

# One model per kind of conv + BN pair the families build.
FAMILIES = {
    # Bottlenecks, the stem module, bL modules and their merges, grouped 3x3 convs (32 and 16 groups),
    # SE's biased convs. bL-ResNet-50 itself is folded in test_convert_pytorch.py and test_serving_precision.py.
    "bl-seresnext50": ("bl-seresnext50-32x4d", {}),
    "bl-resnet50-k3": ("bl-resnet50", {"branches": 3}),  # three-branch modules (Table 7)
    "bl-shufflenetv2": ("bl-shufflenetv2-1.0x", {}),  # depthwise convs, strided and not
    "bl-pyr-resnet22-speech": ("bl-pyr-resnet22-speech", {}),  # frequency-strided convs, pyramid merges
}
REL_TOLERANCE = 1e-4


def randomize_batch_norm(model: keras.Model, seed: int = 0) -> keras.Model:
    rng = np.random.RandomState(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            shape = layer.moving_mean.shape
            weights = {"gamma": rng.uniform(0.5, 1.5, shape), "beta": rng.normal(0, 0.2, shape),
                       "moving_mean": rng.normal(0, 0.2, shape), "moving_variance": rng.uniform(0.5, 1.5, shape)}
            layer.set_weights([weights[v.path.rsplit("/", 1)[-1]] for v in layer.weights])
    return model


def relative_error(got, expected) -> float:
    return float(np.abs(np.asarray(got) - np.asarray(expected)).max() / np.abs(expected).max())


@pytest.fixture(scope="module", params=list(FAMILIES))
def family(request):
    arch, kwargs = FAMILIES[request.param]
    shape = None if "speech" in arch else (32, 32, 3)
    model = randomize_batch_norm(create_model(arch, input_shape=shape, num_classes=10,
                                              data_format="channels_last", **kwargs))
    return request.param, model, fold_batch_norm(model)


def test_folded_model_computes_the_same(family):
    name, model, folded = family
    batch = np.random.RandomState(1).standard_normal((2,) + tuple(model.input.shape[1:])).astype(np.float32)
    expected = np.asarray(model(batch, training=False))
    error = relative_error(folded(batch, training=False), expected)
    print(f"{name}: max relative error {error:.1e}")
    assert error < REL_TOLERANCE


def test_every_batch_norm_is_folded_and_names_are_kept(family):
    _, model, folded = family
    batch_norms = {layer.name for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)}
    assert set(batch_norm_pairs(model)) == batch_norms
    assert [layer.name for layer in folded.layers] == [layer.name for layer in model.layers]
    assert not any(isinstance(layer, keras.layers.BatchNormalization) for layer in folded.layers)
    for name, conv in batch_norm_pairs(model).items():
        assert type(folded.get_layer(name)) is keras.layers.Identity
        assert folded.get_layer(conv).use_bias


def test_only_a_linear_conv_read_by_its_batch_norm_alone_is_folded():
    images = keras.Input((8, 8, 3))
    shared = keras.layers.Conv2D(4, 3, padding="same", name="shared")(images)
    a = keras.layers.BatchNormalization(name="bn_shared")(shared)  # its conv also feeds `side`
    side = keras.layers.ReLU(name="side")(shared)
    b = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="activated")(images)
    b = keras.layers.BatchNormalization(name="bn_activated")(b)  # BN after the activation
    c = keras.layers.Conv2D(4, 3, padding="same", use_bias=True, name="biased")(images)
    c = keras.layers.BatchNormalization(name="bn_biased")(c)  # folded into the existing bias
    d = keras.layers.DepthwiseConv2D(3, depth_multiplier=2, padding="same", name="depthwise")(images)
    d = keras.layers.BatchNormalization(name="bn_depthwise")(d)  # 6 channels: input c, multiplier m -> 2c + m
    e = keras.layers.Conv2D(8, 1, name="rows")(images)
    e = keras.layers.BatchNormalization(axis=1, name="bn_rows")(e)  # normalises rows, not channels
    added = keras.layers.Add(name="add")([a, b])
    added = keras.layers.BatchNormalization(name="bn_add")(added)  # no conv before it
    x = keras.layers.Concatenate(name="concat")([added, side, c, d, e])
    model = randomize_batch_norm(keras.Model(images, keras.layers.GlobalAveragePooling2D(name="pool")(x)))
    model.get_layer("biased").bias.assign(np.random.RandomState(2).normal(0, 1, 4))

    assert batch_norm_pairs(model) == {"bn_biased": "biased", "bn_depthwise": "depthwise"}
    folded = fold_batch_norm(model)
    batch = np.random.RandomState(3).standard_normal((2, 8, 8, 3)).astype(np.float32)
    assert relative_error(folded(batch, training=False), model(batch, training=False)) < REL_TOLERANCE


@pytest.mark.parametrize("method, op", [("bilinear", "ResizeBilinear"), ("nearest", "ResizeNearestNeighbor")])
def test_upsampling_to_a_static_size_lets_the_merge_fuse(method, op):
    """Grappler fuses a merge's addition into the little branch's expand conv (after folding) only
    if the upsampled big branch's shape provably equals the conv's; a size computed from
    tf.shape at run time hides it (the three merges of bL-ResNet-50 then stay separate ops)."""
    resize = tf.function(lambda big, like: ResizeLike(method)([big, like]))
    graph = resize.get_concrete_function(tf.TensorSpec([None, 3, 3, 8]), tf.TensorSpec([None, 5, 5, 8])).graph
    (node,) = [node for node in graph.get_operations() if node.type == op]
    assert node.inputs[1].op.type == "Const"


def test_contract_errors():
    channels_first = create_model("resnet50", input_shape=(32, 32, 3), data_format="channels_first")
    with pytest.raises(ValueError, match="needs a channels_last model"):
        fold_batch_norm(channels_first)
    with pytest.raises(ValueError, match="allowed: float32, bfloat16, float16"):
        fold_batch_norm(keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)]), precision="int8")
    with pytest.raises(ValueError, match="needs a functional Keras model"):
        fold_batch_norm(keras.layers.Dense(2))
    with pytest.raises(ValueError, match="needs a functional Keras model"):
        fold_batch_norm(keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)]))
