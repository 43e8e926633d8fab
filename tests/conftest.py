"""Helpers the model tests share: layer names and shapes, random weights, the channels_first/last
check and the comparison with a row of the paper's tables (bl_net_tf/paper_tables.py).

Test files import them (``from conftest import ...``): tests/ is on sys.path under pytest."""
import re

import numpy as np
import pytest

import bl_net_tf
from bl_net_tf import paper_tables
from bl_net_tf.profile import count_macs, count_params


@pytest.fixture(autouse=True, scope="session")
def _no_imagenet_from_the_environment(tmp_path_factory):
    """Without --data_dir the trainer reads $IMAGENET_DIR or a TFDS imagenet2012 in $TFDS_DATA_DIR
    (bl_net_tf/training/data_source.py): a test that leaves --data_dir out means the demo digits,
    whatever this machine holds, in this process and in the commands it starts."""
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("IMAGENET_DIR", raising=False)
        patch.setenv("TFDS_DATA_DIR", str(tmp_path_factory.mktemp("empty_tfds_data_dir")))
        yield


def _snake_case(class_name: str) -> str:
    """Keras's default layer name for a class: ``Conv2D`` -> ``conv2d``, ``ReLU`` -> ``re_lu``."""
    name = re.sub(r"(.)([A-Z][a-z]+)", r"\1_\2", class_name)
    return re.sub(r"([a-z])([A-Z])", r"\1_\2", name).lower()


def auto_named_layers(model) -> list:
    """Layers still called by Keras's counter name for their class (``conv2d_17``, ``re_lu``,
    ``resize_like_3``): every layer of our models must have a meaningful name instead."""
    return [layer.name for layer in model.layers
            if re.fullmatch(rf"{_snake_case(type(layer).__name__)}(_\d+)?", layer.name)]


def output_shape(model, name: str) -> tuple:
    """The output shape of layer ``name`` without the batch dimension."""
    return tuple(model.get_layer(name).output.shape[1:])


def random_weights(model, seed: int, scale: float = 0.05) -> list:
    """Random weights for ``model``: N(0, scale) everywhere (so every path, last BN gammas included,
    contributes), BN moving variances in [0.5, 1.5]."""
    rng = np.random.default_rng(seed)
    return [rng.uniform(0.5, 1.5, w.shape).astype("float32") if "moving_variance" in w.path
            else rng.normal(0, scale, w.shape).astype("float32") for w in model.weights]


def assert_channels_first_matches_last(last, first, inputs, *, seed: int = 1, scale: float = 0.05) -> None:
    """The channels_first build of a model gives the channels_last one's outputs with the same
    weights (same shapes in both formats) on the same NHWC ``inputs``."""
    assert [w.shape for w in last.weights] == [w.shape for w in first.weights]
    weights = random_weights(last, seed, scale)
    last.set_weights(weights)
    first.set_weights(weights)
    a, b = np.asarray(last(inputs, training=False)), np.asarray(first(inputs, training=False))
    assert np.abs(a).max() > 1e-3
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4 * np.abs(a).max())


def row_id(row) -> str:
    """A pytest id for a paper row: ``2:bl-resnet101 (alpha=2, beta=4) @256``."""
    return f"{row.table}:{row.label}"


def paper_model(row: paper_tables.PaperRow, **overrides):
    """The model of a paper row (channels_last, at the row's input size)."""
    kwargs = dict(input_shape=row.input_shape, data_format="channels_last", **row.kwargs) | overrides
    return bl_net_tf.create_model(row.arch, **kwargs)


def assert_equals_paper(row: paper_tables.PaperRow, model) -> None:
    """``model``'s parameters (millions) and GFLOPs (MACs, with the FC when the row counts it) equal
    the paper's ``row``: to the printed digit, or within the row's stated relative tolerance."""
    params, gflops = count_params(model) / 1e6, count_macs(model, include_fc=row.include_fc) / 1e9
    for what, ours, paper, tolerance in (("Mparams", params, paper_tables.expected_mparams(row), row.params_tol),
                                         ("GFLOPs", gflops, row.gflops, row.flops_tol)):
        if tolerance is None:
            assert round(ours, 2) == paper, f"{row_id(row)}: {what} {ours:.4f}, paper {paper}"
        else:
            assert abs(ours - paper) / paper < tolerance, f"{row_id(row)}: {what} {ours:.4f}, paper {paper}"
