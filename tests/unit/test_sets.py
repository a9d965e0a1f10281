"""The built-in experiment sets and `atelier sets`: a catalog of experiments written out in full,
a switch that edits params.yaml line for line, and a params.yaml that DVC's `-S` rewrites
line for line.

DVC's `dvc exp run -S key=value` writes params.yaml through `dvc.utils.hydra.apply_overrides`;
the fast tests call that function, the slow one runs the real `dvc exp run` in a git repository.
"""

from __future__ import annotations

import difflib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.core.errors import AtelierError, ParamsError
from pipeline.core.yamlio import load_yaml, loads_yaml
from pipeline.params import load_params
from pipeline.params.experiments import Experiment
from pipeline.params.sets import load_sets
from pipeline.params.switch import disable_set, enable_set

PROJECT_ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
SETS = load_sets()
DEFAULT = load_yaml(PROJECT_ROOT / "params.yaml")
ENABLED = [name for name, found in SETS.items() if found.state(DEFAULT["experiments"]) == "enabled"]
DISABLED = [name for name in SETS if name not in ENABLED]


def env() -> dict[str, str]:
    variables = {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "DVC_NO_ANALYTICS": "1",
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "CUDA_VISIBLE_DEVICES": "",
    }
    variables.pop("PYTHONPATH", None)
    return variables


def run(root: Path, *command: str, check: bool = True, timeout: int = 120):
    result = subprocess.run(
        command, cwd=root, env=env(), capture_output=True, text=True, timeout=timeout
    )
    if check:
        assert result.returncode == 0, f"{' '.join(command)}:\n{result.stdout}\n{result.stderr}"
    return result


def atelier(root: Path, *args: str, check: bool = True):
    return run(root, str(BIN / "atelier"), *args, check=check)


@pytest.fixture
def params_file(tmp_path) -> Path:
    path = tmp_path / "params.yaml"
    shutil.copy2(PROJECT_ROOT / "params.yaml", path)
    return path


def set_param(path: Path, override: str) -> list[str]:
    """Apply `override` as `dvc exp run -S` does; the lines that changed, `-old` and `+new`."""
    from dvc.utils.hydra import apply_overrides

    before = path.read_text().splitlines()
    apply_overrides(path, [override])
    after = path.read_text().splitlines()
    return [
        line
        for line in difflib.unified_diff(before, after, lineterm="", n=0)
        if line[:1] in "+-" and not line.startswith(("+++", "---"))
    ]


# --- the catalog --------------------------------------------------------------------------------


def test_the_catalog_has_every_set_of_the_previous_params_yaml():
    assert {"fashion_mnist", "digits", "diabetes", "garments", "boston_housing", "mnist"} <= set(
        SETS
    )
    assert ENABLED[:4] == ["fashion_mnist", "digits", "diabetes", "garments"]


@pytest.mark.parametrize("name", list(SETS))
def test_every_set_experiment_is_valid_and_written_out(name):
    found = SETS[name]
    assert found.description
    for experiment, written in found.experiments.items():
        parsed = Experiment.model_validate(written)
        assert written == parsed.effective_settings(), experiment  # no hidden default
        assert loads_yaml(found.texts[experiment]) == {experiment: written}
    assert set(found.datasets) == {exp["dataset"] for exp in found.experiments.values()}
    datasets = {found.experiments[experiment]["dataset"] for experiment in found.crossval}
    assert len(datasets) <= 1


def test_the_default_experiments_are_the_enabled_sets():
    catalog = [name for set_name in ENABLED for name in SETS[set_name].experiments]
    assert list(DEFAULT["experiments"]) == catalog
    assert set(DEFAULT["data"]["datasets"]) == {d for name in ENABLED for d in SETS[name].datasets}


# --- enable and disable -------------------------------------------------------------------------


@pytest.mark.parametrize("name", DISABLED)
def test_enable_then_disable_gives_back_the_same_file(params_file, name):
    before = params_file.read_bytes()
    change = enable_set(name, params_file)
    params = load_params(params_file)
    assert set(SETS[name].experiments) <= set(params.experiments)
    assert set(SETS[name].datasets) <= set(params.data.datasets)
    assert change.experiments == tuple(SETS[name].experiments)
    assert enable_set(name, params_file).experiments == ()  # already enabled: nothing to do

    disable_set(name, params_file)
    assert params_file.read_bytes() == before


@pytest.mark.parametrize("name", ENABLED)
def test_disable_then_enable_gives_back_the_same_settings(params_file, name):
    disable_set(name, params_file)
    params = load_params(params_file)
    assert not set(SETS[name].experiments) & set(params.experiments)
    used = {experiment.dataset for experiment in params.experiments.values()}
    assert set(params.data.datasets) == used  # only datasets no experiment uses went
    assert not set(SETS[name].crossval) & set(params.crossval.experiments)

    enable_set(name, params_file)
    after = load_yaml(params_file)
    assert after["experiments"] == DEFAULT["experiments"]
    assert sorted(after["data"]["datasets"]) == sorted(DEFAULT["data"]["datasets"])
    assert after["crossval"] == DEFAULT["crossval"]


def test_enable_refuses_an_experiment_defined_differently(params_file):
    text = params_file.read_text()
    name, settings = next(iter(SETS["mnist"].experiments.items()))
    mine = SETS["mnist"].texts[name].replace(f"epochs: {settings['epochs']}", "epochs: 3")
    mine = "".join(f"  {line}" for line in mine.splitlines(True))
    params_file.write_text(
        text.replace("experiments:\n", "experiments:\n" + mine, 1).replace(
            "  - garments\n", "  - garments\n  - mnist\n", 1
        )
    )
    before = params_file.read_bytes()
    with pytest.raises(AtelierError, match=r"experiment of that name that differs \(epochs: "):
        enable_set("mnist", params_file)
    assert params_file.read_bytes() == before


