"""`python -m pipeline diff <base-rev>` in a real git + DVC repository with two pipeline runs.

A copy of the project (digits only, scikit-learn baselines, so no TensorFlow) is committed
without outputs (A), reproduced with `dvc repro report` and committed (B), then its params are
changed and an experiment added before reproducing again into the workspace. The Markdown must
show the param change, the metric deltas computed from the two evaluation records, and the new
experiment; a base without metrics flags every experiment as new; an unknown base is an error.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pipeline.core.errors import ParamsError
from pipeline.params import Tolerance, parse_params
from pipeline.stages.diff import COMMENT_MARKER, _delta, render_markdown

PROJECT_ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
BASE = {"dataset": "digits", "model": {"name": "sgd_logistic", "max_iter": 5, "cv_folds": 2}}
CHANGED = {"dataset": "digits", "model": {"name": "sgd_logistic", "max_iter": 40, "cv_folds": 2}}
ADDED = {
    "dataset": "digits",
    "model": {"name": "sgd_logistic", "max_iter": 15, "alpha": 0.001, "cv_folds": 2},
}


def run(command: list[str], cwd: Path, *, check: bool = True) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "DVC_NO_ANALYTICS": "1",
    }
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)
    if check and result.returncode != 0:
        raise AssertionError(f"{command} failed ({result.returncode}):\n{result.stderr[-3000:]}")
    return result


def write_params(root: Path, experiments: dict) -> None:
    params = yaml.safe_load((PROJECT_ROOT / "params.yaml").read_text())
    params["data"]["datasets"] = ["digits"]
    params["experiments"] = experiments
    params["crossval"] = {"experiments": [], "folds": []}  # no K-fold runs
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def commit(root: Path, message: str) -> str:
    run(["git", "add", "-A"], root)
    run(["git", "commit", "-q", "-m", message], root)
    return run(["git", "rev-parse", "HEAD"], root).stdout.strip()


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("diff") / "project"
    root.mkdir()
    shutil.copytree(
        PROJECT_ROOT / "pipeline", root / "pipeline", ignore=shutil.ignore_patterns("__pycache__")
    )
    for name in ("dvc.yaml", "pyproject.toml", ".dvcignore"):
        shutil.copy(PROJECT_ROOT / name, root / name)
    (root / ".dvc").mkdir()
    shutil.copy(PROJECT_ROOT / ".dvc/config", root / ".dvc/config")
    (root / ".gitignore").write_text("__pycache__/\n/checkpoints/\n")
    write_params(root, {"digits_sgd": BASE})
    run(["git", "init", "-q", "-b", "main"], root)
    run(["git", "config", "user.email", "test@atelier.invalid"], root)
    run(["git", "config", "user.name", "Atelier test"], root)
    no_outputs = commit(root, "code and params, nothing run")

    run(["dvc", "repro", "report"], root)
    first_run = commit(root, "first run")

    write_params(root, {"digits_sgd": CHANGED, "digits_sgd_b": ADDED})
    run(["dvc", "repro", "report"], root)
    return {"root": root, "no_outputs": no_outputs, "first_run": first_run}


def diff(root: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    return run([sys.executable, "-m", "pipeline", "diff", *args], root, check=check)


def committed_metrics(root: Path, rev: str, name: str) -> dict:
    return json.loads(run(["git", "show", f"{rev}:plots/{name}/evaluation.json"], root).stdout)


def experiment_table(markdown: str, name: str) -> dict[str, list[str]]:
    section = markdown.split(f"#### `{name}`", 1)[1].split("\n#### ", 1)[0]
    table = section.split("<details>", 1)[0]
    rows = {}
    for line in table.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) == 4 and cells[0] not in ("metric", "---"):
            rows[cells[0]] = cells[1:]
    return rows


@pytest.mark.slow
def test_diff_shows_param_changes_metric_deltas_and_new_experiments(repo, tmp_path):
    root, base = repo["root"], repo["first_run"]
    out = tmp_path / "comment.md"
    diff(root, base, "-o", str(out), "--plots-url", "https://ci.example/run/7")
    markdown = out.read_text()

    assert markdown.startswith(COMMENT_MARKER + "\n")
    assert "| `experiments.digits_sgd.model.max_iter` | `5` | `40` |" in markdown
    assert "🆕 New in this revision (no metrics at" in markdown and "`digits_sgd_b`" in markdown
    assert "#### `digits_sgd_b` — 🆕 new in this revision" in markdown
    assert "[plots diff](https://ci.example/run/7)" in markdown

    old = committed_metrics(root, base, "digits_sgd")
    new = json.loads((root / "plots/digits_sgd/evaluation.json").read_text())
    assert old["test_accuracy"] != new["test_accuracy"]  # the param change changed the model
    rows = experiment_table(markdown, "digits_sgd")
    assert next(iter(rows)) == "test_accuracy"  # the primary metric first
    tolerance = yaml.safe_load((root / "params.yaml").read_text())["diff"]["tolerance"]
    for key in ("test_accuracy", "macro_f1", "test_loss", "cv_mean"):
        delta = new[key] - old[key]
        better = delta > 0 if key != "test_loss" else delta < 0
        assert rows[key][0] == f"{old[key]:.4f}" and rows[key][1] == f"{new[key]:.4f}"
        if abs(delta) <= tolerance.get(key, {}).get("abs", 0.0):  # run-to-run noise
            assert rows[key][2] == f"{delta:+.4f} ≈"
        else:
            arrow, mark = "↑" if delta > 0 else "↓", "🟢" if better else "🔴"
            assert rows[key][2] == f"{delta:+.4f} {arrow} {mark}"


def commit_in_the_earlier_layout(root: Path, base: str) -> str:
    """A commit on top of `base` whose metrics files hold the whole evaluation record and that
    has no `plots/<experiment>/evaluation.json`, as revisions made before the summaries; built
    with git's plumbing, so the repository's work tree and HEAD stay as they are."""
    env_index = root / ".git" / "earlier-layout-index"
    record = "plots/digits_sgd/evaluation.json"
    full = run(["git", "show", f"{base}:{record}"], root).stdout
    blob = subprocess.run(
        ["git", "hash-object", "-w", "--stdin"], cwd=root, input=full, capture_output=True,
        text=True, check=True,
    ).stdout.strip()  # fmt: skip
    index = {**os.environ, "GIT_INDEX_FILE": str(env_index)}
    for command in (
        ["git", "read-tree", base],
        ["git", "update-index", "--cacheinfo", f"100644,{blob},metrics/digits_sgd.json"],
        ["git", "update-index", "--force-remove", record],
    ):
        subprocess.run(command, cwd=root, env=index, check=True)
    tree = subprocess.run(
        ["git", "write-tree"], cwd=root, env=index, capture_output=True, text=True, check=True
    ).stdout.strip()
    env_index.unlink()
    return run(
        ["git", "commit-tree", tree, "-p", base, "-m", "earlier layout"], root
    ).stdout.strip()


@pytest.mark.slow
def test_a_base_in_the_earlier_layout_diffs_the_same_figures(repo):
    """Against a base from before `evaluation.json`, the diff reads its full metrics files."""
    root, base = repo["root"], repo["first_run"]
    earlier = commit_in_the_earlier_layout(root, base)
    metrics_file = json.loads(
        run(["git", "show", f"{earlier}:metrics/digits_sgd.json"], root).stdout
    )
    assert "cv_mean" in metrics_file
    gone = run(
        ["git", "cat-file", "-e", f"{earlier}:plots/digits_sgd/evaluation.json"], root, check=False
    )
    assert gone.returncode != 0
    expected = experiment_table(diff(root, base).stdout, "digits_sgd")
    found = experiment_table(diff(root, earlier).stdout, "digits_sgd")
    assert {"test_accuracy", "cv_mean", "val_accuracy"} <= set(found)
    assert [row[:2] for row in found.values()] == [row[:2] for row in expected.values()]


@pytest.mark.slow
def test_a_base_without_metrics_flags_every_experiment_new(repo):
    markdown = diff(repo["root"], repo["no_outputs"]).stdout
    assert markdown.count("— 🆕 new in this revision") == 2
    assert "No metrics at" in markdown
    assert "Params changed" in markdown


@pytest.mark.slow
def test_an_unknown_base_revision_is_a_clear_error(repo):
    result = diff(repo["root"], "no-such-branch", check=False)
    assert result.returncode == 2
    assert "error: Base revision 'no-such-branch' does not exist in this repository" in (
        result.stderr
    )
    assert "Traceback" not in result.stderr and result.stdout == ""


@pytest.mark.slow
def test_dvc_metrics_diff_lines_up_the_experiments(repo):
    result = run(["dvc", "metrics", "diff", repo["first_run"], "--json"], repo["root"])
    changes = json.loads(result.stdout)
    assert "test_accuracy" in changes["metrics/digits_sgd.json"]
    assert changes["metrics/digits_sgd_b.json"]["test_accuracy"]["old"] is None


def test_workflow_updates_one_comment_found_by_the_marker(tmp_path):
    workflow = yaml.safe_load((PROJECT_ROOT / ".github/workflows/pr-metrics.yml").read_text())
    assert "pull_request" in workflow[True]  # YAML 1.1 reads the key `on` as true
    steps = workflow["jobs"]["metrics"]["steps"]
    scripts = "\n".join(step.get("run", "") for step in steps)
    assert "make repro" in scripts and "dvc pull" in scripts
    assert "python -m pipeline diff" in scripts and "--fail-on-regression" in scripts
    gate = steps[-1]
    assert gate["if"] == "steps.diff.outputs.status != '0'" and "exit 1" in gate["run"]
    post = next(step["run"] for step in steps if "--method PATCH" in step.get("run", ""))
    assert f"marker='{COMMENT_MARKER}'" in post
    assert shutil.which("jq"), "jq is needed to check the comment filter (.ci/run installs it)"
    # The same filter `gh api --jq` applies to the pull request's comments.
    query = post.split("--jq ", 1)[1].split(" | head", 1)[0].strip().strip('"')
    query = query.replace('\\"', '"').replace("$marker", COMMENT_MARKER)
    comments = [
        {"id": 11, "body": "LGTM"},
        {"id": 12, "body": f"{COMMENT_MARKER}\n## Metrics"},
        {"id": 13, "body": f"quoting:\n{COMMENT_MARKER}"},
    ]
    result = subprocess.run(
        ["jq", query], input=json.dumps(comments), capture_output=True, text=True, check=True
    )
    assert result.stdout.split() == ["12"]


def render_against_main(old: dict, new: dict, **options) -> str:
    """The summary of `new` metrics against `old` ones at `main`, with no params changed."""
    return render_markdown(
        base_rev="main",
        base_commit="0123456789abcdef",
        params_changes={},
        old_metrics=old,
        new_metrics=new,
        **options,
    )


def test_render_marks_removed_and_unevaluated_experiments():
    old = {"kept": {"test_accuracy": 0.9, "model": "mlp"}, "gone": {"test_accuracy": 0.8}}
    new = {"kept": {"test_accuracy": 0.85, "model": "cnn"}}
    markdown = render_against_main(old, new, not_evaluated=["pending"])
    assert "## Metrics: this revision vs `main` (0123456)" in markdown
    assert "| test_accuracy | 0.9000 | 0.8500 | -0.0500 ↓ 🔴 |" in markdown
    assert "Changed: model `mlp` → `cnn`" in markdown
    assert "Removed in this revision: `gone`" in markdown
    assert "without metrics in this revision (run `dvc repro`): `pending`" in markdown
    assert "No params changed since `main` (0123456)." in markdown


def test_render_summarises_each_task_by_its_own_metric_and_direction():
    old = {
        "reg": {"test_mae": 40.0, "test_r2": 0.5},
        "reg (K-fold)": {"ensemble_test_mae": 41.0, "fold0_n_train": 235},
        "tags": {"micro_f1": 0.90, "hamming_loss": 0.02},
    }
    new = {
        "reg": {"test_mae": 38.0, "test_r2": 0.55},
        "reg (K-fold)": {"ensemble_test_mae": 42.0, "fold0_n_train": 236},
        "tags": {"micro_f1": 0.92, "hamming_loss": 0.03},
    }
    markdown = render_against_main(old, new)
    assert "| `reg` | test_mae | 40.0000 | 38.0000 | -2.0000 ↓ 🟢 |" in markdown
    assert "| `tags` | micro_f1 | 0.9000 | 0.9200 | +0.0200 ↑ 🟢 |" in markdown
    assert "| `reg (K-fold)` | ensemble_test_mae | 41.0000 | 42.0000 | +1.0000 ↑ 🔴 |" in markdown
    assert "| hamming_loss | 0.0300 | 0.0200 |" not in markdown  # old first, then new
    assert "| hamming_loss | 0.0200 | 0.0300 | +0.0100 ↑ 🔴 |" in markdown
    assert "| fold0_n_train | 235 | 236 | +1 ↑ |" in markdown  # a count: no verdict


def test_a_change_below_the_shown_precision_is_neither_better_nor_worse():
    assert _delta("test_mae", 42.51420, 42.51423) == "≈"  # +0.0000 would read as a regression
    assert _delta("test_mae", 42.5142, 42.5142) == "="
    assert _delta("test_mae", 42.5142, 42.6142) == "+0.1000 ↑ 🔴"
    assert _delta("test_accuracy", 0.8791, 0.8762) == "-0.0029 ↓ 🔴"
    assert _delta("train_time_s", 25.51, 25.53) == "≈"


# --- noise: tolerances, regressions, hardware ---------------------------------------------------


def test_a_change_within_its_tolerance_is_noise_not_better_or_worse():
    tolerances = {"test_accuracy": Tolerance(abs=0.006), "test_mae": Tolerance(rel=0.03)}
    assert _delta("test_accuracy", 0.8803, 0.8762, tolerances) == "-0.0041 ≈"
    assert _delta("test_accuracy", 0.8803, 0.8702, tolerances) == "-0.0101 ↓ 🔴"
    assert _delta("test_mae", 40.0, 41.0, tolerances) == "+1.0000 ≈"  # 2.5 % of 40
    assert _delta("test_mae", 40.0, 41.5, tolerances) == "+1.5000 ↑ 🔴"
    old = {"mlp": {"test_accuracy": 0.8803, "cpu_isa": "avx512"}}
    new = {"mlp": {"test_accuracy": 0.8762, "cpu_isa": "avx2"}}
    markdown = render_against_main(old, new, tolerances=tolerances)
    assert "| `mlp` | test_accuracy | 0.8803 | 0.8762 | -0.0041 ≈ |" in markdown
    assert "Worse beyond tolerance" not in markdown
    assert "- `mlp` ran on different hardware: avx512 at the base, avx2 now" in markdown
    worse = render_against_main(old, {"mlp": {"test_accuracy": 0.85}}, tolerances=tolerances)
    assert "- mlp: test_accuracy 0.8803 → 0.8500 (-0.0303), worse beyond its tolerance ±0.006" in (
        worse
    )


def test_a_negative_tolerance_is_refused_by_the_schema():
    params = yaml.safe_load((PROJECT_ROOT / "params.yaml").read_text())
    params["diff"] = {"tolerance": {"test_accuracy": {"abs": -0.01}}}
    with pytest.raises(ParamsError, match=r"diff\.tolerance\.test_accuracy\.abs"):
        parse_params(params)


def set_accuracy(root: Path, name: str, value: float) -> None:
    path = root / "plots" / name / "evaluation.json"
    metrics = json.loads(path.read_text())
    metrics["test_accuracy"] = value
    path.write_text(json.dumps(metrics))


@pytest.mark.slow
def test_fail_on_regression_exits_1_beyond_the_tolerance_and_0_within(repo):
    root, base = repo["root"], repo["first_run"]
    old = committed_metrics(root, base, "digits_sgd")["test_accuracy"]
    saved = (root / "plots" / "digits_sgd" / "evaluation.json").read_text()
    tolerance = yaml.safe_load((root / "params.yaml").read_text())["diff"]["tolerance"]
    allowed = tolerance["test_accuracy"]["abs"]
    try:
        set_accuracy(root, "digits_sgd", old - allowed - 0.02)  # a worse run, beyond the noise
        worse = diff(root, base, "--fail-on-regression", check=False)
        assert worse.returncode == 1, worse.stderr
        assert "error: 1 headline metric(s) worse than at " in worse.stderr
        assert f"digits_sgd: test_accuracy {old:.4f} → {old - allowed - 0.02:.4f}" in worse.stderr
        assert f"worse beyond its tolerance ±{allowed:g}" in worse.stderr
        assert "Worse beyond tolerance" in worse.stdout  # the comment says so too
        assert "Traceback" not in worse.stderr

        set_accuracy(root, "digits_sgd", old - allowed / 2)  # within the noise: a pass
        noise = diff(root, base, "--fail-on-regression", check=False)
        assert noise.returncode == 0, noise.stderr
        assert "| `digits_sgd` | test_accuracy |" in noise.stdout and " ≈ |" in noise.stdout
    finally:
        (root / "plots" / "digits_sgd" / "evaluation.json").write_text(saved)


@pytest.mark.slow
def test_fail_on_regression_against_a_base_without_metrics_is_not_a_pass(repo):
    result = diff(repo["root"], repo["no_outputs"], "--fail-on-regression", check=False)
    assert result.returncode == 2
    assert "has no committed metrics (metrics/*.json): --fail-on-regression has nothing" in (
        result.stderr
    )
    assert result.stdout == ""
