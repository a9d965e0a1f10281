"""params.yaml schema: each kind of mistake gets a message naming the key, value and rule."""

from __future__ import annotations

import copy
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pipeline.core import metrics
from pipeline.core.errors import ParamsError
from pipeline.core.yamlio import load_yaml
from pipeline.params import Params, RegistryParams, load_params, parse_params

VALID = {
    "base": {"seed": 42},
    "data": {"datasets": ["digits"]},
    "split": {"val_fraction": 0.2, "folds": 0},
    "experiments": {"x": {"dataset": "digits", "model": {"name": "mlp", "units": [8]}}},
}


def problem(raw: dict) -> str:
    """The ParamsError message for `raw`, which must name exactly one problem."""
    with pytest.raises(ParamsError) as caught:
        parse_params(raw)
    message = str(caught.value)
    assert message.startswith("params.yaml has 1 problem:\n"), message
    return message


def edited(**changes) -> dict:
    """A copy of VALID with dotted keys set: edited(**{"split.folds": 1})."""
    raw = copy.deepcopy(VALID)
    for dotted, value in changes.items():
        *parents, leaf = dotted.split(".")
        node = raw
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    return raw


def test_valid_params_parse():
    params = parse_params(VALID)
    assert isinstance(params, Params)
    assert params.experiments["x"].model.units == [8]
    assert params.experiments["x"].epochs == 10  # default


def test_repository_params_yaml_parses(project_root):
    params = load_params(project_root / "params.yaml")
    assert params.data.datasets
    for experiment in params.experiments.values():
        assert experiment.dataset in params.data.datasets
    for name in params.crossval.experiments:
        assert params.experiments[name].dataset == params.crossval.dataset


def test_unknown_top_level_key():
    message = problem(edited(trainig={"epochs": 3}))
    assert "trainig: unknown key; allowed keys under the top level: base, data, split" in message


def test_misspelled_nested_key_suggests_the_right_one():
    message = problem(edited(**{"experiments.x.epochz": 3}))
    assert "experiments.x.epochz: unknown key (did you mean 'epochs'?)" in message
    assert "allowed keys under experiments.x: dataset, model, optimizer" in message


def test_misspelled_model_key_names_the_real_path():
    message = problem(edited(**{"experiments.x.model.unitz": [3]}))
    assert "experiments.x.model.unitz: unknown key (did you mean 'units'?)" in message
    assert "allowed keys under experiments.x.model: name, units, activation" in message


def test_wrong_type():
    message = problem(edited(**{"experiments.x.epochs": "ten"}))
    assert "experiments.x.epochs = 'ten': Input should be a valid integer" in message


def test_strings_are_not_coerced_to_numbers():
    message = problem(edited(**{"experiments.x.batch_size": "32"}))
    assert "experiments.x.batch_size = '32': Input should be a valid integer" in message


@pytest.mark.parametrize(("key", "value"), [("epochs", 0), ("batch_size", -1)])
def test_sizes_must_be_positive(key, value):
    message = problem(edited(**{f"experiments.x.{key}": value}))
    assert f"experiments.x.{key} = {value}: Input should be greater than 0" in message


@pytest.mark.parametrize(
    ("value", "rule"), [(1.5, "Input should be less than 1"), (0, "Input should be greater than 0")]
)
def test_fractions_must_lie_inside_0_1(value, rule):
    message = problem(edited(**{"split.val_fraction": value}))
    assert f"split.val_fraction = {value}: {rule}" in message


def test_unknown_dataset_lists_known_ones():
    message = problem(edited(**{"data.datasets": ["cifar10"]}))
    assert "data.datasets = ['cifar10']: unknown dataset 'cifar10'" in message
    assert (
        "known datasets: apparel, boston_housing, diabetes, digits, fashion_mnist, garments, mnist"
        in message
    )


def test_unknown_model_lists_known_ones():
    message = problem(edited(**{"experiments.x.model": {"name": "resnet"}}))
    assert "experiments.x.model.name = 'resnet': unknown model" in message
    assert (
        "known models: softmax_regression, mlp, cnn, compact_cnn, regressor, multilabel_mlp, "
        "sgd_logistic" in message
    )