def test_disable_refuses_a_result_the_schema_refuses(params_file):
    for name in ENABLED[1:]:
        disable_set(name, params_file)
    before = params_file.read_bytes()
    with pytest.raises(ParamsError, match=r"data\.datasets.*at least 1 item"):
        disable_set(ENABLED[0], params_file)
    assert params_file.read_bytes() == before


def test_unknown_set_exits_2_listing_the_sets(params_file):
    before = params_file.read_bytes()
    result = atelier(params_file.parent, "sets", "enable", "nope", check=False)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "Unknown experiment set 'nope'" in result.stderr
    assert all(name in result.stderr for name in SETS)
    assert params_file.read_bytes() == before


def test_sets_lists_every_set_and_marks_the_enabled_ones(params_file):
    atelier(params_file.parent, "sets", "enable", DISABLED[0])
    listing = atelier(params_file.parent, "sets").stdout.splitlines()
    for name in SETS:
        mark = "*" if name in [*ENABLED, DISABLED[0]] else " "
        assert any(line.startswith(f"  {mark} {name} ") for line in listing), (name, listing)


# --- DVC's `-S` on params.yaml ------------------------------------------------------------------


@pytest.mark.parametrize("enabled", [None, *DISABLED])
def test_set_param_changes_only_the_line_of_its_value(params_file, enabled):
    """`-S` on the file as shipped, and after `atelier sets enable`: one line out, one in."""
    if enabled is not None:
        enable_set(enabled, params_file)
    assert set_param(params_file, "experiments.fashion_compact_cnn.epochs=30") == [
        "-    epochs: 5",
        "+    epochs: 30",
    ]
    assert set_param(params_file, "experiments.fashion_mlp.patience=3") == [
        "-    patience:",
        "+    patience: 3",
    ]
    assert set_param(params_file, "experiments.digits_mlp.learning_rate=0.0003") == [
        "-    learning_rate: 0.001",
        "+    learning_rate: 0.0003",
    ]
    assert load_params(params_file).experiments["digits_mlp"].learning_rate == 0.0003


def test_set_param_after_disabling_k_fold_changes_only_its_line(params_file):
    disable_set("diabetes", params_file)
    assert set_param(params_file, "split.val_fraction=0.25") == [
        "-  val_fraction: 0.2",
        "+  val_fraction: 0.25",
    ]


def test_a_set_param_key_that_does_not_exist_is_named_by_atelier_check(params_file):
    from dvc.utils.hydra import apply_overrides

    apply_overrides(params_file, ["+experiments.digits_mlp.epochz=3"])
    result = atelier(params_file.parent, "check", check=False)
    assert result.returncode == 2
    assert "experiments.digits_mlp.epochz: unknown key (did you mean 'epochs'?)" in result.stderr


def test_flow_overrides_write_an_existing_key_like_set_param(params_file):
    from flows.common import write_overrides

    before = params_file.read_text().splitlines()
    write_overrides(params_file.parent, {"experiments.fashion_mlp.patience": 3})
    after = params_file.read_text().splitlines()
    changed = [line for line in difflib.ndiff(before, after) if line[:1] in "+-"]
    assert changed == ["-     patience:", "+     patience: 3"]
    assert load_params(params_file).experiments["fashion_mlp"].patience == 3


@pytest.mark.slow
def test_dvc_exp_run_set_param_then_the_set_switch(tmp_path):
    """The real `dvc exp run -S` on a git + DVC copy of the project (digits_sgd: seconds), then
    `atelier sets enable/disable mnist` on its result."""
    root = tmp_path / "project"
    shutil.copytree(
        PROJECT_ROOT / "pipeline", root / "pipeline", ignore=shutil.ignore_patterns("__pycache__")
    )
    for name in ("dvc.yaml", "params.yaml", "pyproject.toml", ".dvcignore", ".gitignore"):
        shutil.copy2(PROJECT_ROOT / name, root / name)
    run(root, "git", "init", "--quiet")
    run(root, "dvc", "init", "--quiet")
    shutil.copy2(PROJECT_ROOT / ".dvc" / "config", root / ".dvc" / "config")
    run(root, "git", "add", "-A")
    run(root, "git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "--quiet", "-m", "c")

    override = "experiments.digits_sgd.model.max_iter=10"
    run(root, "dvc", "exp", "run", "-S", override, "train@digits_sgd", timeout=600)
    diff = run(root, "git", "diff", "--unified=0", "params.yaml").stdout
    changed = [
        line
        for line in diff.splitlines()
        if line.startswith(("+", "-")) and not line.startswith(("+++", "---"))
    ]
    assert changed == ["-      max_iter: 20", "+      max_iter: 10"], diff

    after_set_param = (root / "params.yaml").read_bytes()
    atelier(root, "sets", "enable", "mnist")
    stages = run(root, "dvc", "stage", "list", "--name-only").stdout.split()
    assert {"download@mnist", "train@mnist_cnn", "evaluate@mnist_mlp512"} <= set(stages)
    atelier(root, "sets", "disable", "mnist")
    assert (root / "params.yaml").read_bytes() == after_set_param
    assert "OK" in atelier(root, "check").stdout
