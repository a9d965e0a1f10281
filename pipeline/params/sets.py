"""The built-in experiment sets, shipped with the code in `sets.yaml` next to this module.

A set is a named group of experiments, the dataset(s) they train on and, for some, the
experiments that are also cross-validated K-fold. `params.yaml` holds no sets: its `experiments`
are the enabled experiments, each written out once with its effective settings, because DVC's
`foreach` must see exactly those (it can neither filter a mapping nor nest interpolation).
`atelier sets enable NAME` copies a set into `params.yaml` and `disable` takes it out again
(`pipeline.params.switch`); a set counts as enabled when every one of its experiments is under
`params.yaml`'s `experiments`.
"""

from __future__ import annotations

import difflib
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from pipeline.core.errors import AtelierError
from pipeline.params.yamltext import YamlText

SETS_RESOURCE = "sets.yaml"  # in this package: pipeline/params/sets.yaml
SET_KEYS = ("description", "datasets", "crossval", "experiments")


@dataclass(frozen=True)
class ExperimentSet:
    """One set of `sets.yaml`.

    `experiments` maps each name to its settings as written; `texts` holds each experiment's
    lines as written (the comments above it first), moved to column 0, ready to be indented
    under `params.yaml`'s `experiments`.
    """

    name: str
    description: str
    datasets: tuple[str, ...]
    crossval: tuple[str, ...]
    experiments: Mapping[str, dict[str, Any]]
    texts: Mapping[str, str]

    def state(self, enabled: Collection[str]) -> str:
        """`enabled`, `partly enabled` or `not enabled`, given the enabled experiment names."""
        present = [name for name in self.experiments if name in enabled]
        if len(present) == len(self.experiments):
            return "enabled"
        return "partly enabled" if present else "not enabled"

    def missing(self, enabled: Collection[str]) -> list[str]:
        """The set's experiments that are not among `enabled`, in the set's order."""
        return [name for name in self.experiments if name not in enabled]


def sets_text() -> str:
    """The text of the shipped `sets.yaml`."""
    return resources.files("pipeline.params").joinpath(SETS_RESOURCE).read_text(encoding="utf-8")


def load_sets(path: Path | str | None = None) -> dict[str, ExperimentSet]:
    """Every set of `path` (default: the shipped `sets.yaml`), in file order.

    Raises:
        AtelierError: the file's layout is wrong (a set lacks `datasets` or `experiments`, an
            experiment name appears in two sets, a K-fold experiment is not in its set).
    """
    source = str(path) if path is not None else f"pipeline/params/{SETS_RESOURCE}"
    text = Path(path).read_text(encoding="utf-8") if path is not None else sets_text()
    try:
        # The shipped file: the fast (C) loader when installed, YAML 1.2 as DVC reads it.
        raw = YAML(typ="safe").load(text)
    except YAMLError as exc:
        raise AtelierError(f"{source} is not valid YAML: {exc}") from None
    if not isinstance(raw, dict) or not raw:
        raise AtelierError(f"{source} must map set names to sets.")
    located = YamlText(text, source=source)
    sets: dict[str, ExperimentSet] = {}
    owner: dict[str, str] = {}
    for name, body in raw.items():
        found = _parse_set(name, body, located, source)
        for experiment in found.experiments:
            if experiment in owner:
                raise AtelierError(
                    f"{source}: experiment {experiment!r} is in sets {owner[experiment]!r} and "
                    f"{name!r}; an experiment belongs to one set."
                )
            owner[experiment] = name
        sets[name] = found
    return sets


def _parse_set(name: str, body: Any, located: YamlText, source: str) -> ExperimentSet:
    where = f"{source}: set {name!r}"
    if not isinstance(body, dict):
        raise AtelierError(f"{where} must be a mapping with keys {', '.join(SET_KEYS)}.")
    unknown = sorted(set(body) - set(SET_KEYS))
    if unknown:
        raise AtelierError(f"{where} has unknown keys {unknown}; allowed: {', '.join(SET_KEYS)}.")
    experiments = body.get("experiments")
    datasets = body.get("datasets")
    if not isinstance(experiments, dict) or not experiments:
        raise AtelierError(f"{where} needs `experiments`, a mapping of one or more experiments.")
    if not isinstance(datasets, list) or not datasets:
        raise AtelierError(f"{where} needs `datasets`, the datasets its experiments train on.")
    crossval = body.get("crossval") or []
    strays = [experiment for experiment in crossval if experiment not in experiments]
    if strays:
        raise AtelierError(f"{where}: crossval names {strays}, which are not its experiments.")
    return ExperimentSet(
        name=name,
        description=str(body.get("description") or ""),
        datasets=tuple(datasets),
        crossval=tuple(crossval),
        experiments=experiments,
        texts={
            experiment: located.entry_text((name, "experiments", experiment))
            for experiment in experiments
        },
    )


def unknown_set(name: str, sets: Mapping[str, ExperimentSet]) -> AtelierError:
    """The error for a set name that `sets` lacks: the names it has, a close one first."""
    close = difflib.get_close_matches(name, list(sets), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return AtelierError(
        f"Unknown experiment set {name!r}{hint}. The sets: {', '.join(sets)}; "
        "`atelier sets` lists them with their experiments."
    )


def set_of(experiment: str, sets: Mapping[str, ExperimentSet]) -> ExperimentSet | None:
    """The set that defines `experiment`, or None."""
    return next((found for found in sets.values() if experiment in found.experiments), None)
