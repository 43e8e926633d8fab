"""Layer helpers that replace Keras compositions with faster ops must compute what PyTorch does."""
import numpy as np
import pytest
import tensorflow as tf
import torch

from bl_net_tf.models.layers import AvgPool3x3S2


@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
@pytest.mark.parametrize("height,width", [(8, 6), (7, 9)], ids=["even", "odd"])
def test_avg_pool_3x3_s2_is_pytorch_avg_pool_with_padding_counted(data_format, height, width):
    rng = np.random.default_rng(0)
    nchw = rng.normal(size=(2, 5, height, width)).astype("float32")
    expected = torch.nn.AvgPool2d(3, stride=2, padding=1)(torch.from_numpy(nchw)).numpy()
    layer = AvgPool3x3S2(data_format)
    x = tf.constant(nchw if data_format == "channels_first" else nchw.transpose(0, 2, 3, 1))
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = layer(x)
        loss = tf.reduce_sum(y * y)
    got = y.numpy() if data_format == "channels_first" else y.numpy().transpose(0, 3, 1, 2)
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)
    assert tuple(layer.compute_output_shape((None,) + tuple(x.shape[1:]))) == (None,) + tuple(y.shape[1:])

    torch_x = torch.from_numpy(nchw).requires_grad_()
    (torch.nn.AvgPool2d(3, stride=2, padding=1)(torch_x) ** 2).sum().backward()
    grad = tape.gradient(loss, x).numpy()
    grad = grad if data_format == "channels_first" else grad.transpose(0, 3, 1, 2)
    np.testing.assert_allclose(grad, torch_x.grad.numpy(), rtol=1e-5, atol=1e-6)
