"""Multi-label through the stages: garments rendered by preprocess as arrays, a user's apparel
table of image files copied by download, sigmoid-headed models trained on both (the apparel
images streamed from disk, on each backend) and their evaluation.

Real files throughout: Fashion-MNIST from Debian's package when installed (otherwise a small
synthetic stand-in written as IDX files), PNGs on disk, a real CSV.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from pipeline.core import paths
from pipeline.core.errors import DataError, ParamsError
from pipeline.data.catalog import APPAREL, FASHION_MNIST, GARMENTS, IDX_FILES, FileSpec
from pipeline.params import parse_params
from pipeline.stages.download import DownloadSettings, download
from tests.conftest import IdxKit, prepare_dataset

DEBIAN = Path(FASHION_MNIST.sources[0])
BACKENDS = ("tensorflow", "jax")
SMALL = dataclasses.replace(GARMENTS, extra={**GARMENTS.extra, "n_train": 1500, "n_test": 200})
EXPERIMENT = {
    "dataset": "garments",
    "model": {"name": "multilabel_mlp", "units": [128, 64]},
    "optimizer": "adam",
    "epochs": 15,
    "batch_size": 32,
    "threshold": 0.5,
}


def fashion_source(tmp_path_factory, idx) -> tuple[str, tuple[FileSpec, ...]]:
    """Debian's Fashion-MNIST directory, or synthetic garments-like IDX files when it is absent."""
    if DEBIAN.is_dir():
        return str(DEBIAN), GARMENTS.files
    rng = np.random.default_rng(0)
    arrays = []
    for n in (600, 200):
        images = np.zeros((n, 28, 28), dtype=np.uint8)
        labels = np.arange(n) % 10
        for row, label in enumerate(labels):  # a class-shaped bright block
            images[row, 4 + label : 20 + label // 2, 6:22] = rng.integers(150, 255)
        arrays += [images, labels.astype(np.uint8)]
    files = {name: idx.make(name, array) for name, array in zip(IDX_FILES, arrays, strict=True)}
    directory = idx.write(tmp_path_factory.mktemp("fashion"), files)
    return str(directory), tuple(FileSpec(f.name, f.sha256) for f in files.values())


def prepare(spec, root, settings=None):
    return prepare_dataset(spec, root, download_settings=settings or DownloadSettings(retries=0))


@pytest.fixture(scope="module")
def garments_root(tmp_path_factory):
    source, files = fashion_source(tmp_path_factory, IdxKit())
    root = tmp_path_factory.mktemp("garments")
    meta = prepare(dataclasses.replace(SMALL, sources=(source,), files=files), root)
    return root, meta


def params_for(project_root, experiments: dict, datasets=("garments",)):
    raw = yaml.safe_load((project_root / "params.yaml").read_text())
    raw["data"]["datasets"] = list(datasets)
    raw["experiments"] = experiments
    raw["crossval"] = {"experiments": [], "folds": []}
    return parse_params(raw)


@pytest.fixture(scope="module")
def trained(garments_root, project_root):
    from pipeline.stages.evaluate import evaluate_experiment
    from pipeline.stages.train import train_experiment

    root, _ = garments_root
    params = params_for(project_root, {"garments_mlp": EXPERIMENT})
    summary = train_experiment(params, "garments_mlp", root=root)
    metrics = evaluate_experiment(params, "garments_mlp", root=root)
    return summary, metrics


def test_preprocess_renders_garments_as_arrays_with_label_rows(garments_root):
    root, meta = garments_root
    prepared = paths.prepared_dir("garments", root)
    x_train, y_train = np.load(prepared / "x_train.npy"), np.load(prepared / "y_train.npy")
    assert (meta["n_train"], meta["n_test"], meta["task"]) == (1500, 200, "multilabel")
    assert (meta["kind"], meta["input_shape"]) == ("images", [28, 28, 3])
    assert meta["class_names"] == list(GARMENTS.class_names)
    assert y_train.shape == (1500, 11) and set(np.unique(y_train)) == {0, 1}
    assert (y_train[:, :6].sum(axis=1) == 1).all() and (y_train[:, 6:].sum(axis=1) == 1).all()
    assert meta["label_counts_train"] == y_train.sum(axis=0).tolist()
    # The pixels are arrays: one file per part, not one per image.
    assert (x_train.dtype, x_train.shape) == (np.uint8, (1500, 28, 28, 3))
    assert sorted(p.name for p in prepared.iterdir()) == [
        "meta.json", "x_test.npy", "x_train.npy", "y_test.npy", "y_train.npy",
    ]  # fmt: skip
    # The same pixels and rows that the generator writes as files.
    from pipeline.data.catalog import read_idx_dataset
    from pipeline.data.garments import render_set

    source = read_idx_dataset(paths.raw_dir("garments", root))
    images, labels = render_set(source.x_test, source.y_test, n=200, seed=43)
    assert np.array_equal(images, np.load(prepared / "x_test.npy"))
    assert np.array_equal(labels, np.load(prepared / "y_test.npy"))


def test_multilabel_mlp_learns_far_above_chance(trained):
    summary, metrics = trained
    assert summary["params_count"] == 28 * 28 * 3 * 128 + 128 + 128 * 64 + 64 + 64 * 11 + 11
    # Predicting no label gives micro F1 0, guessing by label frequency about 0.2 and subset
    # accuracy about 0.03 (one colour in six, one item in five).
    assert metrics["micro_f1"] > 0.75, metrics
    assert metrics["subset_accuracy"] > 0.25, metrics
    assert 0 <= metrics["hamming_loss"] < 0.1
    assert metrics["task"] == "multilabel" and metrics["threshold"] == 0.5


def test_multilabel_evaluation_writes_per_label_figures(trained, garments_root):
    root, _ = garments_root
    plots = root / paths.PLOTS_DIR / "garments_mlp"
    assert {p.name for p in plots.iterdir()} == {
        "per_label.csv",
        "label_confusion.png",
        "predictions.png",
        "history.csv",
        "evaluation.json",
    }
    summary = json.loads((root / "metrics/garments_mlp.json").read_text())
    assert list(summary) == ["micro_f1", "macro_f1", "subset_accuracy"]
    with open(plots / "per_label.csv", newline="") as stream:
        rows = list(csv.DictReader(stream))
    assert [row["label"] for row in rows] == list(GARMENTS.class_names)
    assert all(sum(int(row[k]) for k in ("tn", "fp", "fn", "tp")) == 200 for row in rows)
    history = (plots / "history.csv").read_text().splitlines()[0]
    assert history == "epoch,loss,binary_accuracy,val_loss,val_binary_accuracy"
    saved = json.loads((plots / "evaluation.json").read_text())
    assert float(rows[-1]["f1"]) >= 0 and "f1_shoes" not in saved  # per label: the CSV only
    assert {"micro_f1", "macro_f1", "subset_accuracy", "hamming_loss"} <= set(saved)


def test_cnn_gets_a_sigmoid_head_on_a_multilabel_set():
    from pipeline.modeling.models import InputSpec, build_model
    from pipeline.params import CNNParams

    model = build_model(
        CNNParams(name="cnn"),
        InputSpec(shape=(28, 28, 3), num_classes=11, task="multilabel"),
    )
    assert model.output_shape == (None, 11)
    assert model.layers[-1].get_config()["activation"] == "sigmoid"


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"dataset": "fashion_mnist"}, "model 'multilabel_mlp' does not fit dataset"),
        ({"monitor": "val_mae"}, "monitor 'val_mae' is not a multilabel metric"),
        ({"model": {"name": "mlp", "units": [8]}}, "model 'mlp' does not fit dataset 'garments'"),
        ({"threshold": 1.5}, "threshold = 1.5"),
    ],
)
def test_multilabel_experiment_mistakes_are_named(project_root, change, expected):
    with pytest.raises(ParamsError) as caught:
        params_for(
            project_root, {"bad": {**EXPERIMENT, **change}}, datasets=("garments", "fashion_mnist")
        )
    assert expected in str(caught.value)


