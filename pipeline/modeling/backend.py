"""The Keras backend a stage runs on, chosen before Keras is first imported.

Keras 3 runs the same models on TensorFlow or JAX and reads `KERAS_BACKEND` once, when it is
first imported; a process therefore has one backend. The train and evaluate stages call
`use_backend` with the experiment's `backend` (or `runtime.backend`) before they import Keras,
and under JAX nothing in the training path imports TensorFlow: inputs are NumPy batches
(`pipeline.modeling.batches`), the optimizer is Keras' own, and DVCLive is driven through its
`Live` API (its Keras callback imports TensorFlow).

Why each default is what it is: `params.yaml`, beside `runtime.backend`, and
`benchmarks/RESULTS.md`, "Keras backends".
"""

from __future__ import annotations

import os
import sys

from pipeline.core.errors import AtelierError

BACKENDS = ("tensorflow", "jax")


def backend_of(experiment, runtime) -> str:
    """The experiment's own `backend`, else `runtime.backend`."""
    return experiment.backend or runtime.backend


def use_backend(name: str, *, deterministic: bool = True) -> None:
    """Make `name` this process's Keras backend; refuse if Keras already runs on another.

    Under JAX with `deterministic`, XLA is asked for deterministic GPU kernels (on a CPU its
    kernels are deterministic already).
    """
    if name not in BACKENDS:
        raise AtelierError(f"Unknown Keras backend {name!r}: use one of {', '.join(BACKENDS)}.")
    keras = sys.modules.get("keras")
    if keras is not None:
        current = keras.backend.backend()
        if current != name:
            raise AtelierError(
                f"Keras is already loaded on {current} in this process and cannot switch to "
                f"{name}: run each experiment in its own process (`atelier train <experiment>`, "
                "as `dvc repro` does)."
            )
        return
    os.environ["KERAS_BACKEND"] = name
    if name == "tensorflow":
        return
    if deterministic:
        flags = os.environ.get("XLA_FLAGS", "")
        if "xla_gpu_deterministic_ops" not in flags:
            os.environ["XLA_FLAGS"] = f"{flags} --xla_gpu_deterministic_ops=true".strip()
    # Keras imports TensorFlow whenever it is installed, to seed it (`set_random_seed`) and to
    # recognise its tensors when it serialises a model; on another backend there are none, and
    # the import costs 6 s and 540 MB. Keras' own switch for "TensorFlow is not installed":
    from keras.src.utils import module_utils  # imports Keras, on the backend just set

    module_utils.tensorflow._available = False


def active_backend() -> str:
    """The backend Keras runs on in this process (importing Keras if it is not yet)."""
    import keras

    return keras.backend.backend()
