"""`python -m pipeline diff <base-rev>`: one Markdown body for a pull request's metrics comment.

It compares the workspace (the pull request after `dvc repro`) with a git revision (its base):

- the params that changed, from `dvc params diff <base-rev> --json`;
- per experiment a table of old, new and delta for every numeric figure of its evaluation
  record (`plots/<experiment>/evaluation.json`), `test_accuracy` first, with an arrow for the
  direction of the change and a mark for better/worse; experiments without metrics at the base
  are flagged new, those gone from the workspace are listed as removed;
- where to see the plot diff (`dvc plots diff <base-rev>`, or a link passed by CI).

Figures are read with `git show <rev>:plots/<experiment>/evaluation.json` (an experiment is one
that has `metrics/<experiment>.json`; a revision from before the evaluation records is read from
that file): they are committed to git (`cache: false`), so no DVC remote is needed. The body
starts with a hidden marker (`COMMENT_MARKER`) by which CI finds and updates its one comment
instead of adding another.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

from pipeline.core.errors import AtelierError, RegressionFound
from pipeline.core.io import atomic_write_bytes
from pipeline.core.metrics import direction, sort_key
from pipeline.stages.diff_checks import (
    HEADLINES,
    ExperimentDiff,
    Tolerances,
    better,
    hardware_notes,
    headline_metric,
    load_tolerances,
    regression_lines,
    regressions,
)
from pipeline.stages.revisions import (
    metrics_at,
    metrics_in_workspace,
    params_diff,
    resolve_revision,
)

log = logging.getLogger(__name__)

COMMENT_MARKER = "<!-- atelier-metrics -->"
# Shown first, in this order; the other numeric keys follow in a collapsed section.
HEADLINE = (
    "test_accuracy",
    "test_mae",
    "test_rmse",
    "test_r2",
    "micro_f1",
    "subset_accuracy",
    "hamming_loss",
    "ensemble_test_mae",
    "test_mae_mean",
    "val_mae_mean",
    "macro_f1",
    "test_loss",
    "weighted_f1",
    "macro_precision",
    "macro_recall",
    "val_accuracy",
    "val_mae",
    "val_loss",
    "cv_mean",
    "train_time_s",
    "params_count",
)
TOLERANCE = 1e-9


# --- Markdown -----------------------------------------------------------------------------------


def _format(key: str, value) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool) or not isinstance(value, int | float):
        return f"`{value}`"
    if direction(key) == "neutral" or (isinstance(value, int) and not isinstance(value, bool)):
        return f"{int(value):,}"
    if key == "train_time_s":
        return f"{value:.1f}"
    return f"{value:.4f}"


def _delta(key: str, old, new, tolerances: Tolerances = None) -> str:
    if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in (old, new)):
        return "" if old == new else "changed"
    delta = new - old
    if abs(delta) <= TOLERANCE:
        return "="
    arrow = "↑" if delta > 0 else "↓"
    if direction(key) == "neutral":
        text = f"{delta:+,}" if isinstance(delta, int) else f"{delta:+.4f}"
        return f"{text} {arrow}"
    text = f"{delta:+.1f}" if key == "train_time_s" else f"{delta:+.4f}"
    if float(text) == 0:  # a change below the precision shown: neither better nor worse
        return "≈"
    tolerance = (tolerances or {}).get(key)
    if tolerance is not None and tolerance.allows(old, new):  # noise, not a change
        return f"{text} ≈"
    improved = better(key, delta)
    mark = "" if improved is None else (" 🟢" if improved else " 🔴")
    return f"{text} {arrow}{mark}"


def _ordered_keys(old: dict, new: dict) -> tuple[list[str], list[str]]:
    """(headline keys, other numeric keys) present on either side."""
    numeric = {
        key
        for side in (old, new)
        for key, value in side.items()
        if isinstance(value, int | float) and not isinstance(value, bool)
    }
    headline = [key for key in HEADLINE if key in numeric]
    rest = sorted(numeric - set(headline))
    return headline, rest


def _table(
    keys: list[str], old: dict, new: dict, base_label: str, tolerances: Tolerances = None
) -> list[str]:
    rows = [f"| metric | {base_label} | this revision | Δ |", "|---|--:|--:|--:|"]
    for key in keys:
        rows.append(
            f"| {key} | {_format(key, old.get(key))} | {_format(key, new.get(key))} "
            f"| {_delta(key, old.get(key), new.get(key), tolerances)} |"
        )
    return rows


def _experiment_block(
    diff: ExperimentDiff, base_label: str, tolerances: Tolerances = None
) -> list[str]:
    if diff.new is None:
        return [f"#### `{diff.name}` — removed", "", f"It had metrics at {base_label} only.", ""]
    new = diff.new
    about = f"`{new.get('model', '?')}` on `{new.get('dataset', '?')}`"
    if diff.old is None:
        headline, rest = _ordered_keys({}, new)
        lines = [
            f"#### `{diff.name}` — 🆕 new in this revision ({about})",
            "",
            f"No metrics at {base_label}; its figures now:",
            "",
            "| metric | value |",
            "|---|--:|",
            *[f"| {key} | {_format(key, new[key])} |" for key in headline],
            "",
        ]
        return lines
    headline, rest = _ordered_keys(diff.old, new)
    key = headline_metric(new)
    value = new.get(key)
    change = _delta(key, diff.old.get(key), value, tolerances)
    lines = [
        f"#### `{diff.name}` ({about}): {key} {_format(key, value)} ({change or 'n/a'})",
        "",
        *_table(headline, diff.old, new, base_label, tolerances),
        "",
    ]
    changed_text = [
        key
        for key in sorted(set(diff.old) | set(new))
        if not isinstance(new.get(key, diff.old.get(key)), int | float)
        and diff.old.get(key) != new.get(key)
    ]
    if changed_text:
        lines += [
            "Changed: "
            + ", ".join(f"{key} `{diff.old.get(key)}` → `{new.get(key)}`" for key in changed_text),
            "",
        ]
    if rest:
        lines += [
            "<details><summary>All other metrics (per class, epochs, spread)</summary>",
            "",
            *_table(rest, diff.old, new, base_label, tolerances),
            "",
            "</details>",
            "",
        ]
    return lines


def _params_block(changes: dict[str, dict[str, dict]], base_label: str) -> list[str]:
    rows = [
        (file, key, change.get("old"), change.get("new"))
        for file, keys in sorted(changes.items())
        for key, change in sorted(keys.items())
    ]
    if not rows:
        return [f"No params changed since {base_label}.", ""]
    lines = ["| param | " + base_label + " | this revision |", "|---|---|---|"]
    for file, key, old, new in rows:
        name = key if file == "params.yaml" else f"{file}: {key}"
        lines.append(f"| `{name}` | {_param_value(old)} | {_param_value(new)} |")
    return [*lines, ""]


def _param_value(value) -> str:
    if value is None:
        return "—"
    text = json.dumps(value) if isinstance(value, dict | list) else str(value)
    return f"`{text}`".replace("|", "\\|")


def _order(diff: ExperimentDiff) -> tuple:
    """Experiments with new metrics first, by headline metric, best first."""
    key = headline_metric(diff.new or diff.old or {})
    value = (diff.new or {}).get(key)
    score = value if isinstance(value, int | float) and not isinstance(value, bool) else None
    return (diff.new is None, HEADLINES.index(key), sort_key(key, score))


def _summary_lines(
    diffs: list[ExperimentDiff], base_label: str, tolerances: Tolerances = None
) -> list[str]:
    """The headline table, then who is new, removed or not evaluated."""
    lines = [
        f"| experiment | metric | at {base_label} | now | Δ |",
        "|---|---|--:|--:|--:|",
    ]
    for diff in diffs:
        key = headline_metric(diff.new or diff.old or {})
        old_value = (diff.old or {}).get(key)
        new_value = (diff.new or {}).get(key)
        flag = " 🆕 new" if diff.old is None else (" (removed)" if diff.new is None else "")
        lines.append(
            f"| `{diff.name}`{flag} | {key} | {_format(key, old_value)} "
            f"| {_format(key, new_value)} "
            f"| {_delta(key, old_value, new_value, tolerances) if diff.old and diff.new else ''} |"
        )
    return lines if diffs else ["No experiment has metrics on either side."]


def render_markdown(
    *,
    base_rev: str,
    base_commit: str,
    params_changes: dict,
    old_metrics: dict[str, dict],
    new_metrics: dict[str, dict],
    plots_url: str | None = None,
    not_evaluated: list[str] | None = None,
    tolerances: Tolerances = None,
) -> str:
    """The comment body; pure function of its inputs (tested directly and through the CLI)."""
    base_label = f"`{base_rev}` ({base_commit[:7]})" if base_rev != base_commit else base_commit[:7]
    not_evaluated = sorted(not_evaluated or [])
    names = sorted((set(old_metrics) | set(new_metrics)) - set(not_evaluated))
    diffs = [ExperimentDiff(n, old_metrics.get(n), new_metrics.get(n)) for n in names]

    diffs.sort(key=_order)
    new_ones = [d.name for d in diffs if d.old is None and d.new is not None]
    removed = [d.name for d in diffs if d.new is None]

    lines = [COMMENT_MARKER, f"## Metrics: this revision vs {base_label}", ""]
    lines += _summary_lines(diffs, base_label, tolerances)
    lines += regression_lines(diffs, tolerances) + hardware_notes(diffs)
    lines.append("")
    if new_ones:
        lines += [
            f"🆕 New in this revision (no metrics at {base_label}): "
            + ", ".join(f"`{name}`" for name in new_ones),
            "",
        ]
    if removed:
        lines += [
            "Removed in this revision: " + ", ".join(f"`{name}`" for name in removed),
            "",
        ]
    if not_evaluated:
        lines += [
            "⚠️ In params.yaml but without metrics in this revision (run `dvc repro`): "
            + ", ".join(f"`{name}`" for name in not_evaluated),
            "",
        ]
    lines += ["### Params changed", "", *_params_block(params_changes, base_label)]
    lines += ["### Per experiment", ""]
    for diff in diffs:
        lines += _experiment_block(diff, base_label, tolerances)
    lines += ["### Plots", ""]
    if plots_url:
        lines.append(
            f"Confusion matrices and training curves, both revisions: [plots diff]({plots_url})."
        )
    lines.append(
        f"Locally: `dvc plots diff {base_rev}` (opens `dvc_plots/index.html`) and "
        f"`dvc metrics diff {base_rev} --md`; per experiment the figures are in "
        "`reports/report.md`."
    )
    lines += [
        "",
        "<sub>🟢 better, 🔴 worse (lower is better for losses, errors (MAE, MSE, RMSE), "
        "spreads and training time); ↑/↓ the direction of the change; ≈ a change within "
        "the metric's tolerance (`diff.tolerance` in params.yaml: run-to-run noise) or smaller "
        "than the precision shown.</sub>",
    ]
    return "\n".join(lines) + "\n"


def build_diff(
    base_rev: str,
    *,
    root: Path = Path("."),
    plots_url: str | None = None,
    experiments: list[str] | None = None,
) -> str:
    """The Markdown comparing the workspace with `base_rev` (see the module docstring)."""
    base_commit = resolve_revision(base_rev, root)
    new_metrics = metrics_in_workspace(root, experiments)
    return render_markdown(
        tolerances=load_tolerances(root),
        base_rev=base_rev,
        base_commit=base_commit,
        params_changes=params_diff(base_commit, root),
        old_metrics=metrics_at(base_commit, root),
        new_metrics=new_metrics,
        plots_url=plots_url,
        not_evaluated=[name for name in experiments or [] if name not in new_metrics],
    )


def write_diff(
    base_rev: str,
    *,
    root: Path = Path("."),
    output: Path | None = None,
    plots_url: str | None = None,
    experiments: list[str] | None = None,
    fail_on_regression: bool = False,
) -> str:
    """`build_diff`, written to `output` or to stdout (the CLI's `diff` subcommand).

    With `fail_on_regression`, raises `RegressionFound` (exit status 1) after writing when a
    headline metric is worse than at `base_rev` beyond its tolerance, and `AtelierError`
    (status 2) before writing when `base_rev` has no metrics to compare with.
    """
    old = metrics_at(resolve_revision(base_rev, root), root) if fail_on_regression else {}
    if fail_on_regression and not old:
        raise AtelierError(
            f"{base_rev} has no committed metrics (metrics/*.json): --fail-on-regression has "
            "nothing to compare with, so it cannot pass. Compare with a revision that ran the "
            "pipeline, or drop the flag for this first run."
        )
    body = build_diff(base_rev, root=root, plots_url=plots_url, experiments=experiments)
    if output is None:
        sys.stdout.write(body)
    else:
        atomic_write_bytes(output, body.encode())
        log.info("metrics diff against %s written to %s", base_rev, output)
    if fail_on_regression:
        new = metrics_in_workspace(root, experiments)
        both = sorted(set(old) & set(new))
        found = regressions(
            [ExperimentDiff(name, old[name], new[name]) for name in both], load_tolerances(root)
        )
        if found:
            raise RegressionFound(
                f"{len(found)} headline metric(s) worse than at {base_rev} beyond tolerance: "
                + "; ".join(found)
                + ". Fix the regression, or widen diff.tolerance.<metric> in params.yaml if "
                "the change is run-to-run noise."
            )
    return body
