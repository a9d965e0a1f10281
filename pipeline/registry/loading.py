"""`load`: a registered model, ready to predict, in one call."""

from __future__ import annotations

import tempfile
from pathlib import Path

from pipeline.registry.core import Registry
from pipeline.stages.select import BASELINE_FILE


def load(
    artifact: str,
    stage: str | None = "prod",
    *,
    version: str | None = None,
    root: Path | str = Path("."),
):
    """Load a registered model: `load("fashion-mnist-classifier", stage="prod")`.

    Fetches the version's files with `Registry.get` (verified against dvc.lock) and returns the
    Keras model loaded with `safe_mode=True` (no arbitrary code from the file), or a
    `LinearPredictor` when the champion is the scikit-learn baseline.
    """
    registry = Registry(root)
    with tempfile.TemporaryDirectory(prefix="atelier-load-") as tmp:
        path = registry.get(artifact, tmp, stage=None if version else stage, version=version)
        if path.name == BASELINE_FILE:
            from pipeline.modeling.models import LinearPredictor

            return LinearPredictor.load(path)
        import keras

        return keras.saving.load_model(path, safe_mode=True)
