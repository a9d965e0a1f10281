"""`registry show`: one row per version, and the table people read.

A row's figures come only from a card that passed verification against `dvc.lock`. A version
whose files fail it is still listed, so the registry's history stays visible, but its row is
marked (`files: MISMATCH` or `unavailable`), carries the reason, and shows no experiment, model
or metric: a forged figure is never displayed as if it were real.
"""

from __future__ import annotations

from datetime import UTC

from pipeline.registry.errors import FilesMismatch, RegistryError
from pipeline.registry.rules import is_number
from pipeline.registry.versions import Version

PRIMARY_METRICS = ("test_accuracy", "macro_f1", "test_loss", "test_mae", "test_rmse")
VERIFIED, MISMATCH, UNAVAILABLE = "verified", "MISMATCH", "unavailable"


def version_row(
    version: Version,
    stages: list[str],
    card: dict | None,
    problem: RegistryError | None,
    metrics: set[str],
) -> dict:
    """The row of `version`: its verified card's figures, or the reason there are none.

    Args:
        version: the registered version.
        stages: the stages it holds.
        card: its verified card, or None when verification failed.
        problem: why verification failed (None when `card` is given).
        metrics: the metric names to show (`PRIMARY_METRICS` and the ranking metric).
    """
    card = card or {}
    if problem is None:
        files = VERIFIED
    else:
        files = MISMATCH if isinstance(problem, FilesMismatch) else UNAVAILABLE
    return {
        "version": version.version,
        "commit": version.commit,
        "created_at": version.created_at.astimezone(UTC).isoformat(),
        "author": version.author,
        "stages": stages,
        "files": files,
        "problem": None if problem is None else str(problem),
        "experiment": card.get("experiment"),
        "model": card.get("model"),
        "metric": card.get("metric"),
        "value": card.get("value"),
        "metrics": {
            k: v for k, v in card.get("metrics", {}).items() if k in metrics and is_number(v)
        },
    }


def format_show(state: dict) -> str:
    """`Registry.show()` as one table per artifact; unverified versions are listed below it."""
    blocks = []
    for name, entry in state.items():
        stages = ", ".join(f"{stage}: {held or '-'}" for stage, held in entry["stages"].items())
        header = f"{name} ({entry['dataset']}): latest {entry['latest'] or '-'}; {stages}"
        if not entry["versions"]:
            blocks.append(f"{header}\n  no versions yet")
            continue
        metric_names = sorted({m for row in entry["versions"] for m in row["metrics"]})
        columns = ["version", "stages", "commit", "created (UTC)", "files", "experiment", "model"]
        rows = [columns + metric_names]
        for row in entry["versions"]:
            verified = row["files"] == VERIFIED
            rows.append(
                [
                    row["version"],
                    ",".join(row["stages"]) or "-",
                    row["commit"][:7],
                    row["created_at"][:19].replace("T", " "),
                    "ok" if verified else row["files"],
                    row["experiment"] or ("?" if verified else "-"),
                    row["model"] or ("?" if verified else "-"),
                ]
                + [f"{row['metrics'][m]:.4f}" if m in row["metrics"] else "-" for m in metric_names]
            )
        widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
        table = [
            "  " + "  ".join(str(cell).ljust(width) for cell, width in zip(r, widths, strict=True))
            for r in rows
        ]
        notes = [
            f"  ! {row['version']} is not shown: {row['problem']}"
            for row in entry["versions"]
            if row["problem"]
        ]
        blocks.append("\n".join([header, *(line.rstrip() for line in table), *notes]))
    return "\n\n".join(blocks)
