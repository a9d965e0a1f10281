"""MNIST end to end, and the experiment-set switch (`atelier sets enable mnist`) that keeps it out
of the default run.

MNIST cannot be fetched on an offline machine, so the test serves MNIST-layout IDX files over a
local HTTP server, listed in `data.mirrors` as a user would list a copy. The images are real
handwritten digits — scikit-learn's bundled 8×8 digits, scaled up and padded to MNIST's 28×28 —
so the experiments of the built-in `mnist` set have something to learn. Their checksums
differ from MNIST's, so the catalog entry is pinned to the fixture's for the test.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess

import numpy as np
import pytest
import yaml

from pipeline.core import paths
from pipeline.data.catalog import CATALOG, IDX_FILES, MNIST, FileSpec
from pipeline.params import load_params, parse_params
from pipeline.params.sets import load_sets
from pipeline.params.switch import enable_set
from pipeline.stages.download import DownloadSettings, download
from tests.conftest import prepare_dataset


def mnist_like_files(make_idx) -> dict:
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = np.kron(digits.images, np.ones((3, 3)))  # 8×8 → 24×24
    images = np.pad(images, ((0, 0), (2, 2), (2, 2)))  # → 28×28, a border like MNIST's
    images = np.round(images * 255 / 16).astype(np.uint8)
    labels = digits.target.astype(np.uint8)
    cut = 1400
    arrays = (images[:cut], labels[:cut], images[cut:], labels[cut:])
    return {name: make_idx(name, array) for name, array in zip(IDX_FILES, arrays, strict=True)}


@pytest.fixture
def served_mnist(http_server, monkeypatch, idx):
    files = mnist_like_files(idx.make)
    for file in files.values():
        http_server.serve(file.name, file.gz)
    pinned = tuple(FileSpec(file.name, file.sha256) for file in files.values())
    monkeypatch.setitem(CATALOG, "mnist", dataclasses.replace(MNIST, files=pinned))
    return http_server


def test_mnist_set_trains_and_evaluates_end_to_end(served_mnist, project_root, tmp_path):
    from pipeline.stages.evaluate import evaluate_experiment
    from pipeline.stages.train import train_experiment

    raw = yaml.safe_load((project_root / "params.yaml").read_text())
    experiment = {**load_sets()["mnist"].experiments["mnist_mlp64_32"], "epochs": 4, "patience": 2}
    # In this process, where other tests have loaded Keras on TensorFlow (a process has one
    # backend); the set's own backend, JAX, is tested in processes of its own (test_backends).
    experiment["backend"] = "tensorflow"
    raw["data"] |= {"datasets": ["mnist"], "mirrors": [served_mnist.url]}
    raw["experiments"] = {"mnist_mlp64_32": experiment}
    raw["crossval"] = {"experiments": [], "folds": []}
    params = parse_params(raw)
    spec = CATALOG["mnist"]

    settings = DownloadSettings(mirrors=tuple(params.data.mirrors), retries=0, timeout_s=5)
    meta = prepare_dataset(spec, tmp_path, download_settings=settings)
    summary = train_experiment(params, "mnist_mlp64_32", root=tmp_path)
    metrics = evaluate_experiment(params, "mnist_mlp64_32", root=tmp_path)

    assert served_mnist.requests("train-images-idx3-ubyte.gz") == 1
    assert meta["input_shape"] == [28, 28] and meta["n_test"] == 397
    assert summary["params_count"] == 784 * 64 + 64 + 64 * 32 + 32 + 32 * 10 + 10  # seed 004
    assert metrics["test_accuracy"] > 0.6, metrics  # chance is 0.1
    assert json.loads((tmp_path / "plots/mnist_mlp64_32/evaluation.json").read_text()) == metrics


def test_mnist_download_with_a_corrupt_file_fails_and_leaves_nothing(http_server, idx, tmp_path):
    files = mnist_like_files(idx.make)
    for file in files.values():
        http_server.serve(file.name, file.gz)
    # The real catalog entry: the fixture's payloads do not have MNIST's checksums.
    settings = DownloadSettings(mirrors=(http_server.url,), retries=0, timeout_s=5)
    out = paths.raw_dir("mnist", tmp_path)
    with pytest.raises(Exception, match="train-images-idx3-ubyte.gz") as caught:
        download(MNIST, out, settings)
    assert "payload SHA-256" in str(caught.value)
    assert not out.exists()


def test_default_run_leaves_mnist_out_and_one_switch_brings_it_in(project_root, tmp_path):
    default = load_params(project_root / "params.yaml")
    assert not any(exp.dataset == "mnist" for exp in default.experiments.values())
    assert "mnist" not in default.data.datasets
    assert {"mnist_mlp512", "mnist_mlp64_32", "mnist_cnn"} <= set(load_sets()["mnist"].experiments)

    (tmp_path / "params.yaml").write_text((project_root / "params.yaml").read_text())
    (tmp_path / "dvc.yaml").write_text((project_root / "dvc.yaml").read_text())
    enable_set("mnist", tmp_path / "params.yaml")  # what `atelier sets enable mnist` runs
    params = load_params(tmp_path / "params.yaml")
    assert "mnist" in params.data.datasets
    assert {"mnist_mlp512", "mnist_mlp64_32", "mnist_cnn"} <= set(params.experiments)
    assert set(default.experiments) < set(params.experiments)

    # DVC iterates the same experiments: the MNIST stages exist only once the set is enabled.
    subprocess.run(["git", "init", "--quiet"], cwd=tmp_path, check=True)
    subprocess.run(["dvc", "init", "--quiet"], cwd=tmp_path, check=True)
    listed = subprocess.run(
        ["dvc", "stage", "list", "--name-only"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert {"download@mnist", "train@mnist_cnn", "evaluate@mnist_mlp512"} <= set(listed)
    default_stages = subprocess.run(
        ["dvc", "stage", "list", "--name-only"],
        cwd=project_root,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert not any("mnist_" in stage or stage.endswith("@mnist") for stage in default_stages)
