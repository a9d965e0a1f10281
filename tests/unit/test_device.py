"""Device selection: the CPU fallback that CI exercises, and the GPU path where one exists."""

import subprocess
import sys

import pytest

from tests.conftest import PROJECT_ROOT

PROBE = """
import json, tensorflow as tf, keras
from pipeline.params import RuntimeParams
from pipeline.modeling.device import configure_device
chosen = configure_device(RuntimeParams(mixed_precision="{mode}"))
chosen["policy"] = keras.mixed_precision.global_policy().name
chosen["visible_gpus"] = len(tf.config.list_physical_devices("GPU"))
print(json.dumps(chosen))
"""


def probe(mode: str) -> dict:
    import json

    done = subprocess.run(
        [sys.executable, "-c", PROBE.format(mode=mode)],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_auto_precision_matches_the_device():
    chosen = probe("auto")
    if chosen["visible_gpus"] == 0:
        assert chosen["device"] == "cpu"
        assert chosen["mixed_precision"] is False
        assert chosen["policy"] == "float32"
    else:
        assert chosen["device"].startswith(f"gpu x{chosen['visible_gpus']}")
        assert chosen["policy"] == ("mixed_float16" if chosen["mixed_precision"] else "float32")


@pytest.mark.gpu
def test_gpu_is_used_with_mixed_precision_when_available():
    chosen = probe("auto")
    assert chosen["visible_gpus"] >= 1, "no GPU visible to TensorFlow"
    assert chosen["device"].startswith("gpu")
    assert chosen["mixed_precision"] is True
    assert chosen["policy"] == "mixed_float16"


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({"HOME": "/home/u"}, "/home/u/.cache/atelier/jax"),
        ({"HOME": "/home/u", "XDG_CACHE_HOME": "/var/cache/u"}, "/var/cache/u/atelier/jax"),
        ({"XDG_CACHE_HOME": "/x", "JAX_COMPILATION_CACHE_DIR": "/shared/jax"}, "/shared/jax"),
        ({"XDG_CACHE_HOME": "/x", "JAX_COMPILATION_CACHE_DIR": ""}, None),  # off
    ],
)
def test_jax_compile_cache_location(monkeypatch, environ, expected):
    from pipeline.modeling.backend import compile_cache_dir

    for name in ("HOME", "XDG_CACHE_HOME", "JAX_COMPILATION_CACHE_DIR"):
        monkeypatch.delenv(name, raising=False)
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    found = compile_cache_dir()
    assert (str(found) if found else None) == expected
