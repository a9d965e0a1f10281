"""The regression and multi-label seed workloads' figures, from the last `dvc repro`.

Run from the project root after `dvc repro` (or `make repro`):

    .venv/bin/python benchmarks/seed_workloads.py

Reads `plots/<experiment>/evaluation.json` and `metrics/crossval/<experiment>.json` of every
regression and multi-label experiment in `params.yaml` (and the multi-label ones'
`plots/<experiment>/per_label.csv`) and prints Markdown tables: the test figures, the training
time the train stage recorded, and the seeds' own figures where they exist. Nothing is trained
here; the figures are those the evaluate and crossval stages recorded. It takes a few seconds,
so `--quick` (which the test suite passes to every benchmark) does the same.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def read(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the same: nothing here is slow")
    parser.parse_args()

    from pipeline.params import load_params
    from pipeline.tasks.results import SEED_REFERENCE

    params = load_params(ROOT / "params.yaml")
    regression, multilabel = [], []
    for name, experiment in params.experiments.items():
        metrics = read(ROOT / "plots" / name / "evaluation.json")
        if metrics is None:
            print(f"(no plots/{name}/evaluation.json: run `dvc repro` first)", file=sys.stderr)
            continue
        if experiment.task == "regression":
            regression.append((name, metrics, read(ROOT / "metrics/crossval" / f"{name}.json")))
        elif experiment.task == "multilabel":
            multilabel.append((name, metrics))

    print(
        "| experiment | dataset | test MAE | RMSE | R² | K-fold test MAE (mean ± std) "
        "| averaged folds' test MAE | epochs (best) | training time | seed's figure |"
    )
    print("|---|---|--:|--:|--:|--:|--:|--:|--:|---|")
    for name, m, cv in regression:
        folds = f"{cv['test_mae_mean']:.3f} ± {cv['test_mae_std']:.3f}" if cv else "—"
        ensemble = f"{cv['ensemble_test_mae']:.3f}" if cv else "—"
        print(
            f"| {name} | {m['dataset']} | {m['test_mae']:.3f} | {m['test_rmse']:.3f} "
            f"| {m['test_r2']:.3f} | {folds} | {ensemble} | {m['epochs_run']} ({m['best_epoch']}) "
            f"| {m['train_time_s']:.1f} s | {SEED_REFERENCE.get(m['dataset'], '—')} |"
        )
    print()
    print(
        "| experiment | dataset | micro F1 | macro F1 | subset accuracy | Hamming loss "
        "| lowest per-label F1 | epochs (best) | training time |"
    )
    print("|---|---|--:|--:|--:|--:|---|--:|--:|")
    for name, m in multilabel:
        # Per-label figures are in the evaluate stage's plots, not in the metrics file.
        with open(ROOT / "plots" / name / "per_label.csv", newline="") as stream:
            per_label = {row["label"]: float(row["f1"]) for row in csv.DictReader(stream)}
        worst = min(per_label, key=per_label.get)
        print(
            f"| {name} | {m['dataset']} | {m['micro_f1']:.4f} | {m['macro_f1']:.4f} "
            f"| {m['subset_accuracy']:.4f} | {m['hamming_loss']:.4f} "
            f"| {worst} {per_label[worst]:.3f} | {m['epochs_run']} ({m['best_epoch']}) "
            f"| {m['train_time_s']:.1f} s |"
        )


if __name__ == "__main__":
    main()