# --- a user's label table (the real apparel set's layout) ---------------------------------------


def write_apparel(directory: Path, x: np.ndarray, y: np.ndarray) -> Path:
    """Images `x` with label rows `y` in the Kaggle apparel layout: labels.csv beside the photos."""
    from pipeline.data.garments import write_png

    (directory / "photos").mkdir(parents=True)
    lines = ["image," + ",".join(GARMENTS.class_names)]
    for row, (rgb, labels) in enumerate(zip(x, y, strict=True)):
        write_png(directory / "photos" / f"p{row}.png", rgb)
        lines.append(f"photos/p{row}.png," + ",".join(str(int(v)) for v in labels))
    (directory / "labels.csv").write_text("\n".join(lines) + "\n")
    return directory


@pytest.fixture
def apparel_dir(garments_root, tmp_path) -> Path:
    """Some garments as a user's copy of the apparel set: PNG files and a label table."""
    root, _ = garments_root
    prepared = paths.prepared_dir("garments", root)
    x, y = np.load(prepared / "x_train.npy")[:60], np.load(prepared / "y_train.npy")[:60]
    return write_apparel(tmp_path / "apparel", x, y)


@pytest.fixture(scope="module")
def apparel_project(garments_root, project_root, tmp_path_factory) -> Path:
    """A project (the pipeline's code, params.yaml with one apparel experiment per backend) with
    900 garments prepared as image files: the apparel layout, at 28 px."""
    root, _ = garments_root
    prepared = paths.prepared_dir("garments", root)
    x, y = np.load(prepared / "x_train.npy")[:900], np.load(prepared / "y_train.npy")[:900]
    photos = write_apparel(tmp_path_factory.mktemp("photos") / "apparel", x, y)
    project = tmp_path_factory.mktemp("apparel-project")
    code = shutil.ignore_patterns("__pycache__")
    shutil.copytree(project_root / "pipeline", project / "pipeline", ignore=code)
    params = yaml.safe_load((project_root / "params.yaml").read_text())
    params["data"]["datasets"] = ["apparel"]
    params["experiments"] = {
        f"apparel_{backend}": {**EXPERIMENT, "dataset": "apparel", "epochs": 12, "backend": backend}
        for backend in BACKENDS
    }
    params["crossval"] = {"experiments": [], "folds": []}
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    small = dataclasses.replace(APPAREL, extra={**APPAREL.extra, "image_size": 28})
    prepare(small, project, DownloadSettings(mirrors=(str(photos),)))
    return project


