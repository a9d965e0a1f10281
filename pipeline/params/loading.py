"""Reading `params.yaml` into `Params`, and turning pydantic's errors into lines that name the key
path (`experiments.fashion_mlp.epochs`), the value found and what is allowed."""

from __future__ import annotations

import difflib
import types
import typing
from pathlib import Path
from typing import Annotated, Any, Union

from pydantic import BaseModel, ValidationError

from pipeline.core.errors import ParamsError
from pipeline.core.yamlio import loads_yaml
from pipeline.params.experiments import MODEL_NAMES
from pipeline.params.schema import Params

# Keys params.yaml once had, and where their job went.
RETIRED_KEYS = {
    ("experiment_sets",): (
        ". Experiment sets are no longer part of params.yaml: they ship with the code "
        "(pipeline/params/sets.yaml). Write the experiments to run under `experiments`, "
        "settings spelled out, and delete `experiment_sets` (and any `<<: [*set, ...]`); "
        "`atelier sets` lists the sets, `atelier sets enable NAME` adds one"
    ),
}


def load_params(path: Path | str = "params.yaml") -> Params:
    """Read and validate `path`; raise `ParamsError` naming every mistake found."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ParamsError(
            f"{path} not found: run from the project root (where dvc.yaml is) or pass its path."
        ) from None
    raw = loads_yaml(text, source=str(path))  # YAML 1.2, as DVC reads it
    return parse_params(raw, source=str(path))


def parse_params(raw: Any, *, source: str = "params.yaml") -> Params:
    if not isinstance(raw, dict):
        raise ParamsError(f"{source} must be a mapping with keys base, data, split, experiments.")
    try:
        return Params.model_validate(raw)
    except ValidationError as exc:
        lines = [_describe(error) for error in exc.errors()]
        raise ParamsError(
            f"{source} has {len(lines)} problem{'s' if len(lines) > 1 else ''}:\n"
            + "\n".join(f"  - {line}" for line in lines)
            + "\nFix the key(s) named above; see README.md, section 'Configuration'."
        ) from None


def _key_path(loc: tuple) -> str:
    parts: list[str] = []
    for part in loc:
        # Discriminated unions add the tag to the location: experiments.x.model.mlp.units.
        if parts and parts[-1] == "model" and part in MODEL_NAMES:
            continue
        if part == "[key]":
            continue
        parts.append(f"[{part}]" if isinstance(part, int) else str(part))
    return ".".join(parts).replace(".[", "[")


def _describe(error: dict) -> str:
    loc = tuple(error["loc"])
    key = _key_path(loc)
    kind = error["type"]
    if kind == "extra_forbidden":
        allowed = _allowed_keys(loc[:-1])
        hint = ""
        close = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
        if close and loc not in RETIRED_KEYS:
            hint = f" (did you mean {close[0]!r}?)"
        where = _key_path(loc[:-1]) or "the top level"
        fix = RETIRED_KEYS.get(loc, "")
        return f"{key}: unknown key{hint}; allowed keys under {where}: {', '.join(allowed)}{fix}"
    if kind == "missing":
        return f"{key}: required key is missing"
    if kind == "union_tag_invalid":
        return f"{key}.name = {error['input'].get('name')!r}: unknown model; known models: " + (
            ", ".join(MODEL_NAMES)
        )
    if kind == "union_tag_not_found":
        return f"{key}: needs a `name`; known models: {', '.join(MODEL_NAMES)}"
    message = error["msg"]
    if message.startswith("Value error, "):
        message = message[len("Value error, ") :]
    if "[key]" in loc:
        return f"{key}: name {error['input']!r} {message.lower()} (letters, digits, underscores)"
    if not key:  # a check across sections: its message names the keys
        return message
    if isinstance(error["input"], dict):  # a check across a section's keys: name the section
        return f"{key}: {message}"
    return f"{key} = {error['input']!r}: {message}"


def _allowed_keys(loc: tuple) -> list[str]:
    """The field names of the model found at `loc`, walking the schema from `Params`."""
    annotation: Any = Params
    for part in loc:
        annotation = _unwrap(annotation, part)
        if annotation is None:
            return []
    annotation = _unwrap(annotation, None)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return list(annotation.model_fields)
    return []


def _unwrap(annotation: Any, part: Any) -> Any:
    origin = typing.get_origin(annotation)
    if origin is Annotated:
        return _unwrap(typing.get_args(annotation)[0], part)
    if origin in (Union, types.UnionType):
        for option in typing.get_args(annotation):
            fields = getattr(option, "model_fields", {})
            tag = fields.get("name")
            if part in MODEL_NAMES and tag is not None and part in typing.get_args(tag.annotation):
                return option
        return _unwrap(typing.get_args(annotation)[0], part) if part is None else None
    if part is None:
        return annotation
    if origin is dict:
        return typing.get_args(annotation)[1]
    if origin is list:
        return typing.get_args(annotation)[0]
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        field = annotation.model_fields.get(part)
        return field.annotation if field is not None else None
    return None
