"""Where and how a Keras training runs: device, memory growth, precision, seeding, versions.

The backend's library (TensorFlow or JAX) and Keras are imported inside the functions, so
importing this module stays cheap; only the backend Keras runs on is imported.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from pipeline.params import RuntimeParams


def configure_device(runtime: RuntimeParams) -> dict:
    """Pick the device, memory growth and precision; return what was chosen, for the record.

    Mixed precision is on with `runtime.mixed_precision: on`, or with `auto` when a visible GPU
    has tensor cores (compute capability 7.0 or later): `mixed_bfloat16` on GPUs that have
    bfloat16 (8.0 or later) under JAX, else `mixed_float16` (TensorFlow's policy, with Keras'
    loss scaling).
    """
    import keras

    backend = keras.backend.backend()
    names, capabilities = _jax_gpus() if backend == "jax" else _tensorflow_gpus()
    tensor_cores = any(capability >= (7, 0) for capability in capabilities)
    mixed = runtime.mixed_precision == "on" or (
        runtime.mixed_precision == "auto" and bool(names) and tensor_cores
    )
    bfloat16 = backend == "jax" and bool(capabilities) and min(capabilities) >= (8, 0)
    policy = ("mixed_bfloat16" if bfloat16 else "mixed_float16") if mixed else "float32"
    keras.mixed_precision.set_global_policy(policy)
    device = f"gpu x{len(names)} ({', '.join(names)})" if names else "cpu"
    return {
        "device": device,
        "gpus": len(names),
        "mixed_precision": mixed,
        "precision": policy,
        "backend": backend,
        "gpu": ", ".join(names) if names else None,
        "cpu_isa": cpu_isa(),
    }


def _tensorflow_gpus() -> tuple[list[str], list[tuple[int, int]]]:
    """The GPUs TensorFlow sees (memory growth on), their names and compute capabilities."""
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    names, capabilities = [], []
    for gpu in gpus:
        with contextlib.suppress(RuntimeError):  # already initialised in this process
            tf.config.experimental.set_memory_growth(gpu, True)
        details = tf.config.experimental.get_device_details(gpu)
        names.append(details.get("device_name", gpu.name))
        capabilities.append(tuple(details.get("compute_capability") or (0, 0)))
    return names, capabilities


def _jax_gpus() -> tuple[list[str], list[tuple[int, int]]]:
    """The GPUs JAX sees, their names and compute capabilities."""
    import jax

    try:
        gpus = jax.devices("gpu")
    except RuntimeError:  # no GPU backend in this jaxlib, or no GPU
        return [], []
    names = [str(getattr(gpu, "device_kind", gpu)) for gpu in gpus]
    capabilities = []
    for gpu in gpus:
        major, _, minor = str(getattr(gpu, "compute_capability", "0.0")).partition(".")
        capabilities.append((int(major or 0), int(minor or 0)))
    return names, capabilities


# The x86 instruction sets oneDNN picks its kernels by, widest first, with their cpuinfo flag.
ISA_FLAGS = (("avx512", "avx512f"), ("avx2", "avx2"), ("avx", "avx"), ("sse41", "sse4_1"))


def cpu_isa(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """The widest instruction set TensorFlow's CPU kernels can use here: the CPU's, lowered by
    `ONEDNN_MAX_CPU_ISA` when set. Two runs on different sets differ by noise in their figures,
    which the metric diff points out."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return "unknown"
    flags = set()
    for line in text.splitlines():
        if line.startswith("flags"):
            flags = set(line.partition(":")[2].split())
            break
    native = next((name for name, flag in ISA_FLAGS if flag in flags), "other")
    cap = os.environ.get("ONEDNN_MAX_CPU_ISA", "").lower().replace("_", "").replace(".", "")
    order = [name for name, _ in ISA_FLAGS]
    capped = next((name for name in order if cap.startswith(name)), None)
    if capped and native in order and order.index(capped) > order.index(native):
        return capped
    return native


def seed_everything(seed: int, deterministic: bool) -> None:
    """Seed Python, NumPy and the backend; with `deterministic`, also TensorFlow's op order
    (JAX's CPU kernels are deterministic; its GPU ones are asked to be by `use_backend`)."""
    import keras

    keras.utils.set_random_seed(seed)
    if deterministic and keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()


def library_versions(*, keras_too: bool) -> dict:
    """scikit-learn's version, and with `keras_too` Keras', its backend and the backend's
    library's (TensorFlow's or JAX's), for the record."""
    from importlib import metadata

    # From the package metadata: importing scikit-learn would cost the Keras path a second.
    versions = {"sklearn_version": metadata.version("scikit-learn")}
    if keras_too:
        import keras

        backend = keras.backend.backend()
        versions |= {"keras_version": keras.__version__, "backend": backend}
        if backend == "tensorflow":
            import tensorflow as tf

            versions["tensorflow_version"] = tf.__version__
        else:
            versions[f"{backend}_version"] = metadata.version(backend)
    return versions