@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
def test_multilabel_mlp_learns_from_images_streamed_from_disk(apparel_project, backend):
    """The image-files layout through `python -m pipeline train/evaluate`, one process per
    backend: tf.data on TensorFlow, Pillow batches on JAX; both learn."""
    prepared = paths.prepared_dir("apparel", apparel_project)
    assert np.load(prepared / "x_train.npy").dtype.kind == "U"  # the rows are image paths
    name = f"apparel_{backend}"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"TF_CPP_MIN_LOG_LEVEL": "2"}
    for stage in ("train", "evaluate"):
        done = subprocess.run(
            [sys.executable, "-m", "pipeline", stage, name],
            cwd=apparel_project,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert done.returncode == 0, done.stderr[-3000:]
    metrics = json.loads((apparel_project / paths.PLOTS_DIR / name / "evaluation.json").read_text())
    assert metrics["backend"] == backend
    assert metrics["micro_f1"] > 0.6, metrics  # guessing by label frequency: about 0.2
    assert (apparel_project / paths.PLOTS_DIR / name / "predictions.png").is_file()


def test_apparel_table_is_copied_checked_and_split(apparel_dir, tmp_path):
    settings = DownloadSettings(mirrors=(str(apparel_dir.parent), str(apparel_dir)))
    meta = prepare(APPAREL, tmp_path / "project", settings)
    assert (meta["n_train"], meta["n_test"]) == (48, 12)
    assert meta["input_shape"] == [112, 112, 3]  # the seed's image size
    raw = paths.raw_dir("apparel", tmp_path / "project")
    assert (raw / "labels.csv").read_text().splitlines()[1].startswith("images/00000.png,")


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (lambda t: t.replace("photos/p3.png", "photos/missing.png"), "row 4 (line 5): image"),
        (lambda t: t.replace(",shoes", ",boots"), "label column(s) shoes missing"),
        (
            lambda t: re.sub(r"(p5\.png,[01,]*)[01]\n", r"\g<1>2\n", t),
            "value '2' is not 0 or 1",
        ),
    ],
    ids=["missing-image", "missing-column", "not-binary"],
)
def test_bad_apparel_tables_are_refused_and_leave_nothing(apparel_dir, tmp_path, edit, expected):
    csv_path = apparel_dir / "labels.csv"
    csv_path.write_text(edit(csv_path.read_text()))
    out = tmp_path / "raw" / "apparel"
    with pytest.raises(DataError) as caught:
        download(APPAREL, out, DownloadSettings(mirrors=(str(apparel_dir),)))
    assert expected in str(caught.value) and str(csv_path) in str(caught.value)
    assert not out.exists()


def test_apparel_without_a_mirror_says_how_to_get_it(tmp_path):
    with pytest.raises(DataError, match="list that directory in params.yaml `data.mirrors`"):
        download(APPAREL, tmp_path / "raw", DownloadSettings(mirrors=(str(tmp_path),)))
