"""Reading `params.yaml` the way DVC reads it: YAML 1.2, through ruamel.yaml's safe loader.

DVC parses params files with `ruamel.yaml` (`YAML(typ="safe")`, YAML 1.2), so `1e-3` is the
float 0.001 and `yes`/`no`/`on` are strings; PyYAML (YAML 1.1) reads `1e-3` as a string and
`yes` as `True`. Reading the file with the same resolver and constructor as DVC means the
schema validates exactly the values DVC records in `dvc.lock` and passes to `-S` overrides.
Duplicate keys are refused, as DVC refuses them (PyYAML silently keeps the last one).

The pure-Python parser is used instead of the C one DVC picks when `ruamel.yaml.clib` is
installed: both feed the same resolver and constructor, so the values are the same, and the pure
parser's error messages are more precise.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.constructor import DuplicateKeyError
from ruamel.yaml.error import MarkedYAMLError, StreamMark, YAMLError
from ruamel.yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode
from ruamel.yaml.reader import ReaderError

from pipeline.core.errors import ParamsError


def load_yaml(path: Path | str) -> Any:
    """Parse the YAML file at `path` into plain dicts, lists and scalars, as DVC would.

    Raises:
        FileNotFoundError: `path` does not exist (callers word their own hint).
        ParamsError: the file is not valid YAML 1.2 or repeats a key; the message names the
            file, the line and column, and for a duplicate key its path and both lines.
    """
    path = Path(path)
    return loads_yaml(path.read_text(encoding="utf-8"), source=str(path))


def loads_yaml(text: str, *, source: str = "params.yaml") -> Any:
    """Parse YAML `text`; `source` names it in error messages. An empty document gives None."""
    try:
        return YAML(typ="safe", pure=True).load(text)
    except DuplicateKeyError as exc:
        raise _duplicate_key_error(text, source, exc) from None
    except MarkedYAMLError as exc:
        raise ParamsError(f"{source} is not valid YAML: {_describe(exc)}") from None
    except ReaderError as exc:
        line = text.count("\n", 0, exc.position) + 1
        column = exc.position - (text.rfind("\n", 0, exc.position) + 1) + 1
        char = exc.character
        char = f"U+{char:04X}" if isinstance(char, int) else repr(char)
        raise ParamsError(
            f"{source} is not valid YAML: line {line}, column {column}: character {char} "
            f"is not allowed ({exc.reason}); delete it."
        ) from None
    except YAMLError as exc:
        raise ParamsError(f"{source} is not valid YAML: {exc}") from None


def _describe(exc: MarkedYAMLError) -> str:
    """`line L, column C: problem (context at line L, column C)`, lines counted from 1."""
    mark = exc.problem_mark or exc.context_mark
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
    problem = exc.problem or exc.context or "invalid syntax"
    context = ""
    if exc.context and exc.problem and exc.context_mark is not None:
        context = (
            f" ({exc.context} at line {exc.context_mark.line + 1}, "
            f"column {exc.context_mark.column + 1})"
        )
    return f"{where}{problem}{context}"


def _duplicate_key_error(text: str, source: str, exc: DuplicateKeyError) -> ParamsError:
    second = exc.problem_mark
    found = _find_duplicate(text, second.line, second.column)
    if found is None:  # not located in the node tree: fall back to ruamel's own marks
        first_line = exc.context_mark.line + 1
        return ParamsError(
            f"{source} repeats a key at line {second.line + 1} (in the mapping that starts at "
            f"line {first_line}): {exc.problem}. DVC refuses duplicate keys; keep one of them."
        )
    key_path, first = found
    if first.line == second.line:  # a flow mapping: {x: 1, x: 2}
        where = f"line {first.line + 1}, columns {first.column + 1} and {second.column + 1}"
    else:
        where = f"line {first.line + 1} and at line {second.line + 1}"
    return ParamsError(
        f"{source} sets {key_path} twice, at {where}. "
        "DVC refuses duplicate keys: delete or rename one of them."
    )


def _find_duplicate(text: str, line: int, column: int) -> tuple[str, StreamMark] | None:
    """The key path of the key written at (`line`, `column`) and the mark of its first
    occurrence in the same mapping, or None when that key is not found."""
    yaml = YAML(typ="safe", pure=True)
    root = yaml.compose(text)
    constructor = yaml.constructor  # bound to the same YAML 1.2 resolver as the load
    for path, mapping in _mappings(root):
        seen: dict[Any, StreamMark] = {}
        for key_node, _ in mapping.value:
            if not isinstance(key_node, ScalarNode):
                continue
            key = constructor.construct_object(key_node, deep=True)
            mark = key_node.start_mark
            if (mark.line, mark.column) == (line, column) and key in seen:
                return _join((*path, str(key))), seen[key]
            seen.setdefault(key, mark)
    return None


def _mappings(root: Node | None) -> Iterator[tuple[tuple[str, ...], MappingNode]]:
    """Every mapping node under `root`, in document order, with its key path; a node reached
    again through an alias is visited once, where its anchor is."""
    visited: set[int] = set()
    stack: list[tuple[Node | None, tuple[str, ...]]] = [(root, ())]
    while stack:
        node, path = stack.pop()
        if node is None or id(node) in visited:
            continue
        visited.add(id(node))
        if isinstance(node, MappingNode):
            yield path, node
            children = [
                (value, (*path, str(key.value) if isinstance(key, ScalarNode) else "?"))
                for key, value in node.value
            ]
        elif isinstance(node, SequenceNode):
            children = [(item, (*path, f"[{index}]")) for index, item in enumerate(node.value)]
        else:
            continue
        stack.extend(reversed(children))


def _join(parts: tuple[str, ...]) -> str:
    """`experiments.x.model.units[0]`: the key path style of the schema's messages."""
    return ".".join(parts).replace(".[", "[")
