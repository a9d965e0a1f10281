"""Line edits of a YAML file that leave every other byte as it was: comments, blank lines, order.

`atelier sets` adds and removes whole experiments and rewrites a few values (`data.datasets`,
`crossval`). Loading the file with ruamel.yaml's round-trip loader, changing the data and dumping
it keeps comments, but ruamel stores a comment with the entry *before* it: appending after the
last experiment would put the comment that introduces the next section between the old last
experiment and the new one, and removing an experiment would take the next one's comment with it.
So the edits here are made on the lines themselves, located by the round-trip parser's marks
(the line and column of every key), and the caller checks the result by parsing it.

What belongs to an entry `key: value` of a block mapping:
- its lines: from the key's line to the line before the next key at its level, less the blank
  lines and the comments at its own column or left of it at the end (those introduce what follows);
- its lead: the comment lines at the key's column directly above it (no blank line between).

Values written by `set_value` are rendered the way DVC's `dvc exp run -S` writes `params.yaml`
(ruamel.yaml round-trip dumper, `default_flow_style=False`): block sequences with the dash at the
key's column, `[]` and `{}` for empty ones, an empty value for null. A file in that form stays
byte for byte the same through a later `-S`, apart from the value it sets.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap

from pipeline.core.errors import ParamsError

KeyPath = tuple[str, ...]


@dataclass(frozen=True)
class Span:
    """Line numbers (0-based) of one entry: `lead` ≤ `start` (its key's line) < `end`."""

    lead: int
    start: int
    end: int
    column: int


def render(key: str, value: Any, column: int) -> str:
    """`key: value` as DVC's writer dumps it, indented to `column`."""
    yaml = YAML()
    yaml.default_flow_style = False
    stream = io.StringIO()
    yaml.dump({key: value}, stream)
    return indent(stream.getvalue(), column)


def indent(text: str, column: int) -> str:
    """`text` with `column` spaces before each non-blank line."""
    pad = " " * column
    return "".join(pad + line if line.strip() else line for line in text.splitlines(True))


def dedent(text: str, column: int) -> str:
    """`text` with `column` leading spaces taken off each line (a line must have them)."""
    lines = text.splitlines(True)
    if any(line.strip() and not line.startswith(" " * column) for line in lines):
        raise ValueError(f"a line is indented less than {column} spaces:\n{text}")
    return "".join(line[column:] if line.strip() else line for line in lines)


class YamlText:
    """A YAML document as lines, edited entry by entry; `text` is the result so far."""

    def __init__(self, text: str, *, source: str = "params.yaml") -> None:
        self.text = text
        self.source = source
        self._parsed: tuple[str, CommentedMap] | None = None

    # --- reading --------------------------------------------------------------------------

    def _root(self) -> CommentedMap:
        """The round-trip parse of `text`, parsed again only after an edit."""
        if self._parsed is None or self._parsed[0] != self.text:
            root = YAML(typ="rt").load(self.text)
            if not isinstance(root, CommentedMap):
                raise ParamsError(f"{self.source} must be a mapping of sections.")
            self._parsed = (self.text, root)
        return self._parsed[1]

    def mapping(self, path: KeyPath) -> CommentedMap | None:
        """The block mapping at `path`, or None when the key holds something else or nothing."""
        node: Any = self._root()
        for key in path:
            if not isinstance(node, CommentedMap) or key not in node:
                return None
            node = node[key]
        return node if isinstance(node, CommentedMap) else None

    def span(self, path: KeyPath) -> Span:
        """Where the entry at `path` is (every key on the way is in a block mapping)."""
        lines = self.text.splitlines(True)
        node: Any = self._root()
        end = len(lines)
        start = column = 0
        for depth, key in enumerate(path):
            if not isinstance(node, CommentedMap) or key not in node:
                raise KeyError(".".join(path[: depth + 1]))
            keys = list(node)
            start, column = node.lc.key(key)
            following = keys.index(key) + 1
            if following < len(keys):
                end = node.lc.key(keys[following])[0]
            node = node[key]
        while end > start + 1 and _belongs_after(lines[end - 1], column):
            end -= 1
        lead = start
        while lead > 0 and _comment_column(lines[lead - 1]) == column:
            lead -= 1
        return Span(lead, start, end, column)

    def entry_text(self, path: KeyPath) -> str:
        """The entry at `path` with its lead comments, moved to column 0."""
        span = self.span(path)
        lines = self.text.splitlines(True)
        return dedent("".join(lines[span.lead : span.end]), span.column)

    # --- editing --------------------------------------------------------------------------

    def _splice(self, first: int, last: int, new: str) -> None:
        lines = self.text.splitlines(True)
        self.text = "".join(lines[:first]) + new + "".join(lines[last:])

    def remove(self, path: KeyPath) -> None:
        """Delete the entry at `path` with its lead comments; an emptied mapping becomes `{}`."""
        span = self.span(path)
        self._splice(span.lead, span.end, "")
        parent = path[:-1]
        if parent and not self.mapping(parent):
            self.set_value(parent, {})

    def append(self, path: KeyPath, entries: str) -> None:
        """Add `entries` (block mapping entries written at column 0, lead comments included)
        after the last entry of the mapping at `path`, which may be empty (`{}`) or null."""
        mapping = self.mapping(path)
        if mapping:
            last = self.span((*path, list(mapping)[-1]))
            self._splice(last.end, last.end, indent(entries, last.column))
            return
        span = self.span(path)
        key_line = self.text.splitlines(True)[span.start]
        head = f"{' ' * span.column}{path[-1]}:{_eol_comment(key_line)}\n"
        self._splice(span.start, span.end, head + indent(entries, span.column + 2))

    def set_value(self, path: KeyPath, value: Any) -> None:
        """Write `value` at `path` in DVC's style; the key line's end-of-line comment stays.
        A key the mapping lacks is added after its last entry."""
        parent = self.mapping(path[:-1]) if path[:-1] else self._root()
        if parent is None:
            raise ParamsError(f"{self.source}: {'.'.join(path[:-1])} is not a section with keys.")
        if path[-1] not in parent:
            self.append(path[:-1], render(path[-1], value, 0))
            return
        span = self.span(path)
        key_line = self.text.splitlines(True)[span.start]
        new = render(path[-1], value, span.column)
        comment = _eol_comment(key_line)
        if comment:
            first, _, rest = new.partition("\n")
            new = f"{first}{comment}\n{rest}"
        self._splice(span.start, span.end, new)


def _comment_column(line: str) -> int | None:
    """The column of a comment-only line's `#`, or None for any other line."""
    stripped = line.lstrip(" ")
    return len(line) - len(stripped) if stripped.startswith("#") else None


def _belongs_after(line: str, column: int) -> bool:
    """A blank line, or a comment at `column` or left of it: it introduces what follows."""
    if not line.strip():
        return True
    found = _comment_column(line)
    return found is not None and found <= column


def _eol_comment(line: str) -> str:
    """The end-of-line comment of a key line, with the spaces before it; "" when none.

    The values `atelier sets` rewrites are names, numbers and lists of them, where ` #` can only
    start a comment."""
    body = line.rstrip("\n")
    match = re.search(r"\s+#.*$", body[body.index(":") + 1 :]) if ":" in body else None
    return match.group(0) if match else ""