def test_experiment_dataset_must_be_prepared():
    message = problem(edited(**{"experiments.x.dataset": "mnist"}))
    assert (
        "experiments.x.dataset is 'mnist', which is not in data.datasets ['digits']: "
        "add it there" in message
    )
    assert "\n  - experiments.x.dataset is 'mnist'" in message
    assert "'seed': 42" not in message  # names the key, does not dump the whole file


def test_one_fold_is_refused():
    message = problem(edited(**{"split.folds": 1}))
    assert "split.folds = 1: must be 0 (no folds) or at least 2" in message


# --- crossval: one dataset, named for DVC's matrix ----------------------------------------------

REGRESSOR = {"dataset": "diabetes", "model": {"name": "regressor", "units": [8]}}


def crossvalidated(*experiments: str, **changes) -> dict:
    """VALID with three folds and `experiments` cross-validated; `changes` as in `edited`."""
    return edited(
        **{
            "split.folds": 3,
            "crossval.experiments": list(experiments),
            "crossval.folds": [0, 1, 2],
            **changes,
        }
    )


def test_crossval_dataset_is_required_when_experiments_are_listed():
    message = problem(crossvalidated("x"))
    assert (
        "crossval.experiments lists ['x'] but crossval.dataset is not set: "
        "set crossval.dataset to 'digits', their dataset" in message
    )


def test_crossval_dataset_missing_over_two_datasets_names_both():
    raw = crossvalidated(
        "x", "y", **{"data.datasets": ["digits", "diabetes"], "experiments.y": REGRESSOR}
    )
    message = problem(raw)
    assert "crossval.dataset is not set: list the experiments of one dataset only" in message
    assert "(they use diabetes, digits)" in message


def test_crossval_experiment_on_another_dataset_is_named():
    raw = crossvalidated(
        "x",
        "y",
        **{
            "data.datasets": ["digits", "diabetes"],
            "experiments.y": REGRESSOR,
            "crossval.dataset": "digits",
        },
    )
    message = problem(raw)
    assert (
        "crossval.experiments names 'y', an experiment on dataset 'diabetes', but "
        "crossval.dataset is 'digits'" in message
    )
    assert "remove 'y' from crossval.experiments, or set crossval.dataset to 'diabetes'" in message


def test_crossval_dataset_matching_its_experiments_parses():
    params = parse_params(crossvalidated("x", **{"crossval.dataset": "digits"}))
    assert params.crossval.dataset == "digits"
    assert params.crossval.experiments == ["x"]


def test_crossval_dataset_is_optional_without_experiments():
    assert parse_params(VALID).crossval.dataset is None
    params = parse_params(edited(crossval={"experiments": [], "folds": []}))
    assert params.crossval.dataset is None


def test_crossval_dataset_must_be_known():
    message = problem(crossvalidated("x", **{"crossval.dataset": "cifar10"}))
    assert "crossval.dataset = 'cifar10': unknown dataset 'cifar10'" in message


def test_crossval_unknown_key_lists_dataset():
    message = problem(edited(**{"crossval.datasets": "digits"}))
    assert "crossval.datasets: unknown key (did you mean 'dataset'?)" in message
    assert "allowed keys under crossval: dataset, experiments, folds" in message


# --- a metric's direction: pipeline.core.metrics' rule ------------------------------------------


@pytest.mark.parametrize(
    ("metric", "lower"),
    [
        ("test_mae", True),
        ("val_loss", True),
        ("test_rmse", True),
        ("val_mae_std", True),
        ("test_accuracy", False),
        ("micro_f1", False),
    ],
)
def test_registry_direction_follows_the_metrics_rule(metric, lower):
    rules = RegistryParams()
    assert rules.lower_is_better(metric) is lower
    assert metrics.lower_is_better(metric) is lower
    assert rules.model_copy(update={"metric": metric}).lower_is_better() is lower


def test_registry_direction_per_task():
    rules = RegistryParams()
    assert not rules.lower_is_better()  # test_accuracy
    assert rules.for_dataset("diabetes").lower_is_better()  # test_mae
    assert not rules.for_dataset("garments").lower_is_better()  # micro_f1


