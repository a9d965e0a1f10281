"""Where and how a Keras training runs: device, memory growth, precision, seeding, versions.

TensorFlow and Keras are imported inside the functions, so importing this module stays cheap.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from pipeline.params import RuntimeParams


def configure_device(runtime: RuntimeParams) -> dict:
    """Pick the device, memory growth and precision; return what was chosen, for the record.

    Mixed precision (`mixed_float16`) is on with `runtime.mixed_precision: on`, or with `auto`
    when a visible GPU has tensor cores (compute capability 7.0 or later).
    """
    import keras
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    for gpu in gpus:
        with contextlib.suppress(RuntimeError):  # already initialised in this process
            tf.config.experimental.set_memory_growth(gpu, True)
    tensor_cores = False
    names = []
    for gpu in gpus:
        details = tf.config.experimental.get_device_details(gpu)
        names.append(details.get("device_name", gpu.name))
        capability = details.get("compute_capability") or (0, 0)
        tensor_cores = tensor_cores or tuple(capability) >= (7, 0)
    mixed = runtime.mixed_precision == "on" or (
        runtime.mixed_precision == "auto" and bool(gpus) and tensor_cores
    )
    keras.mixed_precision.set_global_policy("mixed_float16" if mixed else "float32")
    device = f"gpu x{len(gpus)} ({', '.join(names)})" if gpus else "cpu"
    return {
        "device": device,
        "gpus": len(gpus),
        "mixed_precision": mixed,
        "gpu": ", ".join(names) if names else None,
        "cpu_isa": cpu_isa(),
    }


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
    """Seed Python, NumPy and the backend; with `deterministic`, also TensorFlow's op order."""
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(seed)
    if deterministic:
        tf.config.experimental.enable_op_determinism()


def library_versions(*, keras_too: bool) -> dict:
    """scikit-learn's version, and TensorFlow's and Keras' with `keras_too`, for the record."""
    from importlib import metadata

    # From the package metadata: importing scikit-learn would cost the Keras path a second.
    versions = {"sklearn_version": metadata.version("scikit-learn")}
    if keras_too:
        import keras
        import tensorflow as tf

        versions |= {"tensorflow_version": tf.__version__, "keras_version": keras.__version__}
    return versions
