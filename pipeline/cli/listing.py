"""What the help lists: the experiments, datasets, models and artifacts that exist, read from
params.yaml and the catalog only when help is shown."""

from __future__ import annotations

import functools
import textwrap
from pathlib import Path

from pipeline.core import paths
from pipeline.core.errors import AtelierError

REGISTRY_STAGES = ("staging", "prod")


HELP_WIDTH = 100


EXAMPLES = (
    ("check", "validate params.yaml"),
    ("sets enable mnist", "add the MNIST experiment set to params.yaml"),
    ("train digits_mlp", "train one experiment (what dvc repro train@digits_mlp runs)"),
    ("where", "the report, the champions, the plots"),
    ("diff main", "what changed since main, as Markdown"),
    ("registry show", "registered versions and their stages"),
    ("flow training -e digits_mlp", "the pipeline as a Prefect flow"),
    ("-q train fashion_mlp", "warnings and errors only"),
)


class Listing:
    """The experiments, datasets, models and registry artifacts that help lists."""

    def __init__(self, params_file: Path) -> None:
        self.params_file = Path(params_file)

    @functools.cached_property
    def params(self):
        """The parsed `Params`, or the message that says why they could not be read."""
        from pipeline.params import load_params

        try:
            return load_params(self.params_file)
        except (AtelierError, OSError, ValueError) as exc:
            return str(exc)

    def _unreadable(self) -> str | None:
        if not isinstance(self.params, str):
            return None
        reason = self.params.splitlines()[0] if self.params else "unknown error"
        check = "atelier check"
        if self.params_file != paths.PARAMS_FILE:
            check += f" --params {self.params_file}"
        return (
            f"{self.params_file} could not be read, so what it defines is not listed here:\n"
            f"  {reason}\n`{check}` names every problem."
        )

    def experiments(self) -> str:
        if (problem := self._unreadable()) is not None:
            return problem
        params = self.params
        rows = [
            (name, exp.dataset, _model_summary(exp)) for name, exp in params.experiments.items()
        ]
        lines = [f"Experiments ({self.params_file} `experiments`):", *_columns(rows)]
        lines += _disabled_sets(params)
        if params.crossval.experiments:
            lines += _wrapped(
                f"K-fold (--fold 0..{params.split.folds - 1}, crossval.experiments): "
                + ", ".join(params.crossval.experiments)
            )
        return "\n".join(lines)

    def datasets(self) -> str:
        from pipeline.data.catalog import CATALOG

        if (problem := self._unreadable()) is not None:
            return f"Datasets in the catalog: {', '.join(CATALOG)}.\n{problem}"
        enabled = list(self.params.data.datasets)
        rows = [(name, CATALOG[name].kind, CATALOG[name].task) for name in enabled]
        lines = [f"Datasets ({self.params_file} `data.datasets`):", *_columns(rows)]
        others = [name for name in CATALOG if name not in enabled]
        if others:
            lines += _wrapped(
                f"In the catalog (pipeline/data/catalog.py), not enabled: {', '.join(others)}"
                " (add to data.datasets)"
            )
        return "\n".join(lines)

    def sets(self) -> str:
        """The built-in experiment sets, each marked by whether params.yaml enables it."""
        from pipeline.params.sets import load_sets

        sets = load_sets()
        problem = self._unreadable()
        enabled = set() if problem is not None else set(self.params.experiments)
        rows = []
        for name, found in sets.items():
            state = found.state(enabled)
            mark = {"enabled": "*", "partly enabled": "~"}.get(state, " ")
            rows.append((f"{mark} {name}", ", ".join(found.datasets), found.description))
        lines = _wrapped(
            f"Experiment sets (pipeline/params/sets.yaml); * enabled: all of its experiments "
            f"are under {self.params_file} `experiments`; ~ partly:"
        )
        lines += [*_columns(rows), "Their experiments:"]
        for name, found in sets.items():
            lines += textwrap.wrap(
                f"{name}: {', '.join(found.experiments)}",
                width=HELP_WIDTH,
                initial_indent="  ",
                subsequent_indent="    ",
                break_on_hyphens=False,
            )
        if problem is not None:
            lines.append(problem)
        lines += _wrapped(
            "`atelier sets enable NAME` adds a set's experiments, dataset(s) and K-fold entries to "
            "params.yaml; `atelier sets disable NAME` removes them."
        )
        return "\n".join(lines)

    def models(self) -> str:
        from pipeline.params import MODEL_NAMES

        return "\n".join(_wrapped(f"Models (an experiment's model.name): {', '.join(MODEL_NAMES)}"))

    def artifacts(self) -> str:
        if (problem := self._unreadable()) is not None:
            return problem
        registry = self.params.registry
        rows = [
            (registry.artifact_name(name), name, registry.for_dataset(name).metric)
            for name in self.params.data.datasets
        ]
        return "\n".join(
            ["Registry artifacts (artifact, dataset, the metric that picks its champion):"]
            + _columns(rows)
            + [f"Stages: {', '.join(REGISTRY_STAGES)}"]
        )

    def summary(self, prog: str | None = None) -> str:
        """Everything that exists; with `prog`, the examples too."""
        if isinstance(self.params, str):
            sections = [self.datasets(), self.models()]
        else:
            sections = [self.experiments(), self.datasets(), self.models(), self.artifacts()]
        if prog is not None:
            sections.append(
                "Examples:\n"
                + "\n".join(_columns([(f"{prog} {cmd}", what) for cmd, what in EXAMPLES]))
            )
        return "\n\n".join(sections)


def _model_summary(experiment) -> str:
    if not experiment.is_keras:
        return f"{experiment.model.name} (scikit-learn)"
    epochs = f"{experiment.epochs} epoch{'s' if experiment.epochs > 1 else ''}"
    return f"{experiment.model.name}, {epochs}, batch {experiment.batch_size}"


def _disabled_sets(params) -> list[str]:
    """The built-in sets whose experiments are not all enabled, with the ones missing."""
    from pipeline.params.sets import load_sets

    off = {
        name: found.missing(params.experiments)
        for name, found in load_sets().items()
        if found.missing(params.experiments)
    }
    if not off:
        return []
    return _wrapped(
        "Experiment sets not enabled (`atelier sets enable <set>` adds one): "
        + "; ".join(f"{name} ({', '.join(members)})" for name, members in off.items())
    )


def _wrapped(text: str) -> list[str]:
    """A long line of a listing, wrapped; help keeps the listings' own line breaks."""
    return textwrap.wrap(text, width=HELP_WIDTH, subsequent_indent="  ", break_on_hyphens=False)


def _columns(rows: list[tuple[str, ...]]) -> list[str]:
    if not rows:
        return ["  (none)"]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    return [
        "  "
        + "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False))
        + "  "
        + row[-1]
        for row in rows
    ]
