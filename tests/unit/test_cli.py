"""The `atelier` command line: help that lists what exists, errors that name the fix, progress
that shows while training, time-stamped log lines, and `where` after a run.

The commands run as real processes of the console script installed in the venv
(`pip install -e .`); the training run is `atelier train` on digits in a copy of the project.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest
import yaml

from pipeline.cli import Listing, build_parser, where
from pipeline.core.logs import DATE_FORMAT, format_duration, level_for
from pipeline.data.catalog import DatasetSpec, FileSpec
from pipeline.params import load_params
from pipeline.params.sets import load_sets
from pipeline.stages.download import DownloadSettings, download

PROJECT_ROOT = Path(__file__).resolve().parents[2]
ATELIER = Path(sys.executable).parent / "atelier"
# `<ISO time> <LEVEL> <logger>: <message>`, as pipeline/core/logs.py writes every line.
LOG_LINE = re.compile(r"^(?P<time>\S+) (?P<level>DEBUG|INFO|WARNING|ERROR) (?P<name>[\w.]+): ")

PARAMS = load_params(PROJECT_ROOT / "params.yaml")
EXPERIMENTS = list(PARAMS.experiments)
DATASETS = list(PARAMS.data.datasets)
ARTIFACTS = [PARAMS.registry.artifact_name(dataset) for dataset in DATASETS]
REGISTRY_COMMANDS = ("register", "promote", "release", "rollback", "show", "get")
SETS = load_sets()

# Each subcommand's help, and the names it must list.
HELP_LISTS = {
    (): EXPERIMENTS + DATASETS + ARTIFACTS,
    ("download",): DATASETS,
    ("preprocess",): DATASETS,
    ("split",): DATASETS,
    ("select",): DATASETS,
    ("train",): EXPERIMENTS + ["mlp", "cnn", "sgd_logistic"],
    ("crossval",): EXPERIMENTS,
    ("evaluate",): EXPERIMENTS,
    ("check",): EXPERIMENTS + DATASETS,
    ("report",): [],
    ("diff",): ["base-rev"],
    ("where",): [],
    ("registry",): ARTIFACTS,
    **{("registry", command): ARTIFACTS for command in REGISTRY_COMMANDS},
    ("sets",): list(SETS) + ["enable", "disable"],
    ("sets", "enable"): list(SETS),
    ("sets", "disable"): list(SETS),
    ("flow",): ["training", "sweep"],
    ("flow", "training"): EXPERIMENTS,
    ("flow", "sweep"): EXPERIMENTS,
    ("deploy",): ["--prefect-file", "--name"],
}


def env() -> dict[str, str]:
    variables = {
        **os.environ,
        "CUDA_VISIBLE_DEVICES": "",
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "DVC_NO_ANALYTICS": "1",
        "COLUMNS": "100",
    }
    variables.pop("PYTHONPATH", None)
    return variables


def atelier(*args: str, cwd: Path = PROJECT_ROOT, timeout: int = 120):
    assert ATELIER.is_file(), f"{ATELIER} is missing: pip install --no-deps -e . in the venv"
    return subprocess.run(
        [str(ATELIER), *args], cwd=cwd, env=env(), capture_output=True, text=True, timeout=timeout
    )


# --- the console script and its help ------------------------------------------------------------


def test_console_script_reports_the_installed_version():
    result = atelier("--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"atelier {metadata.version('atelier')}"


def test_every_subcommand_help_lists_what_exists():
    """`--help` of every subcommand, each a real process; the flows' help imports Prefect."""
    commands = list(HELP_LISTS)
    with ThreadPoolExecutor(max_workers=3) as pool:
        results = list(pool.map(lambda command: atelier(*command, "--help"), commands))
    for command, result in zip(commands, results, strict=True):
        shown = " ".join(command) or "(top level)"
        assert result.returncode == 0, f"{shown}: {result.stderr}"
        assert "Traceback" not in result.stderr
        assert result.stdout.startswith(f"usage: atelier {' '.join(command)}".rstrip()), shown
        missing = [name for name in HELP_LISTS[command] if name not in result.stdout]
        assert not missing, f"`atelier {shown} --help` does not list {missing}"
    # The flows' examples stay on lines of their own (argparse would run them together).
    flow_help = results[commands.index(("flow", "training"))].stdout.splitlines()
    examples = [line.strip() for line in flow_help if line.strip().startswith("atelier flow")]
    assert examples[0].split("#")[0].strip() == "atelier flow training"
    assert examples[1].startswith("atelier flow training -e digits_mlp -S")


def test_every_argument_and_option_is_described():
    parser = build_parser("atelier", Listing(PROJECT_ROOT / "params.yaml"))
    undescribed = []

    def visit(parser: argparse.ArgumentParser, path: str) -> None:
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, subparser in action.choices.items():
                    visit(subparser, f"{path} {name}")
            elif not action.help:
                undescribed.append(f"{path}: {action.dest}")

    visit(parser, "atelier")
    assert not undescribed


