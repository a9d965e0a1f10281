"""What `atelier where` prints after a run: the report, the champions, the plots."""

from __future__ import annotations

import json
from pathlib import Path

from pipeline.core import paths

CHAMPIONS_DIR = paths.MODELS_DIR / "champions"


PLOTS_PAGE = Path("dvc_plots") / "index.html"


def where(root: Path = Path(".")) -> str:
    """Where a finished run left what a person reads: the report, the champions, the plots."""
    report = paths.REPORTS_DIR / "report.md"
    lines = [
        f"Report:     {report}"
        if (root / report).is_file()
        else f"Report:     none yet ({report}: `dvc repro report` writes it)"
    ]
    cards = sorted((root / CHAMPIONS_DIR).glob("*/card.json"))
    lines.append(f"Champions:  {CHAMPIONS_DIR}/<dataset>/ (model file and card.json)")
    for card_path in cards:
        card = _read_card(card_path)
        lines.append(
            f"  {card_path.parent.name:<16} {card.get('experiment', '?'):<24} "
            f"{card.get('metric', '?')} {_figure(card.get('value'))}"
        )
    if not cards:
        lines.append("  none yet (`dvc repro` runs select@<dataset> after evaluate)")
    lines.append(f"Plots:      `dvc plots show` writes {PLOTS_PAGE} (open it in a browser)")
    lines.append("Registry:   `atelier registry release <artifact>`; `atelier registry show`")
    return "\n".join(lines)


def _read_card(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _figure(value) -> str:
    return f"{value:.4f}" if isinstance(value, int | float) else "?"
