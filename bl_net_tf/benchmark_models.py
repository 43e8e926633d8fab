"""What ``python -m bl_net_tf.benchmark`` can time, by name, and how one step of each runs.

``ARCH``                   a registered arch (``bl-resnet50``): the Keras model's forward pass
                           (``model(images, training=False)``) or an SGD training step
``keras:NAME``             a ``keras.applications`` model (random weights), the same two steps
``folded:ARCH[@PRECISION]`` the network an export of ARCH serves (channels_last, BatchNorm folded into
                           the convolutions; serving/fold.py) as a Keras forward pass: ARCH against
                           it is BatchNorm folding's effect alone
``export:ARCH[@PRECISION]`` ARCH with random weights exported by :func:`bl_net_tf.export_saved_model`
                           (BatchNorm folded; float32 unless ``@bfloat16`` / ``@float16``) to a
                           temporary folder, loaded back and run through ``predict_images``
``saved_model:DIR``        an existing export, through ``predict_images``

SavedModels are loaded with ``tf.saved_model.load`` and called as TF2 functions, or with
``Settings.saved_model_loader="session"`` (``--saved_model_loader=session``) into a TF1 session,
as TF Serving loads them: grappler optimises the two graphs separately and not always alike.

A SavedModel takes uint8 RGB images and returns probabilities and the top 5 (its uint8 cast,
normalisation, softmax and top-k are part of each timed step, as a server runs them); the Keras
models take float32 NHWC (or NCHW for a channels_first keras.applications model) and return
logits. SavedModels only infer.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Callable, Optional

KERAS_PREFIX = "keras:"
FOLDED_PREFIX = "folded:"
EXPORT_PREFIX = "export:"
SAVED_MODEL_PREFIX = "saved_model:"
SIGNATURE = "predict_images"
SAVED_MODEL_LOADERS = ("function", "session")


@dataclasses.dataclass
class Contender:
    """One timed model: ``step(inputs[self.inputs], labels)`` returns a tensor when it is done."""

    name: str
    step: Callable
    inputs: str  # "channels_last" | "channels_first" float32 images, or "uint8" NHWC
    macs: Optional[int]  # per image (conv + FC); None for a SavedModel read from disk
    params: Optional[int]
    model: object = None  # kept alive while timed


def _split_serving(name: str) -> tuple:
    """``export:ARCH[@PRECISION]`` or ``folded:...`` -> (ARCH, PRECISION)."""
    arch, _, precision = name.split(":", 1)[1].partition("@")
    return arch, precision or "float32"


def check_name(name: str, mode: str = "infer") -> None:
    """Raises ValueError for a name that names nothing timeable (see the module docstring)."""
    import keras

    from bl_net_tf.constants import SERVING_PRECISIONS, check_choice
    from bl_net_tf.models import registry

    if name.startswith((FOLDED_PREFIX, EXPORT_PREFIX, SAVED_MODEL_PREFIX)) and mode != "infer":
        raise ValueError(f"{name}: serving networks and SavedModels only infer; use --mode infer")
    if name.startswith(KERAS_PREFIX):
        if not callable(getattr(keras.applications, name[len(KERAS_PREFIX):], None)):
            raise ValueError(f"keras.applications has no {name[len(KERAS_PREFIX):]!r}")
    elif name.startswith((FOLDED_PREFIX, EXPORT_PREFIX)):
        arch, precision = _split_serving(name)
        registry.get_spec(arch)
        check_choice("precision", precision, SERVING_PRECISIONS)
    elif name.startswith(SAVED_MODEL_PREFIX):
        import tensorflow as tf

        path = name[len(SAVED_MODEL_PREFIX):]
        if not tf.saved_model.contains_saved_model(path):
            raise ValueError(f"no SavedModel in {path!r}")
    else:
        registry.get_spec(name)


def build(name: str, settings, workdir: str) -> Contender:
    """The model ``name`` built for ``settings`` (a ``benchmark.Settings``) with its step function;
    ``export:`` entries are written under ``workdir``."""
    from bl_net_tf.profile import count_macs, count_params

    if name.startswith(SAVED_MODEL_PREFIX):
        return _saved_model(name, name[len(SAVED_MODEL_PREFIX):], settings, macs=None, params=None)
    if name.startswith((FOLDED_PREFIX, EXPORT_PREFIX)):
        arch, precision = _split_serving(name)
        model, _ = keras_model(arch, dataclasses.replace(settings, data_format="channels_last"))
        macs, params = count_macs(model), count_params(model)
        if name.startswith(FOLDED_PREFIX):
            from bl_net_tf.serving.fold import fold_batch_norm

            folded = fold_batch_norm(model, precision=precision)
            return Contender(name, make_step(folded, settings), "channels_last", macs, params, folded)
        from bl_net_tf.export import export_saved_model
        from bl_net_tf.serving.preprocess import ServingLimits

        path = os.path.join(workdir, f"{len(os.listdir(workdir))}", "1")
        limits = ServingLimits(max_batch=max(ServingLimits().max_batch, settings.batch_size))
        export_saved_model(model, path, precision=precision, limits=limits)
        return _saved_model(name, path, settings, macs=macs, params=params)
    model, layout = keras_model(name, settings)
    return Contender(name, make_step(model, settings), layout, count_macs(model), count_params(model), model)


def _saved_model(name: str, path: str, settings, *, macs, params) -> Contender:
    import json

    import tensorflow as tf

    from bl_net_tf.export import SETTINGS_FILE

    exported = os.path.join(path, "assets.extra", SETTINGS_FILE)
    max_batch = json.load(open(exported, encoding="utf-8")).get("max_batch") if os.path.isfile(exported) else None
    if max_batch is not None and settings.batch_size > max_batch:
        raise ValueError(f"{path} takes at most {max_batch} images per request; pass --batch_size {max_batch} "
                         f"or export with --max_batch {settings.batch_size}")
    if settings.saved_model_loader == "session":
        step, size, loaded = _session_step(path)
    else:
        loaded = tf.saved_model.load(path)
        if SIGNATURE not in loaded.signatures:
            raise ValueError(f"{path} has no {SIGNATURE!r} signature (bl_net_tf.export writes one)")
        signature = loaded.signatures[SIGNATURE]
        size = signature.structured_input_signature[1]["images"].shape[1]

        def step(images, labels):
            del labels
            return signature(images=images)["probabilities"]

    if size != settings.image_size:
        raise ValueError(f"{path} takes {size}x{size} images; pass --image_size {size}")
    return Contender(name, step, "uint8", macs, params, loaded)


def _session_step(path: str) -> tuple:
    """``(step, image size, session)`` for the SavedModel at ``path`` loaded as TF Serving does."""
    import tensorflow as tf
    from tensorflow.python.util import deprecation  # TF1's loader is deprecated, not gone: TF Serving's own

    session = tf.compat.v1.Session(graph=tf.Graph())
    with session.graph.as_default(), deprecation.silence():
        meta_graph = tf.compat.v1.saved_model.loader.load(session, [tf.saved_model.SERVING], path)
    if SIGNATURE not in meta_graph.signature_def:
        raise ValueError(f"{path} has no {SIGNATURE!r} signature (bl_net_tf.export writes one)")
    signature = meta_graph.signature_def[SIGNATURE]
    feed, fetch = signature.inputs["images"].name, signature.outputs["probabilities"].name

    def step(images, labels):
        del labels
        return tf.constant(session.run(fetch, {feed: images.numpy()}))

    return step, signature.inputs["images"].tensor_shape.dim[1].size, session


def keras_model(name: str, settings):
    """A registered arch (``bl-resnet50``) or ``keras:ResNet50``; returns (model, input layout).

    Our models take NHWC images whatever their data format; keras.applications models take the
    layout of the global image data format they were built under.
    """
    import keras

    import bl_net_tf
    from bl_net_tf.models import grouped_conv

    size = settings.image_size
    if not name.startswith(KERAS_PREFIX):
        model = bl_net_tf.create_model(name, num_classes=settings.num_classes, input_shape=(size, size, 3),
                                       data_format=settings.data_format)
        if settings.grouped_conv != "auto":
            grouped_conv.set_implementation(model, settings.grouped_conv)
        return model, "channels_last"
    constructor = getattr(keras.applications, name[len(KERAS_PREFIX):])
    layout = settings.data_format or keras.config.image_data_format()
    previous = keras.config.image_data_format()
    keras.config.set_image_data_format(layout)
    try:
        shape = (3, size, size) if layout == "channels_first" else (size, size, 3)
        model = constructor(weights=None, input_shape=shape, classes=settings.num_classes,
                            classifier_activation=None)
    finally:
        keras.config.set_image_data_format(previous)
    return model, layout


def make_step(model, settings):
    """A compiled function of (images, labels) running one inference or SGD training step."""
    import keras
    import tensorflow as tf

    if settings.mode == "infer":
        def infer(images, labels):
            del labels
            return model(images, training=False)

        return tf.function(infer, jit_compile=settings.xla)
    optimizer = keras.optimizers.SGD(learning_rate=0.01, momentum=0.9)  # the paper's optimizer
    if settings.mixed_precision == "float16":
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    optimizer.build(model.trainable_variables)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    def train(images, labels):
        with tf.GradientTape() as tape:
            logits = tf.cast(model(images, training=True), tf.float32)
            loss = loss_fn(labels, logits)
            scaled = optimizer.scale_loss(loss)
        grads = tape.gradient(scaled, model.trainable_variables)
        optimizer.apply(grads, model.trainable_variables)
        return loss

    return tf.function(train, jit_compile=settings.xla)
