"""Where each stage reads and writes, relative to the project root (the directory of dvc.yaml).

Functions only build paths; nothing here touches the file system.
"""

from pathlib import Path

PARAMS_FILE = Path("params.yaml")
DATA_DIR = Path("data")
RAW_DIR = DATA_DIR / "raw"
PREPARED_DIR = DATA_DIR / "prepared"
SPLIT_DIR = DATA_DIR / "split"
OVERVIEW_DIR = DATA_DIR / "overview"
MODELS_DIR = Path("models")
CHECKPOINTS_DIR = Path("checkpoints")
LIVE_DIR = Path("live")
METRICS_DIR = Path("metrics")
PLOTS_DIR = Path("plots")
REPORTS_DIR = Path("reports")


def raw_dir(dataset: str, root: Path = Path(".")) -> Path:
    return root / RAW_DIR / dataset


def prepared_dir(dataset: str, root: Path = Path(".")) -> Path:
    return root / PREPARED_DIR / dataset


def split_dir(dataset: str, root: Path = Path(".")) -> Path:
    return root / SPLIT_DIR / dataset


def overview_dir(dataset: str, root: Path = Path(".")) -> Path:
    """`data/overview/<dataset>`: the prepared data's meta and sample images, for the report."""
    return root / OVERVIEW_DIR / dataset


def model_dir(experiment: str, root: Path = Path(".")) -> Path:
    return root / MODELS_DIR / experiment


def fold_model_dir(run: str, root: Path = Path(".")) -> Path:
    """`models/folds/<experiment>-fold<k>`: apart from `models/<experiment>`, which DVC owns."""
    return root / MODELS_DIR / "folds" / run


EVALUATION_FILE = "evaluation.json"


def evaluation_file(experiment: str, root: Path = Path(".")) -> Path:
    """`plots/<experiment>/evaluation.json`: the evaluate stage's full record of an experiment
    (its summary figures, as `metrics/<experiment>.json` holds them, are a part of it)."""
    return root / PLOTS_DIR / experiment / EVALUATION_FILE


def checkpoint_dir(experiment: str, root: Path = Path(".")) -> Path:
    return root / CHECKPOINTS_DIR / experiment


def live_dir(experiment: str, root: Path = Path(".")) -> Path:
    return root / LIVE_DIR / experiment


def run_name(experiment: str, fold: int | None = None) -> str:
    """Directory name of a run's outputs: the experiment, or `<experiment>-fold<k>`."""
    return experiment if fold is None else f"{experiment}-fold{fold}"
