"""`dvc plots show` and `dvc metrics show` read what dvc.yaml declares: the report stage's confusion
and scatter data, and DVCLive's per-epoch curves and last-epoch figures under `live/`."""

from __future__ import annotations

import json
import shutil
import subprocess

LIVE = "live/fashion_mlp"


def test_dvc_renders_confusion_scatter_and_dvclive_curves(project_root, tmp_path):
    for name in ("dvc.yaml", "params.yaml"):
        shutil.copyfile(project_root / name, tmp_path / name)
    subprocess.run(["git", "init", "--quiet"], cwd=tmp_path, check=True)
    subprocess.run(["dvc", "init", "--quiet"], cwd=tmp_path, check=True)
    files = {
        "reports/confusion/clf.csv": "actual,predicted\ncat,cat\ncat,dog\ndog,dog\n",
        "reports/predictions/reg.csv": "actual,predicted,residual\n1.0,1.5,-0.5\n2.0,1.8,0.2\n",
        f"{LIVE}/plots/metrics/train/accuracy.tsv": "step\taccuracy\n0\t0.80\n1\t0.85\n",
        f"{LIVE}/plots/metrics/eval/accuracy.tsv": "step\taccuracy\n0\t0.78\n1\t0.84\n",
        f"{LIVE}/metrics.json": json.dumps(
            {"train": {"accuracy": 0.85}, "eval": {"accuracy": 0.84}, "step": 1}
        ),
    }
    for relative, text in files.items():
        (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / relative).write_text(text)

    shown = subprocess.run(
        ["dvc", "plots", "show", "--json"], cwd=tmp_path, capture_output=True, text=True, check=True
    )
    data = json.loads(shown.stdout)
    plots = data["data"]
    assert {relative for relative in files if "/plots/" in relative or "reports/" in relative} <= (
        set(plots)
    )
    confusion = json.dumps(plots["reports/confusion/clf.csv"][0]["content"])
    assert '"rect"' in confusion  # the confusion template's heat map
    scatter = json.dumps(plots["reports/predictions/reg.csv"][0]["content"])
    assert '"point"' in scatter and '"actual"' in scatter and '"predicted"' in scatter
    curve = json.dumps(plots[f"{LIVE}/plots/metrics/eval/accuracy.tsv"][0]["content"])
    assert '"line"' in curve and '"step"' in curve and "0.84" in curve

    metrics = subprocess.run(
        ["dvc", "metrics", "show", "--json"], cwd=tmp_path, capture_output=True, text=True
    )
    assert metrics.returncode == 0, metrics.stderr
    found = json.loads(metrics.stdout)
    workspace = next(iter(found.values()))["data"]
    assert workspace[f"{LIVE}/metrics.json"]["data"]["eval"]["accuracy"] == 0.84
