"""The task kinds, and what each is judged by.

A task kind's *headline* metric ranks its experiments in the report, the flows' leaderboards and
the metric diff; which way it is better is `pipeline.core.metrics.direction`'s one rule.
Its *summary* is what `metrics/<experiment>.json` holds, the figures `dvc exp show`, `dvc metrics
diff` and the registry's cards compare (headline first); the evaluate stage's full record, run
facts and secondary figures included, is `plots/<experiment>/evaluation.json`.
Its *Keras metric* is what training records per epoch (`history.csv`, `val_<metric>`).
Adding a kind means a new module beside `classification`, `regression` and `multilabel` and an
entry here.
"""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.core.metrics import sort_key


@dataclass(frozen=True)
class TaskKind:
    name: str
    headline: str  # the test metric experiments of this kind are ranked by
    keras_metric: str  # the per-epoch metric training records beside the loss
    order: int  # where its experiments come in a leaderboard that mixes kinds
    summary: tuple[str, ...]  # the keys of metrics/<experiment>.json, headline first

    def summarize(self, evaluation: dict) -> dict:
        """The summary figures of an evaluation record (`metrics/<experiment>.json`)."""
        return {key: evaluation[key] for key in self.summary if key in evaluation}


TASKS = {
    kind.name: kind
    for kind in (
        TaskKind(
            "classification",
            "test_accuracy",
            "accuracy",
            0,
            summary=("test_accuracy", "macro_f1", "test_loss"),
        ),
        TaskKind("regression", "test_mae", "mae", 1, summary=("test_mae", "test_rmse", "test_r2")),
        TaskKind(
            "multilabel",
            "micro_f1",
            "binary_accuracy",
            2,
            summary=("micro_f1", "macro_f1", "subset_accuracy"),
        ),
    )
}


def task_kind(name: str) -> TaskKind:
    return TASKS[name]


def rank(task: str, metrics: dict, name: str = "") -> tuple:
    """Sort key of an experiment among others: by kind, then headline metric best first."""
    kind = TASKS[task]
    value = metrics.get(kind.headline)
    number = float(value) if isinstance(value, int | float) else None
    return (kind.order, sort_key(kind.headline, number), name)
