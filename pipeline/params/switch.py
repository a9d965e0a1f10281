"""`atelier sets enable|disable NAME`: copy a built-in set into `params.yaml`, or take it out.

Enabling a set adds its experiments under `experiments` (as `sets.yaml` writes them, comments
included), its datasets to `data.datasets` and its K-fold experiments to `crossval`. Disabling
removes its experiments, the datasets no remaining experiment trains on, and its K-fold entries
(an emptied `crossval` gets `dataset` null and `folds` []). Every other byte of the file stays as
it was, so enabling and then disabling a set gives back the same file.

Nothing is written unless the edited file parses to exactly the intended data and passes the
schema: an invalid result is refused with the schema's own message.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from pipeline.core import paths
from pipeline.core.errors import AtelierError, ParamsError
from pipeline.core.io import atomic_write_bytes
from pipeline.core.yamlio import loads_yaml
from pipeline.params.experiments import Experiment
from pipeline.params.loading import parse_params
from pipeline.params.sets import ExperimentSet, load_sets, unknown_set
from pipeline.params.yamltext import YamlText


@dataclass(frozen=True)
class SetChange:
    """What `enable_set` or `disable_set` did to the params file (nothing: empty tuples)."""

    name: str
    enabled: bool
    path: Path
    experiments: tuple[str, ...] = ()
    datasets: tuple[str, ...] = ()
    crossval: tuple[str, ...] = ()

    def describe(self) -> str:
        verb, sign = ("enabled", "+") if self.enabled else ("disabled", "-")
        if not self.experiments:
            return f"{self.path}: set {self.name!r} is already {verb}; nothing changed."
        lines = [f"{self.path}: set {self.name!r} {verb}."]
        lines.append(f"  experiments: {sign} {', '.join(self.experiments)}")
        if self.datasets:
            lines.append(f"  data.datasets: {sign} {', '.join(self.datasets)}")
        if self.crossval:
            lines.append(f"  crossval.experiments: {sign} {', '.join(self.crossval)}")
        return "\n".join(lines)


def enable_set(
    name: str, path: Path | str = paths.PARAMS_FILE, *, sets: dict[str, ExperimentSet] | None = None
) -> SetChange:
    """Add set `name` to the params file at `path` (see the module docstring).

    Raises:
        AtelierError: `name` is not a set, or an experiment of the set is already defined
            differently in the file (the keys that differ are named).
        ParamsError: the file is invalid now, or would be after the change.
    """
    chosen = _choose(name, sets)
    path = Path(path)
    text, raw = _read(path)
    experiments = raw.get("experiments") or {}
    _refuse_clashes(chosen, experiments)
    added = chosen.missing(experiments)
    if not added:
        return SetChange(name, True, path)
    edit = YamlText(text, source=str(path))
    expected = copy.deepcopy(raw)
    edit.append(("experiments",), "".join(chosen.texts[experiment] for experiment in added))
    expected["experiments"] = {**experiments, **{e: chosen.experiments[e] for e in added}}
    datasets = list(raw["data"]["datasets"])
    new_datasets = [dataset for dataset in chosen.datasets if dataset not in datasets]
    if new_datasets:
        _set(edit, expected, ("data", "datasets"), datasets + new_datasets)
    new_crossval = _enable_crossval(edit, expected, chosen, raw)
    _write(path, edit, expected, f"with set {name!r} enabled")
    return SetChange(name, True, path, tuple(added), tuple(new_datasets), new_crossval)


def disable_set(
    name: str, path: Path | str = paths.PARAMS_FILE, *, sets: dict[str, ExperimentSet] | None = None
) -> SetChange:
    """Remove set `name` from the params file at `path` (see the module docstring).

    Raises:
        AtelierError: `name` is not a set.
        ParamsError: the file is invalid now, or would be after the change (removing the last
            dataset, for one).
    """
    chosen = _choose(name, sets)
    path = Path(path)
    text, raw = _read(path)
    experiments = raw.get("experiments") or {}
    removed = [experiment for experiment in chosen.experiments if experiment in experiments]
    if not removed:
        return SetChange(name, False, path)
    edit = YamlText(text, source=str(path))
    expected = copy.deepcopy(raw)
    for experiment in removed:
        edit.remove(("experiments", experiment))
    remaining = {key: value for key, value in experiments.items() if key not in removed}
    expected["experiments"] = remaining
    used = {settings.get("dataset") for settings in remaining.values()}
    datasets = list(raw["data"]["datasets"])
    dropped = [name for name in chosen.datasets if name in datasets and name not in used]
    if dropped:
        kept = [dataset for dataset in datasets if dataset not in dropped]
        _set(edit, expected, ("data", "datasets"), kept)
    dropped_crossval = _disable_crossval(edit, expected, removed, raw)
    _write(path, edit, expected, f"with set {name!r} disabled")
    return SetChange(name, False, path, tuple(removed), tuple(dropped), dropped_crossval)


# --- the steps ----------------------------------------------------------------------------------


def _choose(name: str, sets: dict[str, ExperimentSet] | None) -> ExperimentSet:
    sets = load_sets() if sets is None else sets
    if name not in sets:
        raise unknown_set(name, sets)
    return sets[name]


def _read(path: Path) -> tuple[str, dict[str, Any]]:
    """The file's text and data; a file that is invalid now is refused before any edit."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ParamsError(
            f"{path} not found: run from the project root (where dvc.yaml is) or pass --params."
        ) from None
    raw = loads_yaml(text, source=str(path))
    try:
        parse_params(raw, source=str(path))
    except ParamsError as exc:
        message = f"{exc}\nNothing was changed: `atelier sets` edits a valid file."
        raise ParamsError(message) from None
    return text, raw


