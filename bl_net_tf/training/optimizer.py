"""SGD with Nesterov momentum and L2 weight decay, as Tensorpack trained the paper's models.

Two details differ from Keras's stock pieces, and both change what a step does:

* Tensorpack's ``tf.train.MomentumOptimizer(lr, 0.9, use_nesterov=True)`` keeps its velocity in
  gradient units and multiplies by the *current* rate: ``a = m*a + g; w -= lr*(g + m*a)``.
  Keras's ``SGD(nesterov=True)`` folds the rate into the velocity, so after a rate change the old
  rate lingers for ~1/(1-m) steps. Identical under a constant rate; here the rate always changes.
* Tensorpack adds ``regularize_cost('.*/W', l2_regularizer(1e-4))`` = 1e-4 * sum(w^2) / 2 to the
  loss, so the gradient gains 1e-4 * w, on conv and FC kernels only (``W``; not biases, not BN).
  Keras's ``L2(1e-4)`` is 1e-4 * sum(w^2), twice that gradient, and Keras's optimizer
  ``weight_decay`` is decoupled (AdamW-style), not in the momentum. So the decay is added to the
  all-reduced gradient here, once per step whatever the number of replicas.
"""
from __future__ import annotations

import keras
import tensorflow as tf
from keras import ops

# Which variables are decayed: Tensorpack's ``.*/W`` (conv and FC kernels), and with
# ``--weight_decay_norm`` its ``.*/W|.*/gamma|.*/beta``.
KERNEL_NAMES = ("kernel",)
NORM_NAMES = ("gamma", "beta")


def decayed_variables(model: keras.Model, include_norm: bool = False) -> list:
    """The trainable variables that get L2 decay: conv and dense kernels (+ BN gamma/beta)."""
    names = KERNEL_NAMES + (NORM_NAMES if include_norm else ())
    return [v for v in model.trainable_variables if v.name in names]


@keras.saving.register_keras_serializable(package="bl_net_tf")
class NesterovMomentum(keras.optimizers.Optimizer):
    """``tf.compat.v1.train.MomentumOptimizer(use_nesterov=True)`` plus coupled L2 decay.

    Per variable, with ``g`` the (all-reduced) gradient and ``d`` = ``l2`` for decayed variables,
    0 otherwise::

        g = g + d * w
        a = momentum * a + g
        w = w - lr * (g + momentum * a)      # nesterov;  w - lr * a  otherwise

    Args:
      learning_rate: a float or a schedule of the step.
      momentum: the momentum coefficient.
      nesterov: Nesterov's look-ahead form.
      l2: the decay coefficient: the gradient gains ``l2 * w`` (Tensorpack's ``l2_regularizer(l2)``).
      decay: the variables to decay (see :func:`decayed_variables`); set before :meth:`build`.
    """

    def __init__(self, learning_rate=0.1, momentum: float = 0.9, nesterov: bool = True, l2: float = 0.0,
                 decay=(), name: str = "nesterov_momentum", **kwargs):
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)
        self.momentum = float(momentum)
        self.nesterov = bool(nesterov)
        self.l2 = float(l2)
        self._decay_keys = frozenset(self._var_key(v) for v in decay)

    def decays(self, variable) -> bool:
        return self.l2 > 0 and self._var_key(variable) in self._decay_keys

    def build(self, variables):
        if self.built:
            return
        super().build(variables)
        self.accumulators = self.add_optimizer_variables(variables, "accumulator")

    def update_step(self, gradient, variable, learning_rate):
        lr = ops.cast(learning_rate, variable.dtype)
        g = ops.cast(gradient, variable.dtype)
        if self.decays(variable):
            g = g + ops.cast(self.l2, variable.dtype) * variable
        accumulator = self.accumulators[self._get_variable_index(variable)]
        momentum = ops.cast(self.momentum, variable.dtype)
        self.assign(accumulator, momentum * accumulator + g)
        if self.nesterov:
            self.assign_sub(variable, lr * (g + momentum * accumulator))
        else:
            self.assign_sub(variable, lr * accumulator)

    def get_config(self):
        # The decayed set is a property of the model, not serialisable: rebuild it from the model.
        return {**super().get_config(), "momentum": self.momentum, "nesterov": self.nesterov, "l2": self.l2}


@keras.saving.register_keras_serializable(package="bl_net_tf")
class DynamicLossScale(keras.optimizers.LossScaleOptimizer):
    """Keras's dynamic loss scaling for float16 around another optimizer, with two fixes.

    As Keras: the loss is multiplied by a scale (2^15 at first), the gradients divided by it; a
    step with a non-finite gradient is skipped and halves the scale, 2000 finite steps in a row
    double it. Fixed here:

    * **Every replica skips together.** Keras decides on the first replica's own gradients, before
      the all-reduce (which happens inside the wrapped optimizer), so an overflow on any other
      replica is summed into every weight: on MirroredStrategy over two CPUs, one infinite gradient
      on the second replica made every weight -inf. Here the replicas' verdicts are all-reduced
      first, one scalar per step.
    * **A skipped step still counts.** Keras leaves ``iterations`` (the counter that drives the
      learning-rate schedule and is checkpointed) unchanged on a skipped step, so the schedule would
      fall behind the global step by one step per overflow; tf.keras 2's LossScaleOptimizer
      counted it, and so does this.
    """

    def check_finite(self, grads):
        finite = super().check_finite(grads)
        context = tf.distribute.get_replica_context()
        if context is None or context.num_replicas_in_sync == 1:
            return finite
        overflows = context.all_reduce(tf.distribute.ReduceOp.SUM, tf.cast(tf.logical_not(finite), tf.float32))
        return tf.equal(overflows, 0.0)

    def _stateful_handle_non_finite_grads(self):
        super()._stateful_handle_non_finite_grads()
        self.inner_optimizer.iterations.assign_add(1)


def create_optimizer(model: keras.Model, schedule, *, momentum: float, weight_decay: float,
                     weight_decay_norm: bool = False, loss_scale: bool = False) -> keras.optimizers.Optimizer:
    """The training optimizer for ``model``, built (its slots exist, so a checkpoint restores
    into them at once); wrapped for dynamic loss scaling (:class:`DynamicLossScale`) with float16."""
    optimizer = NesterovMomentum(schedule, momentum=momentum, nesterov=True, l2=weight_decay,
                                 decay=decayed_variables(model, weight_decay_norm))
    if loss_scale:
        optimizer = DynamicLossScale(optimizer)
    optimizer.build(model.trainable_variables)
    return optimizer
