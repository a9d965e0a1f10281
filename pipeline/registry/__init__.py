"""The model registry: versions and stages of each dataset's champion, as GTO git tags.

`from pipeline import registry as reg; reg.Registry(root).promote(...)`, or from the shell
`python -m pipeline registry register|promote|release|rollback|show|get`. The modules:

- `core`: the `Registry` (register, promote, release, rollback, show, get);
- `store`: a version's files read through DVC and verified against `dvc.lock` at the version's
  commit, the one check every reader goes through before it decides or hands anything out;
- `rules`: the promotion rules over verified cards, and the text of promotions and releases;
- `showing`: the rows and table of `registry show`, which marks a version that fails the check;
- `versions`, `tags`, `workspace`: version names, GTO's git tags, `register`'s preconditions;
- `loading`: `load`, a registered model ready to predict.
"""

from pipeline.registry.core import Registry
from pipeline.registry.errors import (
    FilesMismatch,
    FilesUnavailable,
    NothingToRegister,
    RegistryError,
)
from pipeline.registry.loading import load
from pipeline.registry.rules import (
    Promotion,
    PromotionRefused,
    Release,
    Rollback,
    Rule,
    check_rules,
    format_promotion,
    format_release,
)
from pipeline.registry.showing import format_show
from pipeline.registry.store import tree_md5
from pipeline.registry.versions import STAGES, Version, next_version, parse_version

__all__ = [
    "STAGES",
    "FilesMismatch",
    "FilesUnavailable",
    "NothingToRegister",
    "Promotion",
    "PromotionRefused",
    "Registry",
    "RegistryError",
    "Release",
    "Rollback",
    "Rule",
    "Version",
    "check_rules",
    "format_promotion",
    "format_release",
    "format_show",
    "load",
    "next_version",
    "parse_version",
    "tree_md5",
]