def _refuse_clashes(chosen: ExperimentSet, experiments: dict[str, Any]) -> None:
    """An experiment of the set that the file defines differently blocks the set."""
    for name, settings in chosen.experiments.items():
        if name not in experiments:
            continue
        differences = _differences(settings, experiments[name])
        if differences:
            raise AtelierError(
                f"Set {chosen.name!r} defines experiment {name!r}, and params.yaml already has an "
                f"experiment of that name that differs ({'; '.join(differences)}). Nothing was "
                f"changed: rename or remove experiments.{name} first."
            )


def _differences(ours: dict[str, Any], theirs: Any) -> list[str]:
    """`key: set value ≠ file value` for each effective setting that differs (defaults filled)."""
    mine = Experiment.model_validate(ours).model_dump(mode="json")
    try:
        other = Experiment.model_validate(theirs).model_dump(mode="json")
    except ValidationError:
        return ["its settings are not a valid experiment"]
    return [f"{key}: {mine[key]!r} ≠ {other[key]!r}" for key in mine if mine[key] != other[key]]


def _set(edit: YamlText, expected: dict[str, Any], key_path: tuple[str, ...], value: Any) -> None:
    edit.set_value(key_path, value)
    node = expected
    for key in key_path[:-1]:
        node = node.setdefault(key, {})
    node[key_path[-1]] = value


def _enable_crossval(
    edit: YamlText, expected: dict[str, Any], chosen: ExperimentSet, raw: dict[str, Any]
) -> tuple[str, ...]:
    """Add the set's K-fold experiments; `dataset` and `folds` are filled in when empty."""
    crossval = raw.get("crossval") or {}
    current = list(crossval.get("experiments") or [])
    added = [name for name in chosen.crossval if name not in current]
    if not added:
        return ()
    dataset = chosen.experiments[added[0]]["dataset"]
    if current and crossval.get("dataset") != dataset:
        raise AtelierError(
            f"Set {chosen.name!r} cross-validates {', '.join(added)} on dataset {dataset!r}, but "
            f"crossval already runs {', '.join(current)} on {crossval.get('dataset')!r}, and "
            "K-fold runs one dataset's experiments. Nothing was changed: empty "
            "crossval.experiments first, or disable the set that filled it."
        )
    if crossval.get("dataset") != dataset:
        _set(edit, expected, ("crossval", "dataset"), dataset)
    _set(edit, expected, ("crossval", "experiments"), current + added)
    folds = (raw.get("split") or {}).get("folds", 0)
    if not crossval.get("folds") and folds >= 2:
        _set(edit, expected, ("crossval", "folds"), list(range(folds)))
    return tuple(added)


def _disable_crossval(
    edit: YamlText, expected: dict[str, Any], removed: list[str], raw: dict[str, Any]
) -> tuple[str, ...]:
    """Drop removed experiments from K-fold; an emptied crossval gets no dataset and no folds."""
    crossval = raw.get("crossval") or {}
    current = list(crossval.get("experiments") or [])
    dropped = [name for name in current if name in removed]
    if not dropped:
        return ()
    kept = [name for name in current if name not in removed]
    _set(edit, expected, ("crossval", "experiments"), kept)
    if not kept:
        if crossval.get("dataset") is not None:
            _set(edit, expected, ("crossval", "dataset"), None)
        if crossval.get("folds"):
            _set(edit, expected, ("crossval", "folds"), [])
    return tuple(dropped)


def _write(path: Path, edit: YamlText, expected: dict[str, Any], what: str) -> None:
    """Check the edited text, then replace the file; an invalid result writes nothing."""
    source = f"{path} {what}"
    result = loads_yaml(edit.text, source=source)
    if result != expected:
        raise AtelierError(
            f"Could not edit {path} in place (its layout is unusual here): nothing was changed. "
            "Edit it by hand: the set's experiments are in pipeline/params/sets.yaml."
        )
    parse_params(result, source=source)
    atomic_write_bytes(path, edit.text.encode("utf-8"))
