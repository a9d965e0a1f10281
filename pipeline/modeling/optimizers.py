"""Optimizers by name, and Adam with TensorFlow's fused update.

Keras' Adam updates each variable with about ten element-wise operations (two moments, the
bias-corrected step, the square root, the division), each one a pass over the variable in
memory. TensorFlow's `ResourceApplyAdam` kernel does the same arithmetic in one pass: for the
seed 000 MLP that is 0.78 → 0.27 s of CPU per epoch (`benchmarks/RESULTS.md`). `FusedAdam` uses
it where it applies — the TensorFlow backend, one device, dense gradients, no AMSGrad — and
Keras' own update everywhere else.

Saved models never name `FusedAdam`: `serving_copy` gives the model that the best checkpoint
writes — the same weights and compile settings, `FusedAdam` replaced by a plain
`keras.optimizers.Adam` of the same hyperparameters, its state reset (the training state lives
in the resume backup) — so `keras.saving.load_model(path, safe_mode=True)` loads it with Keras
alone.
"""

from __future__ import annotations

import keras


class FusedAdam(keras.optimizers.Adam):
    """`keras.optimizers.Adam` whose update is TensorFlow's fused `ResourceApplyAdam` kernel.

    The arithmetic is Adam's as Keras writes it (`epsilon` added to the square root of the second
    moment, bias correction folded into the step size); only rounding differs.
    """

    def __init__(self, *args, name: str = "adam", **kwargs):
        super().__init__(*args, name=name, **kwargs)

    def _fused(self, gradient, variable) -> bool:
        if keras.backend.backend() != "tensorflow":
            return False
        import tensorflow as tf

        return (
            not self.amsgrad
            and not isinstance(gradient, tf.IndexedSlices)
            and not tf.distribute.has_strategy()
            and hasattr(variable, "handle")
        )

    def update_step(self, gradient, variable, learning_rate):
        if not self._fused(gradient, variable):
            return super().update_step(gradient, variable, learning_rate)
        import tensorflow as tf

        dtype = variable.dtype
        index = self._get_variable_index(variable)
        step = tf.cast(self.iterations + 1, dtype)
        beta_1 = tf.cast(self.beta_1, dtype)
        beta_2 = tf.cast(self.beta_2, dtype)
        tf.raw_ops.ResourceApplyAdam(
            var=variable.handle,
            m=self._momentums[index].handle,
            v=self._velocities[index].handle,
            beta1_power=tf.pow(beta_1, step),
            beta2_power=tf.pow(beta_2, step),
            lr=tf.cast(learning_rate, dtype),
            beta1=beta_1,
            beta2=beta_2,
            epsilon=tf.cast(self.epsilon, dtype),
            grad=tf.cast(gradient, dtype),
        )

    def portable(self) -> keras.optimizers.Adam:
        """A plain Keras Adam with the same hyperparameters (and no state)."""
        return keras.optimizers.Adam.from_config(self.get_config())


def learning_rate_schedule(experiment, *, steps_per_epoch: int):
    """The learning rate an experiment trains with: its `learning_rate`, constant, or — for
    models whose settings have `warmup_epochs` (`compact_cnn`) — Keras' `CosineDecay` schedule:
    a linear rise from 0 to `learning_rate` over the warm-up, then a cosine decay to 0 at the end
    of the experiment's last epoch.

    The schedule is a standard Keras object inside the optimizer: it is saved in the optimizer's
    config (the best checkpoint loads in safe mode) and counts the optimizer's `iterations`, which
    the resume backup keeps, so a resumed run continues the same curve.
    """
    warmup_epochs = getattr(experiment.model, "warmup_epochs", None)
    if warmup_epochs is None:
        return experiment.learning_rate
    total = max(1, experiment.epochs * steps_per_epoch)
    warmup = min(total - 1, round(warmup_epochs * steps_per_epoch))
    return keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=0.0,
        decay_steps=total - warmup,
        alpha=0.0,
        warmup_target=experiment.learning_rate,
        warmup_steps=warmup,
        name="warmup_cosine",
    )


def make_optimizer(name: str, learning_rate, *, distributed: bool = False):
    """The optimizer `name` (`sgd`, `rmsprop` or `adam`) with `learning_rate` (a float or a
    `keras.optimizers.schedules.LearningRateSchedule`, see `learning_rate_schedule`).

    Adam is `FusedAdam` on one device with the TensorFlow backend; under a distribution
    strategy, or on another backend, it is Keras' own.
    """
    if name == "adam" and not distributed and keras.backend.backend() == "tensorflow":
        return FusedAdam(learning_rate=learning_rate)
    classes = {
        "sgd": keras.optimizers.SGD,
        "rmsprop": keras.optimizers.RMSprop,
        "adam": keras.optimizers.Adam,
    }
    return classes[name](learning_rate=learning_rate)


def serving_copy(model: keras.Model) -> keras.Model:
    """A copy of `model` with its weights and compile settings and a fresh optimizer of the same
    hyperparameters (`FusedAdam` becomes a plain Keras Adam; under mixed precision, the loss-scale
    wrapper is made anew around it): the model a checkpoint keeps. An uncompiled model is its own
    serving copy."""
    if not getattr(model, "compiled", False):
        return model
    optimizer = model.optimizer
    if isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
        optimizer = optimizer.inner_optimizer  # compiling under mixed precision wraps it again
    if isinstance(optimizer, FusedAdam):
        optimizer = optimizer.portable()
    config = model.get_compile_config()
    config["optimizer"] = keras.optimizers.serialize(optimizer)
    copy = type(model).from_config(model.get_config())
    copy.set_weights(model.get_weights())
    copy.compile_from_config(config)
    return copy
