"""Regression (seed 004): datasets, training-row standardisation, the regressor, K-fold, metrics.

Real stages on real data: scikit-learn's bundled diabetes set, and a Boston-housing archive served
by a local HTTP server (the canonical file cannot be fetched here, so a generated archive in its
layout stands in, with its own checksum pinned for the test).
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json

import numpy as np
import pytest
import yaml

from pipeline.core import paths
from pipeline.core.errors import DataError, ParamsError
from pipeline.data.catalog import BOSTON_HOUSING, CATALOG, DIABETES, FileSpec
from pipeline.params import parse_params
from pipeline.stages.download import DownloadSettings, download
from pipeline.stages.split import SplitSettings, split
from tests.conftest import prepare_dataset

FAST = DownloadSettings(retries=0, timeout_s=5)
REGRESSOR = {
    "dataset": "diabetes",
    "model": {"name": "regressor", "units": [64, 32]},
    "optimizer": "adam",
    "learning_rate": 0.01,
    "epochs": 60,
    "batch_size": 32,
    "patience": 15,
    "monitor": "val_mae",
}


def regression_params(project_root, experiments: dict, *, folds: int = 3, datasets=None):
    params = yaml.safe_load((project_root / "params.yaml").read_text())
    params["data"]["datasets"] = datasets or ["diabetes"]
    params["split"]["folds"] = folds
    params["experiments"] = experiments
    params["crossval"] = {
        "dataset": "diabetes",
        "experiments": list(experiments),
        "folds": list(range(folds)),
    }
    return parse_params(params)


def prepare(spec, root, *, folds: int = 3):
    prepare_dataset(spec, root, download_settings=FAST, split_settings=SplitSettings(folds=folds))


@pytest.fixture(scope="module")
def diabetes_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("diabetes")
    prepare(DIABETES, root)
    return root


@pytest.fixture(scope="module")
def trained(diabetes_root, project_root):
    from pipeline.stages.evaluate import evaluate_experiment
    from pipeline.stages.train import train_experiment

    params = regression_params(project_root, {"diabetes_regressor": REGRESSOR})
    summary = train_experiment(params, "diabetes_regressor", root=diabetes_root)
    metrics = evaluate_experiment(params, "diabetes_regressor", root=diabetes_root)
    return params, summary, metrics


# --- data ---------------------------------------------------------------------------------------


def test_diabetes_is_prepared_as_raw_float_features(diabetes_root):
    prepared = paths.prepared_dir("diabetes", diabetes_root)
    meta = json.loads((prepared / "meta.json").read_text())
    x_train, x_test = np.load(prepared / "x_train.npy"), np.load(prepared / "x_test.npy")
    assert meta["task"] == "regression" and meta["kind"] == "tabular"
    assert meta["n_train"] + meta["n_test"] == 442
    assert x_train.dtype == np.float32 and x_train.shape[1] == 10
    assert meta["feature_names"][:3] == ["age", "sex", "bmi"]
    assert x_train[:, 0].max() > 50  # raw ages, not scikit-learn's pre-scaled copy
    assert len(x_test) == meta["n_test"]


def test_standardisation_statistics_come_from_the_training_rows_only(diabetes_root, tmp_path):
    prepared = paths.prepared_dir("diabetes", diabetes_root)
    out = paths.split_dir("diabetes", diabetes_root)
    stats = json.loads((out / "standardize.json").read_text())
    x = np.load(prepared / "x_train.npy").astype(np.float64)
    train_idx = np.load(out / "train_idx.npy")
    np.testing.assert_allclose(stats["mean"], x[train_idx].mean(axis=0))
    np.testing.assert_allclose(stats["std"], x[train_idx].std(axis=0))
    assert stats["rows"] == len(train_idx)
    # The validation rows are not part of it...
    assert not np.allclose(stats["mean"], x.mean(axis=0))

    # ...and neither is the test set: changing it changes nothing.
    altered = tmp_path / "prepared"
    altered.mkdir()
    for name in ("x_train.npy", "y_train.npy", "y_test.npy", "meta.json"):
        (altered / name).write_bytes((prepared / name).read_bytes())
    np.save(altered / "x_test.npy", np.load(prepared / "x_test.npy") * 1000 + 7)
    split(prepared_dir=altered, out_dir=tmp_path / "split", settings=SplitSettings(folds=3))
    assert json.loads((tmp_path / "split" / "standardize.json").read_text()) == stats


def test_kfold_assignment_partitions_the_training_rows(diabetes_root):
    out = paths.split_dir("diabetes", diabetes_root)
    folds = np.load(out / "folds.npy")
    n = json.loads((paths.prepared_dir("diabetes", diabetes_root) / "meta.json").read_text())[
        "n_train"
    ]
    assert len(folds) == n
    sizes = np.bincount(folds)
    assert len(sizes) == 3 and sizes.max() - sizes.min() <= 1


def test_folds_above_the_number_of_rows_are_refused(diabetes_root, tmp_path):
    prepared = paths.prepared_dir("diabetes", diabetes_root)
    with pytest.raises(DataError, match="split.folds=500 is more than the 353 training rows"):
        split(prepared_dir=prepared, out_dir=tmp_path / "split", settings=SplitSettings(folds=500))
    assert not (tmp_path / "split").exists()


def boston_archive(rows: int = 506) -> bytes:
    rng = np.random.default_rng(3)
    x = rng.normal(size=(rows, 13)) * 10 + 50
    y = x[:, 5] * 0.3 - x[:, 12] * 0.2 + rng.normal(size=rows)
    buffer = io.BytesIO()
    np.savez(buffer, x=x, y=y)
    return buffer.getvalue()


def test_boston_housing_downloads_verifies_and_splits_like_keras(http_server, tmp_path):
    body = boston_archive()
    http_server.serve("boston_housing.npz", body)
    spec = dataclasses.replace(
        BOSTON_HOUSING,
        files=(FileSpec("boston_housing.npz", hashlib.sha256(body).hexdigest()),),
        sources=(http_server.url,),
    )
    prepare(spec, tmp_path)

    prepared = paths.prepared_dir("boston_housing", tmp_path)
    meta = json.loads((prepared / "meta.json").read_text())
    assert (meta["n_train"], meta["n_test"]) == (404, 102)  # the seed's split
    with np.load(io.BytesIO(body)) as archive:
        x = archive["x"]
    order = np.arange(506)
    np.random.RandomState(777).shuffle(order)  # keras.datasets.boston_housing, seed=777
    np.testing.assert_allclose(np.load(prepared / "x_test.npy"), x[order][404:], rtol=1e-6)
    assert (paths.split_dir("boston_housing", tmp_path) / "standardize.json").is_file()


def test_corrupt_boston_download_is_refused_and_leaves_nothing(http_server, tmp_path):
    http_server.serve("boston_housing.npz", boston_archive()[:-100])
    spec = dataclasses.replace(BOSTON_HOUSING, sources=(http_server.url,))
    with pytest.raises(DataError, match="boston_housing.npz") as caught:
        download(spec, tmp_path / "raw", FAST)
    assert "payload SHA-256" in str(caught.value) and "data.mirrors" in str(caught.value)
    assert not (tmp_path / "raw").exists()


def test_catalog_marks_the_regression_sets():
    assert CATALOG["diabetes"].task == CATALOG["boston_housing"].task == "regression"
    assert CATALOG["fashion_mnist"].task == "classification"


# --- params -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"monitor": "val_accuracy"}, "monitor 'val_accuracy' is not a regression metric"),
        ({"model": {"name": "mlp", "units": [8]}}, "model 'mlp' does not fit dataset 'diabetes'"),
        ({"dataset": "digits"}, "model 'regressor' does not fit dataset 'digits'"),
        ({"model": {"name": "regressor", "units": [8], "dropout": [0.1, 0.2]}}, "dropout has 2"),
    ],
    ids=["classification-metric", "classifier-on-tabular", "regressor-on-images", "dropout"],
)
def test_regression_experiment_mistakes_are_named(project_root, change, expected):
    with pytest.raises(ParamsError, match="experiments.bad") as caught:
        regression_params(
            project_root, {"bad": {**REGRESSOR, **change}}, datasets=["diabetes", "digits"]
        )
    assert expected in str(caught.value)


@pytest.mark.parametrize(
    ("folds", "crossval_folds", "expected"),
    [
        (1, None, "split.folds = 1: must be 0 (no folds) or at least 2"),
        (3, [0, 1], "crossval.folds is [0, 1] but split.folds=3 needs [0, 1, 2]"),
        (0, [], "split.folds is 0: set split.folds to 2 or more"),
    ],
)
def test_fold_settings_are_checked(project_root, folds, crossval_folds, expected):
    params = yaml.safe_load((project_root / "params.yaml").read_text())
    params["data"]["datasets"] = ["diabetes"]
    params["split"]["folds"] = folds
    params["experiments"] = {"reg": REGRESSOR}
    params["crossval"] = {"experiments": ["reg"], "folds": crossval_folds or []}
    with pytest.raises(ParamsError) as caught:
        parse_params(params)
    assert expected in str(caught.value)


def test_crossval_of_an_unknown_experiment_is_named(project_root):
    params = yaml.safe_load((project_root / "params.yaml").read_text())
    params["data"]["datasets"] = ["diabetes"]
    params["experiments"] = {"reg": REGRESSOR}
    params["crossval"] = {"experiments": ["nope"], "folds": [0, 1, 2]}
    with pytest.raises(ParamsError, match="crossval.experiments names 'nope'"):
        parse_params(params)


# --- training, evaluation, K-fold ----------------------------------------------------------------


def test_regressor_learns_far_better_than_the_mean(trained, diabetes_root):
    _, summary, metrics = trained
    prepared = paths.prepared_dir("diabetes", diabetes_root)
    y_train, y_test = np.load(prepared / "y_train.npy"), np.load(prepared / "y_test.npy")
    mean_mae = float(np.mean(np.abs(y_test - y_train.mean())))
    assert metrics["test_mae"] < 0.8 * mean_mae, (metrics["test_mae"], mean_mae)
    assert metrics["test_r2"] > 0.3
    assert summary["params_count"] == (10 * 64 + 64) + (64 * 32 + 32) + (32 + 1)  # seed: 64-32-1
    assert np.isclose(metrics["test_rmse"] ** 2, metrics["test_mse"], rtol=1e-4)
    assert {"val_mae", "val_loss", "best_epoch", "task"} <= set(metrics)


def test_saved_regressor_standardises_raw_features_itself(trained, diabetes_root):
    import keras

    model_path = paths.model_dir("diabetes_regressor", diabetes_root) / "best.keras"
    model = keras.saving.load_model(model_path, safe_mode=True)
    stats = json.loads(
        (paths.split_dir("diabetes", diabetes_root) / "standardize.json").read_text()
    )
    layer = model.get_layer("standardize")
    np.testing.assert_allclose(np.ravel(layer.mean), stats["mean"], rtol=1e-5)
    np.testing.assert_allclose(np.sqrt(np.ravel(layer.variance)), stats["std"], rtol=1e-5)


def test_regression_plot_data_and_history(trained, diabetes_root):
    plots = diabetes_root / paths.PLOTS_DIR / "diabetes_regressor"
    assert {p.name for p in plots.iterdir()} == {
        "predictions.csv",
        "scatter.png",
        "residuals.png",
        "history.csv",
        "evaluation.json",
    }
    summary = json.loads((diabetes_root / "metrics/diabetes_regressor.json").read_text())
    assert list(summary) == ["test_mae", "test_rmse", "test_r2"]
    evaluation = json.loads((plots / "evaluation.json").read_text())
    assert summary == {key: evaluation[key] for key in summary}
    rows = (plots / "predictions.csv").read_text().splitlines()
    assert rows[0] == "actual,predicted,residual"
    n_test = len(np.load(paths.prepared_dir("diabetes", diabetes_root) / "y_test.npy"))
    assert len(rows) == n_test + 1
    assert (plots / "history.csv").read_text().splitlines()[0] == "epoch,loss,mae,val_loss,val_mae"


def test_each_fold_trains_on_the_other_folds_and_the_aggregate_reports_them(trained, diabetes_root):
    from pipeline.stages.crossval import crossval_experiment
    from pipeline.stages.train import train_experiment

    params = trained[0]
    params = params.model_copy(
        update={
            "experiments": {
                "diabetes_regressor": params.experiments["diabetes_regressor"].model_copy(
                    update={"epochs": 25}
                )
            }
        }
    )
    folds = np.load(paths.split_dir("diabetes", diabetes_root) / "folds.npy")
    for fold in range(3):
        summary = train_experiment(params, "diabetes_regressor", root=diabetes_root, fold=fold)
        assert summary["fold"] == fold
        assert summary["n_train"] == int(np.sum(folds != fold))
        assert (
            diabetes_root / "models/folds" / f"diabetes_regressor-fold{fold}/best.keras"
        ).is_file()

    metrics = crossval_experiment(params, "diabetes_regressor", root=diabetes_root)

    written = json.loads((diabetes_root / "metrics/crossval/diabetes_regressor.json").read_text())
    assert written == metrics
    assert [fold["fold"] for fold in metrics["per_fold"]] == [0, 1, 2]
    per_fold = [fold["test_mae"] for fold in metrics["per_fold"]]
    assert np.isclose(metrics["test_mae_mean"], np.mean(per_fold), atol=1e-5)
    assert np.isclose(metrics["test_mae_std"], np.std(per_fold), atol=1e-5)
    # Averaging the fold models' predictions is never worse than their mean MAE (convexity).
    assert metrics["ensemble_test_mae"] <= metrics["test_mae_mean"] + 1e-6
    assert metrics["folds"] == 3


def test_fold_of_an_unsplit_dataset_is_explained(trained, diabetes_root, tmp_path):
    from pipeline.stages.train import load_train_data

    with pytest.raises(DataError, match="Fold 7 does not exist"):
        load_train_data("diabetes", diabetes_root, fold=7)
