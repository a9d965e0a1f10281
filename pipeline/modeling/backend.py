"""The Keras backend a stage runs on, chosen before Keras is first imported.

Keras 3 runs the same models on TensorFlow or JAX and reads `KERAS_BACKEND` once, when it is
first imported; a process therefore has one backend. The train and evaluate stages call
`use_backend` with the experiment's `backend` (or `runtime.backend`) before they import Keras,
and under JAX nothing in the training path imports TensorFlow: inputs are NumPy batches
(`pipeline.modeling.batches`), the optimizer is Keras' own, and DVCLive is driven through its
`Live` API (its Keras callback imports TensorFlow).

Under JAX, compiled programs are kept between processes in JAX's persistent compilation cache
(`compile_cache_dir`), so a stage that runs again with the same model, batch size and shapes (a
`dvc repro --force`, an experiment's next run) skips XLA's compilation of its train and evaluation
steps (1.5–2.5 s of the seed MLP's 13 s stage on a CPU).

Why each default is what it is: `params.yaml`, beside `runtime.backend`, and
`benchmarks/RESULTS.md`, "Keras backends".
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from pipeline.core.errors import AtelierError

BACKENDS = ("tensorflow", "jax")

# JAX's own settings, read from the environment when JAX is imported; a user's values win.
COMPILE_CACHE_ENV = "JAX_COMPILATION_CACHE_DIR"
# Programs that compile faster than this are not worth a file each.
COMPILE_CACHE_MIN_SECONDS = "0.2"
# A size bound turns on JAX's eviction of the least recently used entries, and with it a file
# lock around every read and write, so that processes sharing the cache (a sweep's points, the
# workers of a pool on one host) never read an entry another is still writing.
COMPILE_CACHE_MAX_BYTES = str(2 * 1024**3)


def compile_cache_dir() -> Path | None:
    """Where JAX keeps compiled programs: `$JAX_COMPILATION_CACHE_DIR` when set (empty: no
    cache), else `atelier/jax` in the user's cache directory (`$XDG_CACHE_HOME`, `~/.cache`)."""
    if COMPILE_CACHE_ENV in os.environ:
        return Path(os.environ[COMPILE_CACHE_ENV]) if os.environ[COMPILE_CACHE_ENV] else None
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "atelier" / "jax"


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
    cache = compile_cache_dir()
    if cache is not None:
        os.environ[COMPILE_CACHE_ENV] = str(cache)
        os.environ.setdefault(
            "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", COMPILE_CACHE_MIN_SECONDS
        )
        os.environ.setdefault("JAX_COMPILATION_CACHE_MAX_SIZE", COMPILE_CACHE_MAX_BYTES)
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