def test_help_still_works_when_params_are_unreadable(tmp_path):
    (tmp_path / "params.yaml").write_text("base: [unclosed\n")
    result = atelier("train", "--help", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "params.yaml could not be read" in result.stdout
    assert "atelier check" in result.stdout
    assert "sgd_logistic" in result.stdout  # the models come from the code, not the file


def test_help_check_diff_and_registry_show_do_not_import_tensorflow(tmp_path):
    code = (
        "import sys\n"
        "from pipeline.__main__ import main\n"
        "try:\n"
        "    code = main(sys.argv[1:])\n"
        "except SystemExit as exit:\n"
        "    code = exit.code\n"
        "print(code, *(name in sys.modules for name in ('tensorflow', 'keras', 'prefect')))\n"
    )
    commands = [
        ["--help"],
        ["check"],
        ["diff", "HEAD", "-o", str(tmp_path / "diff.md")],
        ["registry", "show"],
        ["where"],
        ["sets"],
    ]

    def run(command):
        return subprocess.run(
            [sys.executable, "-c", code, *command],
            cwd=PROJECT_ROOT,
            env=env(),
            capture_output=True,
            text=True,
            timeout=120,
        )

    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(run, commands))
    for command, result in zip(commands, results, strict=True):
        assert result.stdout.splitlines()[-1] == "0 False False False", (command, result.stderr)


# --- errors -------------------------------------------------------------------------------------


def test_a_wrong_experiment_name_lists_the_real_ones():
    result = atelier("train", "digits_mpl")

    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "Unknown experiment 'digits_mpl'" in result.stderr
    assert "did you mean 'digits_mlp'?" in result.stderr
    assert all(name in result.stderr for name in EXPERIMENTS)


def test_an_experiment_of_a_set_not_enabled_says_how_to_enable_it():
    disabled = next(
        (name, set_name)
        for set_name, found in SETS.items()
        for name in found.experiments
        if name not in PARAMS.experiments
    )
    result = atelier("evaluate", disabled[0])

    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert f"experiment set {disabled[1]!r}, which is not enabled" in result.stderr
    assert f"`atelier sets enable {disabled[1]}`" in result.stderr


# --- progress and log lines ---------------------------------------------------------------------


def test_importing_the_progress_module_does_not_import_keras():
    code = "import sys, pipeline.modeling.progress; print('keras' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", code], env=env(), capture_output=True, text=True, timeout=60
    )
    assert result.stdout.strip() == "False", result.stderr


def test_progress_lines_in_a_captured_training(caplog):
    """stdout is not a terminal under pytest: log lines, no progress bar. `long_epoch_s=0` makes
    every epoch long enough for the lines within it."""
    import keras

    from pipeline.modeling.progress import training_progress

    rng = np.random.default_rng(0)
    x, y = rng.random((400, 8), dtype=np.float32), rng.integers(0, 3, 400)
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(3, activation="softmax")])
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    progress = training_progress("tiny", long_epoch_s=0)
    assert progress.fit_verbose == 0

    with caplog.at_level(logging.INFO, logger="pipeline.modeling.progress"):
        model.fit(
            x, y, batch_size=10, epochs=3, validation_data=(x, y), callbacks=[progress], verbose=0
        )

    lines = [record.getMessage() for record in caplog.records]
    epochs = [line for line in lines if " done in " in line]
    within = [line for line in lines if "batches/s" in line]
    assert [line.split(" done")[0] for line in epochs] == [f"tiny: epoch {k}/3" for k in (1, 2, 3)]
    assert all("val_accuracy" in line for line in epochs)
    assert "at most 2 more epochs" in epochs[0]
    assert len(within) == 3 * 9  # 40 batches an epoch: a line at 10 %, 20 %, ..., 90 %
    assert within[0].startswith("tiny: epoch 1/3 10% (4/40 batches), ")
    assert within[0].endswith(" left")


def test_a_terminal_gets_the_keras_progress_bar_and_no_lines(caplog):
    from pipeline.modeling.progress import training_progress

    progress = training_progress("tiny", interactive=True)
    progress.set_params({"epochs": 2, "steps": 100})
    with caplog.at_level(logging.INFO, logger="pipeline.modeling.progress"):
        progress.on_epoch_begin(0)
        progress.on_train_batch_end(49)
        progress.on_epoch_end(0, {"loss": 1.0})
    assert progress.fit_verbose == 1
    assert caplog.records == []


@pytest.fixture(scope="module")
def digits_project(tmp_path_factory) -> Path:
    """A project copy whose params.yaml is the real one shrunk to two digits experiments, with
    digits prepared."""
    root = tmp_path_factory.mktemp("digits")
    params = yaml.safe_load((PROJECT_ROOT / "params.yaml").read_text())
    params["data"]["datasets"] = ["digits"]
    params["experiments"] = {
        "digits_mlp": {"dataset": "digits", "model": {"name": "mlp", "units": [8]}, "epochs": 3},
        "digits_sgd": {"dataset": "digits", "model": {"name": "sgd_logistic", "max_iter": 5}},
    }
    params["crossval"] = {"experiments": [], "folds": []}
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    prepare_digits(root)
    return root