def test_dropout_needs_one_rate_per_layer():
    message = problem(edited(**{"experiments.x.model.dropout": [0.1, 0.2]}))
    assert (
        "experiments.x.model: dropout has 2 rates for 1 hidden layers (units [8]): "
        "give one rate per layer" in message
    )
    assert "model.mlp" not in message  # pydantic's union tag is not a key of params.yaml


def test_missing_required_section():
    raw = copy.deepcopy(VALID)
    del raw["data"]
    assert "data: required key is missing" in problem(raw)


def test_every_problem_is_reported():
    with pytest.raises(ParamsError) as caught:
        parse_params(edited(**{"split.folds": 1, "experiments.x.epochs": 0}))
    message = str(caught.value)
    assert message.startswith("params.yaml has 2 problems:")
    assert "split.folds = 1" in message
    assert "experiments.x.epochs = 0" in message


def test_missing_file(tmp_path):
    path = tmp_path / "params.yaml"
    with pytest.raises(ParamsError, match=r"params\.yaml not found: run from the project root"):
        load_params(path)


def test_invalid_yaml(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("data:\n  datasets: [digits\nsplit: {}\n")
    with pytest.raises(ParamsError) as caught:
        load_params(path)
    assert f"{path} is not valid YAML" in str(caught.value)
    assert "line 3" in str(caught.value)  # points at the place


def test_not_a_mapping(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("- just\n- a list\n")
    with pytest.raises(ParamsError, match="must be a mapping with keys base, data"):
        load_params(path)


def test_error_names_the_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(edited(**{"split.folds": 1})))
    with pytest.raises(ParamsError, match=rf"^{path} has 1 problem:"):
        load_params(path)


def run_cli(cwd, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pipeline", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_cli_check_reports_a_mistake_without_traceback(tmp_path, project_root):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(edited(**{"experiments.x.epochz": 3})))
    result = run_cli(project_root, "--params", str(bad), "check")
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith(f"error: {bad} has 1 problem:")
    assert "experiments.x.epochz: unknown key (did you mean 'epochs'?)" in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""


def test_cli_check_accepts_valid_params(tmp_path, project_root):
    good = tmp_path / "good.yaml"
    good.write_text(yaml.safe_dump(VALID))
    result = run_cli(project_root, "--params", str(good), "check")
    assert result.returncode == 0, result.stderr
    assert f"{good}: OK (1 experiments)" in result.stdout


def test_cli_params_option_after_the_subcommand(tmp_path, project_root):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(edited(**{"split.folds": 1})))
    result = run_cli(project_root, "check", "--params", str(bad))
    assert result.returncode == 2
    assert "split.folds = 1: must be 0 (no folds) or at least 2" in result.stderr


# --- params.yaml read as DVC reads it (YAML 1.2) ------------------------------------------------


def real_params_copy(tmp_path, project_root, old: str, new: str) -> Path:
    """A copy of the repository's params.yaml in `tmp_path` with `old` replaced by `new` once."""
    text = (project_root / "params.yaml").read_text()
    assert text.count(old) == 1, old
    path = tmp_path / "params.yaml"
    path.write_text(text.replace(old, new))
    return path


def test_exponent_learning_rate_is_a_float(tmp_path, project_root):
    path = real_params_copy(tmp_path, project_root, "learning_rate: 0.01", "learning_rate: 1e-3")
    as_pyyaml_reads_it = yaml.safe_load(path.read_text())["experiments"]["diabetes_regressor"]
    assert as_pyyaml_reads_it["learning_rate"] == "1e-3"  # YAML 1.1: a string the schema refuses
    params = load_params(path)
    assert params.experiments["diabetes_regressor"].learning_rate == 0.001


def test_duplicate_key_refused_with_both_lines(tmp_path, project_root):
    path = real_params_copy(tmp_path, project_root, "  seed: 42\n", "  seed: 42\n  seed: 7\n")
    lines = path.read_text().splitlines()
    first = lines.index("  seed: 42") + 1
    with pytest.raises(ParamsError) as caught:
        load_params(path)
    message = str(caught.value)
    assert message.startswith(
        f"{path} sets base.seed twice, at line {first} and at line {first + 1}"
    )
    assert "DVC refuses duplicate keys" in message


def test_repository_params_yaml_writes_each_enabled_experiment_once(project_root):
    """`experiments` holds the enabled experiments themselves: no sets, anchors or merge keys,
    so DVC, `dvc params diff` and the pull-request comment see each setting once."""
    events = list(yaml.parse((project_root / "params.yaml").read_text()))
    assert not [event for event in events if getattr(event, "anchor", None)]  # & and *
    assert not [event for event in events if getattr(event, "value", None) == "<<"]
    raw = load_yaml(project_root / "params.yaml")
    assert "experiment_sets" not in raw
    assert set(load_params(project_root / "params.yaml").experiments) == set(raw["experiments"])


def test_repository_params_yaml_writes_every_effective_setting(project_root):
    """Every key the schema accepts for an experiment and that takes effect for its task and model
    is written out with its value, so `dvc exp run -S` can set it without `+`."""
    from pipeline.params.experiments import TRAINING_KEYS, Experiment

    raw = load_yaml(project_root / "params.yaml")
    for name, written in raw["experiments"].items():
        experiment = Experiment.model_validate(written)
        expected = set(Experiment.model_fields)
        if not experiment.is_keras:
            expected -= {*TRAINING_KEYS, "threshold"}
        elif experiment.task != "multilabel":
            expected -= {"threshold"}
        assert set(written) == expected, name
        assert set(written["model"]) == set(type(experiment.model).model_fields), name
        assert written == experiment.effective_settings(), name


def test_params_with_experiment_sets_point_to_atelier_sets():
    message = problem(edited(**{"experiment_sets": {"mnist": {}}}))
    assert "experiment_sets: unknown key; allowed keys under the top level: base, data" in message
    assert "`atelier sets enable NAME`" in message


def test_make_repro_refuses_bad_params_before_dvc_runs(tmp_path, project_root):
    """`make repro` runs `python -m pipeline check` first: a typo costs no output."""
    make = shutil.which("make")
    assert make is not None, "make is needed (.ci/run installs it)"
    copy = tmp_path / "project"
    ignore = shutil.ignore_patterns("__pycache__")
    shutil.copytree(project_root / "pipeline", copy / "pipeline", ignore=ignore)
    for name in ("Makefile", "dvc.yaml", "dvc.lock", ".dvcignore", "pyproject.toml"):
        shutil.copy2(project_root / name, copy / name)
    (copy / ".dvc").mkdir()
    shutil.copy2(project_root / ".dvc" / "config", copy / ".dvc" / "config")
    real_params_copy(copy, project_root, "  seed: 42\n", "  sede: 1\n")
    subprocess.run(["git", "init", "--quiet"], cwd=copy, check=True, timeout=30)
    # Earlier runs' outputs, one inside each download@<dataset> output: DVC would remove the
    # first stage's before running its command.
    kept = [
        copy / "data" / "raw" / dataset / "kept.txt"
        for dataset in load_yaml(project_root / "params.yaml")["data"]["datasets"]
    ]
    for output in kept:
        output.parent.mkdir(parents=True)
        output.write_text("an earlier run's output\n")
    lock = (copy / "dvc.lock").read_bytes()

    venv = project_root / ".venv"
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    env.pop("PYTHONPATH", None)
    # VENV: the project's environment; -o: never (re)install into it from this copy.
    command = [make, "-o", f"{venv}/.installed", "repro", f"VENV={venv}"]
    result = subprocess.run(command, cwd=copy, env=env, capture_output=True, text=True, timeout=120)

    assert result.returncode == 2, result.stdout + result.stderr
    assert "repro] Error 2" in result.stderr  # the status of `python -m pipeline check`
    assert "base.sede: unknown key (did you mean 'seed'?)" in result.stderr
    assert "Traceback" not in result.stderr
    assert f"{venv}/bin/python -m pipeline check" in result.stdout
    assert "dvc repro" not in result.stdout  # make never started DVC
    assert all(output.read_text() == "an earlier run's output\n" for output in kept)
    assert (copy / "dvc.lock").read_bytes() == lock
