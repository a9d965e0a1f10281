"""Prefect flows that run the DVC pipeline: `training` (the stages in order) and `sweep`.

Every task runs a DVC stage through DVC's CLI, so `dvc.lock`, the DVC cache and the outputs are
exactly what `dvc repro` produces; the flows add scheduling, retries, workers and artifacts.
No stage logic lives here: a computation belongs in `pipeline/`.
"""
