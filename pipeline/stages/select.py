"""Select stage (`select@<dataset>`): keep the best experiment of a dataset as its champion.

Every experiment of the dataset in `params.yaml` is ranked by `registry.metric` from its
`metrics/<experiment>.json` (a loss-like metric ranks lowest first). The winner's model file is
copied to `models/champions/<dataset>/` as `model.keras` (or `model.npz` for the scikit-learn
baseline) beside a `card.json` that says where it came from: the experiment, its params and
metrics, the leaderboard it won, the data and model hashes DVC recorded in `dvc.lock`, the
library versions it was trained with and the git commit the pipeline ran from.

The champion directory is what the registry versions (`pipeline/registry.py`); the card is
what promotion rules and `registry show` read at each version's commit.
"""

from __future__ import annotations

import hashlib
import logging
import math
import platform
import shutil
import subprocess
from importlib import metadata
from pathlib import Path

import yaml

from pipeline.core import paths
from pipeline.core.errors import AtelierError
from pipeline.core.io import atomic_dir, atomic_write_json, read_json
from pipeline.params import Params

log = logging.getLogger(__name__)

CHAMPIONS_DIR = paths.MODELS_DIR / "champions"
CARD_FILE = "card.json"
BASELINE_MODEL = "sgd_logistic"
KERAS_FILE = "model.keras"
BASELINE_FILE = "model.npz"


def champion_dir(dataset: str, root: Path = Path(".")) -> Path:
    return root / CHAMPIONS_DIR / dataset


def select(params: Params, dataset: str, *, root: Path = Path(".")) -> dict:
    """Copy the best experiment of `dataset` to its champion directory; return the card.

    Raises:
        AtelierError: the dataset has no experiments, or one of them has no metrics file or
            no value for `registry.metric` (its evaluate stage has not run).
    """
    rules = params.registry.for_dataset(dataset)
    metric = rules.metric
    lower_is_better = rules.lower_is_better()
    names = sorted(name for name, exp in params.experiments.items() if exp.dataset == dataset)
    if not names:
        raise AtelierError(
            f"No experiment in params.yaml uses dataset {dataset!r}, so it has no champion: add "
            f"one under `experiments:` or remove {dataset!r} from the registry's datasets."
        )
    candidates = [_candidate(root, params, name, metric) for name in names]
    # Best first; ties go to the first name in alphabetical order, so the choice is stable.
    candidates.sort(key=lambda c: c["value"] if lower_is_better else -c["value"])
    winner = candidates[0]
    name = winner["experiment"]
    source = _model_file(root, name)
    target_name = BASELINE_FILE if source.suffix == ".npz" else KERAS_FILE
    train_summary = _read_optional_json(paths.model_dir(name, root) / "train.json")
    baselines = [c for c in candidates if c["model"] == BASELINE_MODEL]
    card = {
        "dataset": dataset,
        "artifact": params.registry.artifact_name(dataset),
        "experiment": name,
        "model": winner["model"],
        "model_file": target_name,
        "model_md5": _md5(source),
        # The Keras backend that trained it; a .keras file loads on either backend.
        "backend": train_summary.get("backend"),
        "metric": metric,
        "lower_is_better": lower_is_better,
        "value": winner["value"],
        "metrics": winner["metrics"],
        "params": params.experiments[name].model_dump(mode="json"),
        "leaderboard": [
            {key: c[key] for key in ("experiment", "model", "value", "metrics")} for c in candidates
        ],
        "baseline": (
            {key: baselines[0][key] for key in ("experiment", "value", "metrics")}
            if baselines
            else None
        ),
        "data": _lock_hashes(root, dataset, name),
        "versions": {
            "trained_with": {
                key: value for key, value in train_summary.items() if key.endswith("_version")
            },
            "python": platform.python_version(),
            **_package_versions("tensorflow", "tensorflow-cpu", "jax", "keras", "numpy"),
        },
        "git_commit": _git_head(root),
    }
    with atomic_dir(champion_dir(dataset, root)) as staging:
        shutil.copy2(source, staging / target_name)
        atomic_write_json(staging / CARD_FILE, card)
    log.info(
        "%s champion: %s (%s) with %s = %.4f among %d experiments",
        dataset,
        name,
        winner["model"],
        metric,
        winner["value"],
        len(candidates),
    )
    return card


def _candidate(root: Path, params: Params, name: str, metric: str) -> dict:
    path = root / paths.METRICS_DIR / f"{name}.json"
    if not path.is_file():
        raise AtelierError(
            f"{path} not found: experiment {name!r} has not been evaluated. Run "
            f"`dvc repro evaluate@{name}` (or the whole pipeline) before selecting."
        )
    metrics = read_json(path)
    value = metrics.get(metric) if isinstance(metrics, dict) else None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        known = sorted(k for k, v in metrics.items() if isinstance(v, int | float))
        raise AtelierError(
            f"{path} has no finite number under {metric!r} (params.yaml registry.metric); "
            f"its keys, one of which the registry can rank by: {', '.join(known) or 'none'}."
        )
    numeric = {
        key: value
        for key, value in metrics.items()
        if isinstance(value, int | float) and not isinstance(value, bool)
    }
    experiment = params.experiments[name]
    return {
        "experiment": name,
        "model": experiment.model.name,
        "value": float(value),
        "metrics": numeric | {"model": experiment.model.name, "dataset": experiment.dataset},
    }


def _model_file(root: Path, name: str) -> Path:
    directory = paths.model_dir(name, root)
    summary = _read_optional_json(directory / "train.json")
    options = [summary.get("model_file"), "best.keras", BASELINE_FILE]
    for option in options:
        if option and (directory / option).is_file():
            return directory / option
    raise AtelierError(
        f"{directory} holds no model file (best.keras or {BASELINE_FILE}): run "
        f"`dvc repro train@{name}` (or `dvc pull`) first."
    )


def _read_optional_json(path: Path) -> dict:
    return read_json(path) if path.is_file() else {}


def _md5(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _lock_hashes(root: Path, dataset: str, experiment: str) -> dict:
    """The md5 DVC recorded for each output upstream of the champion: `{stage: {path: md5}}`."""
    lock_path = root / "dvc.lock"
    if not lock_path.is_file():
        return {}
    stages = (yaml.safe_load(lock_path.read_text()) or {}).get("stages", {})
    wanted = [f"{stage}@{dataset}" for stage in ("download", "preprocess", "split")]
    wanted += [f"{stage}@{experiment}" for stage in ("train", "evaluate")]
    hashes = {}
    for stage in wanted:
        outs = stages.get(stage, {}).get("outs", [])
        if outs:
            hashes[stage] = {out["path"]: out.get("md5") for out in outs}
    return hashes


def _package_versions(*names: str) -> dict:
    versions = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def _git_head(root: Path) -> str | None:
    result = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=False
    )
    return result.stdout.strip() if result.returncode == 0 else None
