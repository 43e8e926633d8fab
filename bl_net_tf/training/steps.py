"""The distributed train and eval steps: loss, top-1/top-5 error, the optimizer update.

A step returns the global sums of :data:`STAT_NAMES` (one all-reduce), which the loop turns
into means; counting images rather than batches makes a partial last eval batch exact.

Precision (``--mixed_precision``, :func:`dtype_policy`): the model is built under a Keras mixed
policy, so its variables are float32 and its layers compute in float16 or bfloat16 except the
logits (models/layers.py ``LOGITS_DTYPE``); the loss, the top-k counts and the gradients the
optimizer applies are float32. float16 scales the loss (training/optimizer.py).

The forward and backward pass of each replica is one XLA cluster when ``jit_compile`` is on; the
gradient all-reduce and the update stay outside it, because a compiled cluster cannot address the
other replicas' variables (MirroredStrategy places each copy on its own device).
"""
from __future__ import annotations

import contextlib

import keras
import tensorflow as tf

from bl_net_tf.constants import DTYPE_POLICIES

# save_votes, stop_votes: workers' requests to checkpoint (time) or to stop (a signal), summed
# with the stats so that every worker takes the same decision after the same step.
STAT_NAMES = ("loss_sum", "wrong1", "wrong5", "images", "save_votes", "stop_votes")
_METRICS = STAT_NAMES.index("save_votes")  # the stats before the votes


@contextlib.contextmanager
def dtype_policy(precision: str):
    """Builds the layers made inside under the policy of ``precision`` (a ``--mixed_precision``
    value, ``constants.DTYPE_POLICIES``); the global policy is restored on exit."""
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(DTYPE_POLICIES[precision])
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def cross_entropy(labels, logits, label_smoothing: float = 0.0):
    """Per-example softmax cross-entropy on float32 logits; smoothing as
    ``tf.losses.softmax_cross_entropy`` (targets ``(1 - s) * onehot + s / classes``)."""
    logits = tf.cast(logits, tf.float32)
    if label_smoothing == 0:
        return tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits)
    classes = logits.shape[-1]
    targets = tf.one_hot(labels, classes) * (1.0 - label_smoothing) + label_smoothing / classes
    return tf.nn.softmax_cross_entropy_with_logits(labels=targets, logits=logits)


def wrong_counts(labels, logits):
    """(top-1 wrong, top-5 wrong) counts as float32; top-5 is top-k with k = min(5, classes)."""
    logits = tf.cast(logits, tf.float32)
    k = min(5, int(logits.shape[-1]))
    wrong1 = tf.logical_not(tf.math.in_top_k(labels, logits, 1))
    wrong5 = tf.logical_not(tf.math.in_top_k(labels, logits, k))
    return tf.reduce_sum(tf.cast(wrong1, tf.float32)), tf.reduce_sum(tf.cast(wrong5, tf.float32))


def _metrics(labels, logits, per_example_loss):
    wrong1, wrong5 = wrong_counts(labels, logits)
    images = tf.cast(tf.shape(labels)[0], tf.float32)
    return tf.stack([tf.reduce_sum(per_example_loss), wrong1, wrong5, images])


def _with_votes(metrics, save_vote, stop_vote):
    return tf.concat([metrics, tf.cast(tf.stack([save_vote, stop_vote]), tf.float32)], axis=0)


def make_train_step(strategy: tf.distribute.Strategy, model: keras.Model, optimizer, *, global_batch: int,
                    label_smoothing: float = 0.0, jit_compile: bool = False):
    """``step(iterator, save_vote, stop_vote=0.0) -> float32[len(STAT_NAMES)]`` global sums.

    The loss of a replica is its summed cross-entropy / ``global_batch``, so the all-reduced
    (summed) gradient is the global mean's, as Tensorpack's averaged tower gradients.
    ``save_vote`` and ``stop_vote`` (0 or 1 from each worker) are summed with the stats, so every
    worker of a multi-worker run sees the same checkpoint and stop decisions.
    """
    variables = model.trainable_variables

    def forward_backward(images, labels):
        with tf.GradientTape() as tape:
            logits = model(images, training=True)
            per_example = cross_entropy(labels, logits, label_smoothing)
            loss = tf.reduce_sum(per_example) * (1.0 / global_batch)
            scaled = optimizer.scale_loss(loss)
        return tape.gradient(scaled, variables), logits, per_example

    forward_backward = tf.function(forward_backward, jit_compile=jit_compile)

    def replica_step(images, labels, save_vote, stop_vote):
        grads, logits, per_example = forward_backward(images, labels)
        optimizer.apply_gradients(zip(grads, variables))
        return _with_votes(_metrics(labels, logits, per_example), save_vote, stop_vote)

    @tf.function
    def step(iterator, save_vote, stop_vote=0.0):
        images, labels = next(iterator)
        per_replica = strategy.run(replica_step, args=(images, labels, save_vote, stop_vote))
        return strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)

    return step


def make_eval_step(strategy: tf.distribute.Strategy, model: keras.Model, *, jit_compile: bool = False):
    """``step(images, labels, stop_vote=0.0) -> float32[len(STAT_NAMES)]`` global sums over a
    distributed batch (the stop votes as in :func:`make_train_step`)."""

    def forward(images, labels):
        def replica_metrics():
            logits = model(images, training=False)
            return _metrics(labels, logits, cross_entropy(labels, logits))

        # The last batch may leave a replica with no image; TF's CPU conv and BN kernels fail on
        # an empty batch, so that replica contributes zeros instead.
        return tf.cond(tf.shape(labels)[0] > 0, replica_metrics, lambda: tf.zeros([_METRICS]))

    forward = tf.function(forward, jit_compile=jit_compile)

    def replica_step(images, labels, stop_vote):
        return _with_votes(forward(images, labels), 0.0, stop_vote)

    @tf.function(reduce_retracing=True)  # the last, partial batch: one more trace, shape-generic
    def step(images, labels, stop_vote=0.0):
        per_replica = strategy.run(replica_step, args=(images, labels, stop_vote))
        return strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)

    return step


def make_replica_sync(strategy: tf.distribute.Strategy, model: keras.Model):
    """``sync()``: sets the model's non-trainable float variables (the BatchNorm moving statistics)
    on every replica to their mean over the replicas; a no-op on one replica.

    Each replica updates its moving statistics from its own batches (the variables aggregate as
    "none", Keras's default, because a cross-replica update inside the replica's forward pass
    cannot run in the nested, XLA-compiled function). The moving averages are linear in the batch
    statistics, so averaging them whenever they are read (before each checkpoint, hence before each
    evaluation) gives exactly the moving average of the replica-averaged batch statistics, as
    updating with MEAN aggregation would, at no cost per step. All workers must call it together.
    """
    variables = [v for v in model.non_trainable_variables if v.dtype.startswith(("float", "bfloat"))]
    if strategy.num_replicas_in_sync == 1 or not variables:
        return lambda: None

    def replica_sync():
        context = tf.distribute.get_replica_context()
        # Tensors of this replica's copies (a variable here would make the variable the destination).
        means = context.all_reduce(tf.distribute.ReduceOp.MEAN, [tf.identity(v.value) for v in variables])
        for variable, mean in zip(variables, means):
            variable.assign(mean)  # this replica's copy

    @tf.function
    def sync():
        strategy.run(replica_sync)

    return sync
