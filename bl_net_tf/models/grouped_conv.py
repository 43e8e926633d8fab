"""A grouped 2-D convolution that is fast on CPU: ``Conv2D(groups=...)`` with a per-device kernel.

Keras 3 runs every grouped convolution through an XLA-compiled ``tf.nn.convolution`` on the
TensorFlow backend (``keras/src/backend/tensorflow/nn.py``: "grouped convolutions are broken on CPU
without XLA"), and XLA's CPU grouped convolution is slow: about 2 GFLOP/s for ResNeXt's 3x3, 32
groups on a 2-core Xeon, against about 200 GFLOP/s for a dense 3x3. TensorFlow's oneDNN CPU kernels
(on by default on x86 Linux) compute grouped convolutions and their gradients natively: over
bL-ResNeXt-50's grouped convs, 12x XLA's speed forward and over 100x for a training step (XLA's CPU
backward is slower still). oneDNN has no float16 kernels: float16 convolutions run on the plain CPU
kernels, which (like every CPU kernel without oneDNN) have no grouped gradient at all: they raise
"Gradients for grouped convolutions are not supported on CPU", or, inside a graph, "filter_size
does not have enough elements".

:class:`Conv2D` here is a ``keras.layers.Conv2D`` with the same ``build``, so the same variable
(``kernel``, shape ``(kh, kw, in/groups, out)``), the same layer name and the same parameter count:
a checkpoint written by either layer loads into the other, and ``profile.count_macs`` counts it as
a grouped conv. It is called ``Conv2D`` on purpose: Keras addresses the weights in ``.weights.h5``
and ``.keras`` files by the snake-cased class name and its rank among layers of that class
(``layers/conv2d_17/vars``), so any other class name would renumber every convolution of a
converted ResNeXt checkpoint. Only the convolution op differs, chosen when the layer is traced:

  ``fused``  one ``tf.nn.convolution`` with ``in/groups`` filter depth: cuDNN on a GPU, oneDNN on CPU.
  ``split``  one dense convolution per group, concatenated: runs on any CPU kernel (the fallback
             where the CPU has no grouped gradient).
  ``keras``  Keras's own op (XLA-compiled on the TF backend), kept for reference and benchmarks.
  ``auto``   ``fused`` where a GPU is visible, inside an XLA compilation (XLA compiles a grouped
             convolution natively in every dtype, on a GPU as on the CPU: the GPU's graph) or where
             the CPU kernels run grouped gradients in the input's dtype (probed once per dtype and
             process: float32 and bfloat16 with oneDNN, never float16); ``split`` otherwise.

``docs/benchmarks.md`` has the measurements behind the choice.
"""
from __future__ import annotations

import functools

import keras
from keras import layers

IMPLEMENTATIONS = ("auto", "fused", "split", "keras")


@functools.lru_cache(maxsize=None)
def cpu_runs_grouped_conv(dtype: str = "float32") -> bool:
    """Whether TensorFlow's CPU kernels compute a grouped convolution and both its gradients in
    ``dtype``, in both data formats (oneDNN builds do in float32 and bfloat16; the plain Eigen kernels,
    which also run every float16 convolution, raise "Gradients for grouped convolutions are not
    supported on CPU"). Probed once per dtype on a tiny input, outside any graph being traced."""
    import tensorflow as tf

    with tf.init_scope(), tf.device("/CPU:0"):
        try:
            for data_format, x_shape in (("NHWC", (1, 4, 4, 4)), ("NCHW", (1, 4, 4, 4))):
                x = tf.ones(x_shape, dtype)
                w = tf.ones((3, 3, 2, 4), dtype)
                with tf.GradientTape() as tape:
                    tape.watch([x, w])
                    y = tf.nn.conv2d(x, w, 1, "SAME", data_format=data_format)
                tape.gradient(y, [x, w])
        except (tf.errors.InvalidArgumentError, tf.errors.UnimplementedError):
            return False
    return True


def in_xla_compilation() -> bool:
    """Whether the graph being traced is compiled by XLA (inside a ``tf.function(jit_compile=True)``).

    TensorFlow has no public test for this; its own gradient code (array_grad.py, cond_v2.py) asks
    ``control_flow_util.GraphOrParentsInXlaContext``, and so does this.
    """
    import tensorflow as tf
    from tensorflow.python.ops import control_flow_util

    return control_flow_util.GraphOrParentsInXlaContext(tf.compat.v1.get_default_graph())


def resolve_implementation(implementation: str = "auto", dtype: str = "float32") -> str:
    """``implementation`` with ``auto`` replaced by the best one for this process's devices, the
    graph being traced (XLA or not) and the convolution's ``dtype``."""
    if implementation not in IMPLEMENTATIONS:
        raise ValueError(f"unknown grouped-conv implementation {implementation!r}; allowed: "
                         f"{', '.join(IMPLEMENTATIONS)}")
    if implementation != "auto":
        return implementation
    if keras.backend.backend() != "tensorflow":
        return "keras"
    import tensorflow as tf

    if tf.config.list_logical_devices("GPU") or in_xla_compilation() or cpu_runs_grouped_conv(dtype):
        return "fused"
    return "split"


@keras.saving.register_keras_serializable(package="bl_net_tf")
class Conv2D(layers.Conv2D):
    """``keras.layers.Conv2D`` with ``groups > 1`` and a convolution kernel picked per device.

    Args:
      implementation: ``auto`` (default) | ``fused`` | ``split`` | ``keras``; see the module
        docstring. Serialised with the layer, so a saved model keeps an explicit choice; ``auto``
        is resolved again wherever the model is loaded.
      **kwargs: as ``keras.layers.Conv2D``.
    """

    def __init__(self, *args, implementation: str = "auto", **kwargs):
        super().__init__(*args, **kwargs)
        resolve_implementation(implementation)  # validates the name now, not at the first call
        self.implementation = implementation

    def convolution_op(self, inputs, kernel):
        implementation = resolve_implementation(self.implementation, keras.backend.standardize_dtype(inputs.dtype))
        if implementation == "keras" or self.groups == 1:
            return super().convolution_op(inputs, kernel)
        import tensorflow as tf

        conv = functools.partial(tf.nn.convolution, strides=list(self.strides), padding=self.padding.upper(),
                                 dilations=list(self.dilation_rate))
        if implementation == "fused":
            return conv(inputs, kernel, data_format="NCHW" if self.data_format == "channels_first" else "NHWC")
        # split: dense NHWC convolutions only, the one layout every TF CPU kernel has.
        if self.data_format == "channels_first":
            inputs = tf.transpose(inputs, [0, 2, 3, 1])
        outputs = tf.concat([conv(x, w, data_format="NHWC") for x, w in zip(
            tf.split(inputs, self.groups, axis=-1), tf.split(kernel, self.groups, axis=-1))], axis=-1)
        if self.data_format == "channels_first":
            outputs = tf.transpose(outputs, [0, 3, 1, 2])
        return outputs

    def get_config(self):
        return {**super().get_config(), "implementation": self.implementation}


def set_implementation(model: keras.Model, implementation: str) -> int:
    """Switches every grouped :class:`Conv2D` of ``model`` to ``implementation`` (before the model is
    traced; a traced function keeps the kernel it was traced with). Returns how many it switched."""
    resolve_implementation(implementation)
    switched = 0
    for layer in model.layers:
        if isinstance(layer, Conv2D) and layer.groups > 1:
            layer.implementation = implementation
            switched += 1
    return switched
