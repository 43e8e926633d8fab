"""The SavedModel's serving surface: a ``tf.Module`` holding the network and two signatures.

``serving_default``  image_bytes: tf.string [N], encoded JPEG, PNG, GIF, BMP or WebP (TF Serving's
                     REST API takes them as ``{"b64": ...}``), preprocessed in the graph within
                     limits (``preprocess.py``).
``predict_images``   images: tf.uint8 [N, size, size, 3], RGB, already resized and cropped.

Both return ``probabilities`` (float32 [N, classes]), ``classes`` (int32 [N, k], the top-k
class indices, best first), ``scores`` (float32 [N, k], their probabilities), with k = 5 (or the
number of classes if smaller), and ``class_names`` (string [N, k]) when names were given. An empty
request (N = 0) returns outputs with N = 0.
"""
from __future__ import annotations

from typing import Optional, Sequence

import keras
import tensorflow as tf

from bl_net_tf.models.layers import ImageNetNormalization
from bl_net_tf.serving.fold import fold_batch_norm
from bl_net_tf.serving.layout import channels_last_copy
from bl_net_tf.data import recipe
from bl_net_tf.serving.preprocess import ServingLimits, check_batch, decode_batch

TOP_K = 5


def serving_network(model: keras.Model, image_size: int, precision: str = "float32") -> keras.Model:
    """A channels_last copy of ``model`` in ``precision``, BatchNorm folded into the convolutions
    (fold.py), that takes RGB images in [0, 255] of ``image_size`` and returns logits: the ImageNet
    normalisation is added unless ``model`` already has it (``include_preprocessing=True``)."""
    network = fold_batch_norm(channels_last_copy(model, image_size), precision=precision)
    if len(network.outputs) != 1 or len(network.outputs[0].shape) != 2:
        raise ValueError("export needs a classifier with one [batch, classes] output "
                         "(features_only models cannot be exported)")
    if any(isinstance(layer, ImageNetNormalization) for layer in network.layers):
        return network
    images = keras.Input((image_size, image_size, 3), name="images")
    logits = network(ImageNetNormalization(name="serving_normalize")(images))
    return keras.Model(images, logits, name=network.name)


class _Untracked:
    """A holder that ``tf.Module`` does not look into."""

    def __init__(self, model):
        self.model = model


class ServingModule(tf.Module):
    """Holds the network's variables and the signature functions for ``tf.saved_model.save``."""

    def __init__(self, network: keras.Model, image_size: int, class_names: Optional[Sequence[str]] = None, *,
                 eval_protocol: str = recipe.DEFAULT_EVAL_PROTOCOL, limits: ServingLimits = ServingLimits()):
        super().__init__()
        # The functions below close over the Keras model without tracking it: saving a tracked
        # Keras model also traces and writes Keras's own endpoints for it and every layer, which
        # triples the export time. The variables are tracked instead (after tracing, below).
        self._network = _Untracked(network)
        num_classes = int(network.outputs[0].shape[-1])
        self._top_k = min(TOP_K, num_classes)
        self._class_names = None if class_names is None else tf.constant(list(class_names), tf.string)

        # The network is traced once, in `classify`; both signatures call it.
        @tf.function(input_signature=[tf.TensorSpec([None, image_size, image_size, 3], tf.float32)])
        def classify(images):
            return self._predict(images)

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="image_bytes")])
        def serve_image_bytes(image_bytes):
            return classify(decode_batch(image_bytes, image_size, protocol=eval_protocol, limits=limits))

        @tf.function(input_signature=[tf.TensorSpec([None, image_size, image_size, 3], tf.uint8, name="images")])
        def serve_images(images):
            with tf.control_dependencies([check_batch(tf.shape(images)[0], limits)]):
                return classify(tf.cast(images, tf.float32))

        # Track the tf.Variables the traced graph reads (as keras.export.ExportArchive does), not
        # Keras's wrappers around them: the TF1-style loader of TF Serving and `saved_model_cli
        # run` restores only those ("Could not find variable ..." otherwise).
        self.network_variables = list(classify.get_concrete_function().variables)
        self.classify = classify
        self.serve_image_bytes = serve_image_bytes
        self.serve_images = serve_images

    def _predict(self, images: tf.Tensor) -> dict:
        # A convolution of an empty batch fails (oneDNN); an empty request gets empty outputs.
        return tf.cond(tf.shape(images)[0] > 0, lambda: self._outputs(images), lambda: self._empty_outputs())

    def _outputs(self, images: tf.Tensor) -> dict:
        # Inside the cond's branch TF Serving's (TF1) loader sees an image tensor of unknown shape,
        # and grappler then cannot prove the two addends of a merge or a strided residual block the
        # same shape, so it leaves those additions and their ReLUs out of the convolutions. The
        # static shape known here, at tracing, is written into the graph.
        images = tf.ensure_shape(images, images.shape)
        logits = tf.cast(self._network.model(images, training=False), tf.float32)
        probabilities = tf.nn.softmax(logits, axis=-1)
        top = tf.math.top_k(probabilities, k=self._top_k)
        outputs = {"probabilities": probabilities, "classes": top.indices, "scores": top.values}
        if self._class_names is not None:
            outputs["class_names"] = tf.gather(self._class_names, top.indices)
        return outputs

    def _empty_outputs(self) -> dict:
        num_classes = int(self._network.model.outputs[0].shape[-1])
        outputs = {"probabilities": tf.zeros([0, num_classes]), "classes": tf.zeros([0, self._top_k], tf.int32),
                   "scores": tf.zeros([0, self._top_k])}
        if self._class_names is not None:
            outputs["class_names"] = tf.zeros([0, self._top_k], tf.string)
        return outputs

    @property
    def signatures(self) -> dict:
        return {"serving_default": self.serve_image_bytes, "predict_images": self.serve_images}
