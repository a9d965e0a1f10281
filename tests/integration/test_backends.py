"""Keras backends: the train and evaluate stages on TensorFlow and on JAX, real processes on digits.

Each backend trains and evaluates the same small MLP through `python -m pipeline` and must learn
(test accuracy far above the 0.1 of chance); a JAX run never imports TensorFlow (`-X importtime`
lists every module a process imports), trains the same weights twice from the same seed, and
resumes after a SIGKILL without training an epoch twice. A checkpoint trained on either backend
loads in safe mode on the other, in a process that does not import the project, and predicts
the same probabilities to float tolerance.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from tests.integration.test_train_resume import (
    backed_up_epochs,
    cli_env,
    command,
    copy_project,
    digits_project,
    read_history,
    wait_for_epoch,
)

pytestmark = pytest.mark.slow

PROJECT_ROOT = Path(__file__).resolve().parents[2]
BACKENDS = ("tensorflow", "jax")
SETTINGS = {
    "dataset": "digits",
    "model": {"name": "mlp", "units": [64]},
    "epochs": 8,
    "batch_size": 32,
    "learning_rate": 0.003,
}


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """A project with digits prepared and split, and one experiment per backend."""
    experiments = {f"mlp_{name}": {**SETTINGS, "backend": name} for name in BACKENDS}
    return digits_project(tmp_path_factory.mktemp("backends"), experiments)


def run_stage(root: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """`python -X importtime -m pipeline <args>`: stderr lists every module the process imported."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", *command(*args)[1:]],
        cwd=root,
        env=cli_env() | (env or {}),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def imported(stderr: str) -> set[str]:
    """Top-level packages named by `-X importtime`'s lines (`import time: ... | <module>`)."""
    return {
        line.rsplit("|", 1)[1].strip().split(".")[0]
        for line in stderr.splitlines()
        if line.startswith("import time:") and "|" in line
    }


@pytest.fixture(scope="module")
def trained(project) -> dict[str, dict]:
    """Each backend's experiment trained and evaluated; what each process imported."""
    runs = {}
    for backend in BACKENDS:
        name = f"mlp_{backend}"
        train = run_stage(project, "train", name)
        evaluate = run_stage(project, "evaluate", name)
        runs[backend] = {
            "name": name,
            "summary": json.loads((project / "models" / name / "train.json").read_text()),
            "metrics": json.loads((project / "plots" / name / "evaluation.json").read_text()),
            "imported": imported(train.stderr) | imported(evaluate.stderr),
        }
    return runs


@pytest.mark.parametrize("backend", BACKENDS)
def test_each_backend_trains_and_evaluates_and_records_itself(trained, backend):
    run = trained[backend]
    assert run["metrics"]["test_accuracy"] > 0.8  # chance is 0.1
    assert run["summary"]["backend"] == run["metrics"]["backend"] == backend
    assert run["summary"]["epochs_run"] == SETTINGS["epochs"]
    assert {"keras", backend} <= run["imported"]


def test_a_jax_stage_never_imports_tensorflow(trained):
    assert "tensorflow" not in trained["jax"]["imported"]
    assert "tensorflow" in trained["tensorflow"]["imported"]  # what the check would catch


def test_jax_reuses_compiled_programs_and_trains_the_same_weights(project, trained, tmp_path):
    """Two runs from one seed train the same weights; the second one loads XLA's compiled train
    and evaluation steps from the persistent cache the first one filled."""
    cache_home = tmp_path / "xdg-cache"
    # JAX's own switch for its compiler's debug log, which names each persistent-cache hit.
    env = {"XDG_CACHE_HOME": str(cache_home), "JAX_DEBUG_LOG_MODULES": "jax._src.compiler"}
    first = read_history(project / "models/mlp_jax/history.csv")
    hits = []
    for run in ("cold", "warm"):
        root = copy_project(project, tmp_path / run)
        shutil.rmtree(root / "models")
        done = run_stage(root, "train", "mlp_jax", env=env)
        assert read_history(root / "models/mlp_jax/history.csv") == first
        hits.append(done.stderr.count("Persistent compilation cache hit"))
    entries = {path.name for path in (cache_home / "atelier" / "jax").iterdir()}
    # Bounded (the size limit turns on JAX's eviction, which stamps each entry's last use) and
    # locked for processes that share it.
    assert ".lockfile" in entries and any(name.endswith("-atime") for name in entries), entries
    assert hits[0] == 0 and hits[1] >= 2, hits  # at least the train step and the test step


LOAD_AND_PREDICT = """
import json, sys
import keras, numpy as np
model = keras.saving.load_model(sys.argv[1], safe_mode=True)
proba = model.predict(np.load(sys.argv[2]), verbose=0)
print(json.dumps({"backend": keras.backend.backend(), "proba": np.asarray(proba).tolist(),
                  "project": any(name.split(".")[0] == "pipeline" for name in sys.modules)}))
"""


def predict_on(backend: str, model: Path, x: Path) -> tuple[np.ndarray, dict]:
    env = {**cli_env(), "KERAS_BACKEND": backend}
    done = subprocess.run(
        [sys.executable, "-c", LOAD_AND_PREDICT, str(model), str(x)],
        cwd=x.parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    found = json.loads(done.stdout.strip().splitlines()[-1])
    return np.asarray(found["proba"]), found


@pytest.mark.parametrize("trained_on", BACKENDS)
def test_a_checkpoint_loads_on_the_other_backend_and_predicts_the_same(
    project, trained, trained_on, tmp_path
):
    x = tmp_path / "x.npy"
    np.save(x, np.load(project / "data/prepared/digits/x_test.npy")[:200])
    model = project / "models" / trained[trained_on]["name"] / "best.keras"
    results = {backend: predict_on(backend, model, x) for backend in BACKENDS}
    for backend, (_, found) in results.items():
        assert found["backend"] == backend and not found["project"]
    own, other = (results[backend][0] for backend in BACKENDS)
    assert own.shape == (200, 10)
    np.testing.assert_allclose(own, other, atol=1e-5)


def test_a_killed_jax_run_resumes_without_training_an_epoch_twice(project, tmp_path):
    root = copy_project(project, tmp_path / "killed")
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["experiments"]["mlp_jax"]["epochs"] = 12
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    state_dir = root / "checkpoints" / "mlp_jax"
    log = tmp_path / "first.log"
    with open(log, "w") as output:
        process = subprocess.Popen(
            command("train", "mlp_jax"), cwd=root, env=cli_env(), stdout=output, stderr=output
        )
        try:
            wait_for_epoch(process, state_dir, 4, log)
            process.send_signal(signal.SIGKILL)
        finally:
            process.kill()
            process.wait(timeout=60)
    backed_up = backed_up_epochs(state_dir / "backup")
    kept = {int(row["epoch"]): row for row in read_history(state_dir / "history.csv")}
    assert 4 <= backed_up < 12

    second = subprocess.run(
        command("train", "mlp_jax"), cwd=root, env=cli_env(), capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip

    assert second.returncode == 0, second.stderr[-3000:]
    assert "resuming an interrupted run" in second.stderr
    summary = json.loads((root / "models/mlp_jax/train.json").read_text())
    history = read_history(root / "models/mlp_jax/history.csv")
    assert summary["resumed"] is True and summary["backend"] == "jax"
    assert [int(row["epoch"]) for row in history] == list(range(1, 13))
    assert f"mlp_jax: epoch {backed_up}/12" not in second.stderr  # not trained again
    for epoch in range(1, backed_up + 1):  # the epochs before the kill, kept as they were
        assert history[epoch - 1] == kept[epoch]