def test_a_training_run_logs_every_epoch(digits_project, monkeypatch, capsys, caplog):
    """`python -m pipeline train` (in this process, whose stdout is not a terminal): one line per
    epoch from the train stage's callbacks, no Keras progress bar or epoch lines on stdout."""
    from pipeline.__main__ import main

    monkeypatch.chdir(digits_project)
    with caplog.at_level(logging.INFO):
        assert main(["train", "digits_mlp"]) == 0

    lines = [record.getMessage() for record in caplog.records]
    epochs = [line for line in lines if line.startswith("digits_mlp: epoch ")]
    assert [line.split(" done in ")[0] for line in epochs] == [
        f"digits_mlp: epoch {k}/3" for k in (1, 2, 3)
    ]
    assert capsys.readouterr().out == ""


def test_log_lines_carry_time_stamps(digits_project):
    """A real `atelier train` of the SGD baseline: its passes are logged, each line stamped."""
    result = atelier("train", "digits_sgd", cwd=digits_project)

    assert result.returncode == 0, result.stderr
    ours = [line for line in result.stderr.splitlines() if re.search(r" pipeline\.[\w.]+: ", line)]
    passes = [line for line in ours if "sgd_logistic: pass " in line]
    folds = load_params(digits_project / "params.yaml").experiments["digits_sgd"].model.cv_folds
    assert len(passes) == folds + 1
    for line in ours:
        match = LOG_LINE.match(line)
        assert match, f"no time stamp: {line}"
        stamp = datetime.strptime(match["time"], DATE_FORMAT)
        assert abs((datetime.now(stamp.tzinfo) - stamp).total_seconds()) < 600


def prepare_digits(root: Path) -> None:
    """The download, preprocess and split stages of digits with `root`'s params (in-process)."""
    from pipeline.core import paths
    from pipeline.data.catalog import DIGITS
    from pipeline.stages.preprocess import PreprocessSettings, preprocess
    from pipeline.stages.split import SplitSettings, split

    params = load_params(root / "params.yaml")
    download(DIGITS, paths.raw_dir("digits", root), DownloadSettings())
    preprocess(
        DIGITS,
        raw_dir=paths.raw_dir("digits", root),
        out_dir=paths.prepared_dir("digits", root),
        settings=PreprocessSettings(seed=params.base.seed, test_fraction=params.data.test_fraction),
    )
    split(
        prepared_dir=paths.prepared_dir("digits", root),
        out_dir=paths.split_dir("digits", root),
        settings=SplitSettings(
            val_fraction=params.split.val_fraction, folds=params.split.folds, seed=params.base.seed
        ),
    )


def test_quiet_keeps_warnings_and_verbose_adds_debug():
    assert level_for() == logging.INFO
    assert level_for(quiet=1) == logging.WARNING
    assert level_for(verbose=1) == logging.DEBUG
    assert level_for(quiet=5) == logging.ERROR
    assert [format_duration(s) for s in (8.44, 125, 3780)] == ["8.4 s", "2 min 05 s", "1 h 03 min"]


def test_a_large_download_logs_its_progress(http_server, caplog, tmp_path):
    import hashlib

    body = np.random.default_rng(0).integers(0, 256, 6 << 20, dtype=np.uint8).tobytes()
    http_server.serve("blob.bin", body)
    spec = DatasetSpec(
        name="blob",
        kind="images",
        files=(FileSpec("blob.bin", hashlib.sha256(body).hexdigest(), len(body)),),
        sources=(http_server.url,),
        reader=lambda directory: None,
    )
    with caplog.at_level(logging.INFO, logger="pipeline.stages.download"):
        download(spec, tmp_path / "blob", DownloadSettings())
    lines = [r.getMessage() for r in caplog.records if "MB/s" in r.getMessage()]
    assert len(lines) >= 3
    percents = [int(re.search(r": (\d+)% ", line)[1]) for line in lines]
    assert percents == sorted(percents) and all(0 < p < 100 for p in percents)


# --- after a run --------------------------------------------------------------------------------


def test_where_names_the_report_the_champions_and_the_plots(tmp_path):
    (tmp_path / "reports").mkdir()
    (tmp_path / "reports" / "report.md").write_text("# Report\n")
    champion = tmp_path / "models" / "champions" / "digits"
    champion.mkdir(parents=True)
    card = {"experiment": "digits_mlp", "metric": "test_accuracy", "value": 0.9722}
    (champion / "card.json").write_text(json.dumps(card))

    text = where(tmp_path)

    assert "Report:     reports/report.md" in text
    assert re.search(r"digits +digits_mlp +test_accuracy 0\.9722", text)
    assert "dvc plots show" in text and "dvc_plots/index.html" in text
