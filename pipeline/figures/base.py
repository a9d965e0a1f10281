"""The figure canvas every plot draws on: matplotlib Agg (no display, no pyplot state), PNG out.

`pipeline.figures` imports matplotlib (inside functions) and NumPy, never TensorFlow or Keras:
the report stage draws its pages in seconds."""

from __future__ import annotations

import io
from pathlib import Path

from pipeline.core.io import atomic_write_bytes

DPI = 110


def new_figure(width: float, height: float):
    """A matplotlib figure on the Agg canvas: no display and no global pyplot state."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def save_figure(figure, path: Path) -> None:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI)
    atomic_write_bytes(path, buffer.getvalue())
