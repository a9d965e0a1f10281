"""`dvc plots show` reads what the report stage gathers, with the templates dvc.yaml declares."""

from __future__ import annotations

import json
import shutil
import subprocess


def test_dvc_renders_confusion_scatter_and_curves_from_reports(project_root, tmp_path):
    for name in ("dvc.yaml", "params.yaml"):
        shutil.copyfile(project_root / name, tmp_path / name)
    subprocess.run(["git", "init", "--quiet"], cwd=tmp_path, check=True)
    subprocess.run(["dvc", "init", "--quiet"], cwd=tmp_path, check=True)
    reports = tmp_path / "reports"
    files = {
        "confusion/clf.csv": "actual,predicted\ncat,cat\ncat,dog\ndog,dog\n",
        "predictions/reg.csv": "actual,predicted,residual\n1.0,1.5,-0.5\n2.0,1.8,0.2\n",
        "curves/mae/reg.csv": "epoch,train,validation\n1,3.0,3.5\n2,2.0,2.6\n",
        "curves/binary_accuracy/tag.csv": "epoch,train,validation\n1,0.8,0.79\n2,0.9,0.88\n",
    }
    for relative, text in files.items():
        (reports / relative).parent.mkdir(parents=True, exist_ok=True)
        (reports / relative).write_text(text)

    shown = subprocess.run(
        ["dvc", "plots", "show", "--json"], cwd=tmp_path, capture_output=True, text=True, check=True
    )
    data = json.loads(shown.stdout)
    # Only the plots of kinds absent here (accuracy and loss curves) may be reported missing.
    missing = {error["name"] for error in data.get("errors", [])}
    assert missing <= {"reports/curves/accuracy", "reports/curves/loss"}, data["errors"]
    plots = data["data"]
    assert {f"reports/{relative}" for relative in files} <= set(plots)
    confusion = json.dumps(plots["reports/confusion/clf.csv"][0]["content"])
    assert '"rect"' in confusion  # the confusion template's heat map
    scatter = json.dumps(plots["reports/predictions/reg.csv"][0]["content"])
    assert '"point"' in scatter and '"actual"' in scatter and '"predicted"' in scatter
