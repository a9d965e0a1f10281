"""params.yaml schema: each kind of mistake gets a message naming the key, value and rule."""

from __future__ import annotations

import copy
import subprocess
import sys

import pytest
import yaml

from pipeline.core.errors import ParamsError
from pipeline.params import Params, load_params, parse_params

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
        "known models: softmax_regression, mlp, cnn, regressor, multilabel_mlp, sgd_logistic"
        in message
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
